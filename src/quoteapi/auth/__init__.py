"""Clerk session tokens: sources, keys (the JWKS cache), verify (and its cache), problems, deps."""
