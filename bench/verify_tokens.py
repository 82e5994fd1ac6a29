"""Microseconds per session-token verification on this machine: cold (every check, the RSA
signature included) and cached (a token seen before: one SHA-256 and a dict lookup).

Run: .venv/bin/python bench/verify_tokens.py [--tokens 2000] [--rounds 5]

It drives `TokenVerifier.verify` directly with a PEM key (no network), on Clerk-sized tokens
(RS256, 2048-bit key, the claims of a v2 session token). Each figure is the best round's mean.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import time

from cryptography.hazmat.primitives.asymmetric import rsa

from quoteapi.auth.verify import TokenCache, TokenVerifier
from quoteapi.dev.issuer import DEV_ISSUER, mint_session_token


async def measure(tokens: int, rounds: int) -> tuple[float, float, int]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    batch = [mint_session_token(key, f"user_{i:08d}", ttl=3600) for i in range(tokens)]
    verifier = TokenVerifier(
        key.public_key(),
        issuer=DEV_ISSUER,
        authorized_parties=("http://localhost:5173",),
        cache=TokenCache(max_size=tokens),
    )
    cold = cached = float("inf")
    for _ in range(rounds):
        verifier.cache.clear()
        start = time.perf_counter_ns()
        for token in batch:
            await verifier.verify(token)
        cold = min(cold, (time.perf_counter_ns() - start) / tokens / 1000)
        start = time.perf_counter_ns()
        for token in batch:
            await verifier.verify(token)
        cached = min(cached, (time.perf_counter_ns() - start) / tokens / 1000)
    return cold, cached, len(batch[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2000, help="distinct tokens (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, best kept (default 5)")
    args = parser.parse_args()
    cold, cached, size = asyncio.run(measure(args.tokens, args.rounds))
    print(f"machine: {platform.platform()}, python {platform.python_version()}")
    print(f"token: RS256, 2048-bit key, {size} bytes; {args.tokens} tokens x {args.rounds} rounds")
    print(f"cold   (signature checked): {cold:8.2f} us/verification")
    print(f"cached (cache hit):         {cached:8.2f} us/verification")
    print(f"speed-up: {cold / cached:.0f}x")


if __name__ == "__main__":
    main()
