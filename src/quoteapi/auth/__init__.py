"""Clerk session-token verification: sources.py (the key source the settings name), keys.py (the
keys and the JWKS cache), verify.py (jwt.decode and Clerk's own checks), cache.py (verified
tokens), problems.py (why a token is refused), deps.py (`CurrentUser`)."""
