"""Clerk session-token verification: keys.py (key source and cache), verify.py (the checks),
deps.py (the `CurrentUser` dependency)."""
