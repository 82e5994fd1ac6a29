"""Two `quoteapi serve` replicas on one database through a real PgBouncer: a Clerk event one of
them receives holds on the other at once, because the check lives in the database, not in the
memory of the process that received the webhook."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.problems import assert_problem
from tests.support.processes import ServerProcess, serve_fixture
from tests.support.tokens import MintToken, bearer
from tests.support.webhooks import TEST_SECRET, URL, session_ended, signed, user_deleted

pytestmark = pytest.mark.slow

REPLICA = {
    "database_transaction_pooler": "true",
    "database_pool_size": 3,
    "clerk_webhook_signing_secret": TEST_SECRET,
}
replica_a = serve_fixture(database="pooled_database_url", **REPLICA)
replica_b = serve_fixture(database="pooled_database_url", **REPLICA)
QUOTE = {"message": "Saved through B."}


@pytest.fixture(scope="module")
def replicas(
    replica_a: ServerProcess, replica_b: ServerProcess
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with replica_a.client() as a, replica_b.client() as b:
        yield a, b


def test_a_session_ended_through_one_replica_is_refused_by_the_other_at_once(
    replicas: tuple[httpx.Client, httpx.Client], mint_token: MintToken
) -> None:
    a, b = replicas
    user = f"user_replicas_{uuid.uuid4().hex[:8]}"
    ended = bearer(mint_token(user, sid=f"sess_out_{user}"))
    other = bearer(mint_token(user, sid=f"sess_in_{user}"))
    assert b.put("/me/message", json=QUOTE, headers=ended).status_code == 201  # B caches it

    body, headers = signed(session_ended(user, f"sess_out_{user}", "session.ended"))
    assert a.post(URL, content=body, headers=headers).json() == {"outcome": "revoked"}

    assert_problem(b.get("/me/message", headers=ended), 401, "session-revoked")
    assert_problem(b.put("/me/message", json=QUOTE, headers=ended), 401, "session-revoked")
    assert b.get("/me/message", headers=other).json()["message"] == QUOTE["message"]


def test_a_user_deleted_through_one_replica_cannot_write_through_the_other(
    replicas: tuple[httpx.Client, httpx.Client], mint_token: MintToken
) -> None:
    a, b = replicas
    user = f"user_replicas_{uuid.uuid4().hex[:8]}"
    auth = bearer(mint_token(user))
    assert b.put("/me/message", json=QUOTE, headers=auth).status_code == 201

    body, headers = signed(user_deleted(user))
    assert a.post(URL, content=body, headers=headers).json() == {"outcome": "deleted"}

    assert_problem(b.put("/me/message", json=QUOTE, headers=auth), 403, "user-deleted")
    assert_problem(b.get("/me/message", headers=auth), 404, "message-not-found")
