"""Clerk session tokens: sources, keys (the JWKS cache), verify, cache, problems, deps."""
