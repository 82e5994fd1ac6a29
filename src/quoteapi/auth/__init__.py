"""Clerk session-token verification: sources.py (the key source and issuer the settings name),
keys.py (the keys and the JWKS cache), verify.py (the checks), deps.py (`CurrentUser`)."""
