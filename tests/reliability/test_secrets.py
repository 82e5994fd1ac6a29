"""No secret in any log line or response: real `quoteapi serve` processes, their stderr (JSON
logs) captured, driven through every error path with secrets the test knows: session tokens
(good and bad), the DATABASE_URL password, the webhook signing secret."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import httpx
import pytest
from pydantic import SecretStr

from quoteapi.database.url import parse_database_url
from quoteapi.dev.issuer import sample_event, send_sample_event
from tests.support.processes import ServerProcess, free_port
from tests.support.tokens import TEST_KEY, SigningKey, mint

pytestmark = pytest.mark.slow

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"quoteapi-test-webhook-secret-42!").decode()
DOWN_PASSWORD = "db-password-that-must-never-be-logged-7f3a"


def _bad_tokens(user: str) -> dict[str, str]:
    """Tokens that fail each kind of check, by what is wrong with them."""
    other_key = SigningKey.generate("ins_someone_else")
    now = time.time()
    return {
        "expired": mint(TEST_KEY, user, now=now - 3600),
        "future": mint(TEST_KEY, user, now=now + 3600),
        "wrong-key": mint(other_key, user),
        "unknown-kid": mint(TEST_KEY, user, headers={"kid": "ins_unknown"}),
        "wrong-issuer": mint(TEST_KEY, user, iss="https://evil.example"),
        "no-sid": mint(TEST_KEY, user, sid=None),
        "not-a-session": mint(TEST_KEY, user, headers={"cat": "cl_jwt_template"}),
        "tampered": mint(TEST_KEY, user)[:-8] + "AAAAAAAA",
        "garbage": "garbage-token-secret-5e1c9d",
        "huge": "A" * 9000,
    }


def _drive_every_path(http: httpx.Client, token: str, bad: dict[str, str]) -> list[str]:
    """Send each kind of request; every response's headers and body, as text."""
    auth = {"Authorization": f"Bearer {token}"}
    responses = [
        http.put("/me/message", json={"message": "a private quote"}, headers=auth),
        http.get("/me/message", headers=auth),
        http.get("/me/message", headers={**auth, "If-None-Match": "*"}),
        http.put("/me/message", json={"message": "x"}, headers={**auth, "If-Match": '"0"'}),
        http.put("/me/message", json={"message": ""}, headers=auth),  # 422
        http.put("/me/message", json={"message": "x", "user_id": "u"}, headers=auth),  # 422
        http.put(
            "/me/message",
            content=b"{not json",
            headers={**auth, "Content-Type": "application/json"},
        ),
        http.put(
            "/me/message",
            content=b'{"message": "x"}',
            headers={**auth, "Content-Type": "text/plain"},
        ),
        http.put(
            "/me/message",
            content=b"x" * 20000,
            headers={**auth, "Content-Type": "application/json"},
        ),
        http.post("/me/message", headers=auth),  # 405
        http.get("/nowhere", headers=auth),  # 404
        http.get("/me/message"),  # no token
        http.get("/readyz"),
        *(http.get("/me/message", headers={"Authorization": f"Bearer {t}"}) for t in bad.values()),
        *(
            http.get("/me/message", headers={"Cookie": f"__session={t}"})
            for t in (token, *bad.values())
        ),
        http.delete("/me/message", headers=auth),
        http.delete("/me/message", headers=auth),  # 404
    ]
    return [f"{r.status_code} {dict(r.headers)} {r.text}" for r in responses]


def _drive_webhooks(http: httpx.Client, url: str) -> list[str]:
    """Every webhook refusal, and a valid delivery, signed with the known secret."""
    body = b'{"type": "user.deleted", "data": {"id": "user_secret", "deleted": true}}'
    now = str(int(time.time()))
    attempts = [
        {},
        {"svix-id": "msg_1", "svix-timestamp": now},
        {"svix-id": "msg_1", "svix-timestamp": now, "svix-signature": "v1,AAAA"},
        {"svix-id": "msg_1", "svix-timestamp": "12", "svix-signature": "v1,AAAA"},
        {"svix-id": "msg_1", "svix-timestamp": "not-a-time", "svix-signature": "v1,AAAA"},
    ]
    texts = []
    for headers in attempts:
        response = http.post("/webhooks/clerk", content=body, headers=headers)
        assert 400 <= response.status_code < 500, response.text
        texts.append(f"{response.status_code} {dict(response.headers)} {response.text}")
    delivered = send_sample_event(
        SecretStr(WEBHOOK_SECRET), url, sample_event("user.deleted", "user_secret")
    )
    assert delivered.is_success, delivered.text
    texts.append(f"{delivered.status_code} {dict(delivered.headers)} {delivered.text}")
    return texts


def _secrets_found(secrets: dict[str, str], texts: list[str]) -> list[str]:
    return [name for name, secret in secrets.items() for text in texts if secret in text]


def test_no_secret_reaches_a_log_line_or_a_response(
    start_server: Callable[..., ServerProcess], database_url: str
) -> None:
    password = parse_database_url(database_url).connect_kwargs["password"]
    server = start_server(database_url, clerk_webhook_signing_secret=WEBHOOK_SECRET)
    token = mint(TEST_KEY, "user_secret")
    bad = _bad_tokens("user_secret")
    with httpx.Client(base_url=server.url, timeout=10) as http:
        texts = _drive_every_path(http, token, bad)
        texts += _drive_webhooks(http, f"{server.url}/webhooks/clerk")
    server.stop()
    statuses = {text.split()[0] for text in texts}
    assert {
        "200",
        "201",
        "204",
        "304",
        "400",
        "401",
        "404",
        "405",
        "412",
        "413",
        "415",
        "422",
    } <= statuses
    secrets = {
        "token": token,
        **{f"token {name}": t for name, t in bad.items()},
        "signature of the token": token.rsplit(".", 1)[1],
        "database password": password,
        "webhook secret": WEBHOOK_SECRET.removeprefix("whsec_"),
        "quote": "a private quote",
    }
    lines = server.log.splitlines()
    assert len(server.log_records()) >= len(texts)  # one access-log line per request at least
    assert _secrets_found(secrets, lines) == []
    assert _secrets_found({k: v for k, v in secrets.items() if k != "quote"}, texts) == []


def test_no_secret_in_logs_or_503s_while_the_database_is_down(
    start_server: Callable[..., ServerProcess],
) -> None:
    """The database URL names a server that is not there (connections refused), with a
    password the test knows: every database path answers 503, and nothing says the password."""
    url = f"postgresql://quoteapi:{DOWN_PASSWORD}@127.0.0.1:{free_port()}/quoteapi"
    server = start_server(url, database_connect_timeout=1)
    token = mint(TEST_KEY, "user_secret")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        auth = {"Authorization": f"Bearer {token}"}
        responses = [
            http.put("/me/message", json={"message": "a private quote"}, headers=auth),
            http.get("/me/message", headers=auth),
            http.delete("/me/message", headers=auth),
            http.get("/readyz"),
        ]
    server.stop()
    assert [r.status_code for r in responses] == [503] * 4
    assert all(r.headers["retry-after"].isdigit() for r in responses)
    texts = [f"{dict(r.headers)} {r.text}" for r in responses]
    lines = server.log.splitlines()
    failed = [r for r in server.log_records() if r.get("event") == "database_request_failed"]
    assert "database-unavailable" in {r["code"] for r in failed}
    secrets = {"database password": DOWN_PASSWORD, "token": token}
    assert _secrets_found(secrets, lines + texts) == []
    assert _secrets_found({"quote": "a private quote"}, lines) == []
