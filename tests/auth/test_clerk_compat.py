"""Side by side with Clerk's own verifier: `@clerk/backend`'s `verifyToken`, run in node on the
same token corpus at the same instant, with the same key, authorized parties and clock skew.

Every token Clerk accepts that is a real session token for this instance (exact `iss`, a `sid`,
a session or ignored or no `cat`, not pending, living at most 12 hours) must pass the service
too. Where they still disagree, the service is stricter by design; `STRICTER_BY_DESIGN` lists
each case and why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.auth.test_tokens import LEEWAY, OTHER_ORIGIN
from tests.auth.token_corpus import (
    GOOD_TOKENS,
    CorpusToken,
    is_session_token_for_this_instance,
    token_corpus,
)
from tests.support.app import NO_DATABASE_URL, make_settings, running_app
from tests.support.tokens import TEST_AZP, SigningKey

HARNESS = Path(__file__).parent / "clerk_compat"
AUTHORIZED_PARTIES = [TEST_AZP, OTHER_ORIGIN]

# Tokens Clerk's verifyToken accepts and the service refuses, on purpose.
STRICTER_BY_DESIGN = {
    "iss-wrong": "iss must be exactly this instance's Frontend API URL (Clerk does not check it)",
    "iss-trailing-slash": "iss is compared exactly, as RFC 7519 says",
    "iss-missing": "a token without iss names no instance",
    "sid-missing": "a session token without sid is not a session token",
    "sid-not-a-string": "sid must be a non-empty string",
    "sub-empty": "an empty sub names no user",
    "iat-missing": "iat is required (Clerk always mints it)",
    "jwt-template-cat": "a JWT template is not a session (verifyToken refuses only the m2m cat)",
    "machine-token-cat": "any cat other than session or ignored is not a session",
    "sts-pending": "pending sessions are refused (Clerk's authenticateRequest does so too)",
    "too-large-9-kib": "tokens over 8 KiB are refused before decoding (Clerk mints ~1 KiB)",
    "lifetime-over-12-hours": "no token may outlive its session's revocation record (a day)",
}


def _node() -> str:
    node = shutil.which("node")
    installed = (HARNESS / "node_modules" / "@clerk" / "backend").is_dir()
    if node is None or not installed:
        reason = f"node and {HARNESS}/node_modules are needed (cd {HARNESS} && npm ci)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; .ci/run installs them")
        pytest.skip(reason)
    return node


def clerk_verdicts(corpus: list[CorpusToken], key: SigningKey, now: float) -> list[dict[str, Any]]:
    """Clerk's verifyToken on every token of `corpus`, its clock reading `now`."""
    request = {
        "jwtKey": key.public_pem,
        "authorizedParties": AUTHORIZED_PARTIES,
        "clockSkewInMs": LEEWAY * 1000,
        "nowMs": now * 1000,
        "tokens": [entry.token for entry in corpus],
    }
    result = subprocess.run(
        [_node(), "verify.mjs"],
        cwd=HARNESS,
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    verdicts: list[dict[str, Any]] = json.loads(result.stdout)
    assert len(verdicts) == len(corpus)
    return verdicts


async def test_every_session_token_clerk_accepts_passes_the_service(
    signing_key: SigningKey,
) -> None:
    settings = make_settings(
        NO_DATABASE_URL,
        clerk_authorized_parties=",".join(AUTHORIZED_PARTIES),
        clerk_leeway_seconds=LEEWAY,
    )
    service: dict[str, int] = {}
    async with running_app(settings, with_whoami=True) as api:
        # The service reads the real clock: it sees the corpus first, the moment it is minted.
        now = time.time()
        corpus = token_corpus(signing_key, now)
        for entry in corpus:
            authorization = b"Bearer " + entry.token.encode()  # some tokens are not ASCII
            response = await api.http.get("/test/whoami", headers={"Authorization": authorization})
            service[entry.name] = response.status_code
    clerk = clerk_verdicts(corpus, signing_key, now)

    accepted_by_clerk = [e for e, v in zip(corpus, clerk, strict=True) if v["accepted"]]
    # The harness works: Clerk accepts every good shape (else the comparison proves nothing).
    assert {e.name for e in accepted_by_clerk} >= {name for name, _ in GOOD_TOKENS}
    sessions = [e for e in accepted_by_clerk if is_session_token_for_this_instance(e.token)]
    refused = {e.name: service[e.name] for e in sessions if service[e.name] != 200}
    assert refused == {}, f"Clerk accepts these session tokens, the service does not: {refused}"
    disagreements = {e.name for e in accepted_by_clerk if service[e.name] != 200}
    assert disagreements == set(STRICTER_BY_DESIGN), sorted(disagreements ^ set(STRICTER_BY_DESIGN))
