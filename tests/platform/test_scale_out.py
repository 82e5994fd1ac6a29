"""Scale-out: two `quoteapi serve` processes (replicas behind a load balancer) share one
database through a real PgBouncer in transaction mode. The API keeps no state between requests
(only caches: verified tokens, signing keys), so any replica answers for any user, and a Clerk
event one replica receives holds on the other at once: the check lives in the database, not in
the memory of the process that received the webhook."""

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


# Two replicas of `quoteapi serve`, both through the pooler, both receiving Clerk's webhooks.
POOLED = {
    "database_transaction_pooler": "true",
    "database_pool_size": 3,
    "clerk_webhook_signing_secret": TEST_SECRET,
}
replica_a = serve_fixture(database="pooled_database_url", **POOLED)
replica_b = serve_fixture(database="pooled_database_url", **POOLED)


@pytest.fixture(scope="module")
def replicas(
    replica_a: ServerProcess, replica_b: ServerProcess
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with replica_a.client() as a, replica_b.client() as b:
        yield a, b


def test_a_write_on_one_replica_is_read_on_the_other(
    replicas: tuple[httpx.Client, httpx.Client], mint_token: MintToken
) -> None:
    a, b = replicas
    auth = {"Authorization": f"Bearer {mint_token(f'user_scale_{uuid.uuid4().hex[:8]}')}"}
    created = a.put("/me/message", json={"message": "Written on A."}, headers=auth)
    assert created.status_code == 201
    read = b.get("/me/message", headers=auth)
    assert read.status_code == 200
    assert read.json()["message"] == "Written on A."
    assert read.headers["etag"] == created.headers["etag"]


def test_etags_hold_across_replicas_and_a_delete_on_one_is_seen_by_the_other(
    replicas: tuple[httpx.Client, httpx.Client], mint_token: MintToken
) -> None:
    a, b = replicas
    auth = {"Authorization": f"Bearer {mint_token(f'user_scale_{uuid.uuid4().hex[:8]}')}"}
    first = a.put("/me/message", json={"message": "One."}, headers=auth).headers["etag"]
    replaced = b.put("/me/message", json={"message": "Two."}, headers={**auth, "If-Match": first})
    assert replaced.status_code == 200
    stale = a.put("/me/message", json={"message": "Lost."}, headers={**auth, "If-Match": first})
    assert stale.status_code == 412
    assert a.get("/me/message", headers=auth).json()["message"] == "Two."
    current = replaced.headers["etag"]
    assert a.delete("/me/message", headers={**auth, "If-Match": current}).status_code == 204
    assert b.get("/me/message", headers=auth).status_code == 404


QUOTE = {"message": "Saved through B."}


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
