"""POST /webhooks/clerk (docs/authentication.md, "Webhooks"). A delivery is authenticated before
it takes a database session: an unsigned or dribbling client holds no shared slot."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.auth.verify import storable_text
from quoteapi.bodies import read_body
from quoteapi.database.failures import DATABASE_PROBLEMS
from quoteapi.logs import EventLog
from quoteapi.problems import PAYLOAD_TOO_LARGE, ApiError, problem_doc
from quoteapi.services import services_of
from quoteapi.webhooks import SESSION_ENDED_EVENTS, USER_DELETED_EVENT, repository
from quoteapi.webhooks.signatures import MAX_BODY_BYTES, parse_headers, verify

log = EventLog("quoteapi.webhooks")

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


class WebhookAck(BaseModel):
    """The answer to a verified webhook delivery (Svix shows it in the Clerk dashboard)."""

    outcome: str = Field(
        description="`deleted` (the user's data is erased and nothing more can be stored for "
        "them), `revoked` (the session's tokens are refused from now on), `duplicate` (this "
        "svix-id was already processed), or `ignored` (an event this service does not act on)",
        examples=["deleted"],
    )


# What an event does: the `data` ids its work takes after the delivery, the work, its outcome.
_ACTIONS: dict[str, tuple[tuple[str, ...], Callable[..., Awaitable[bool]], str]] = {
    USER_DELETED_EVENT: (("id",), repository.erase_user, "deleted"),
    **{
        event: (("user_id", "id"), repository.revoke_session, "revoked")
        for event in SESSION_ENDED_EVENTS
    },
}


@router.post(
    "/clerk",
    summary="Receive a Clerk webhook (Svix-signed): `user.deleted` erases the user's quote, "
    "`session.revoked`, `session.ended` and `session.removed` end the session here",
    responses={
        400: {"description": "Missing, malformed, stale or unsigned delivery (see `code`)"},
        413: problem_doc(f"Body larger than {MAX_BODY_BYTES} bytes", PAYLOAD_TOO_LARGE),
        503: problem_doc(
            "The database cannot process the delivery now (`code` says which wait ran out); "
            "Svix retries it",
            *DATABASE_PROBLEMS,
        ),
    },
    # The body is read raw (the signature covers its exact bytes), so FastAPI cannot infer it.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
            "description": 'A Clerk event, e.g. `{"type": "user.deleted", '
            '"data": {"id": "user_..."}}` or `{"type": "session.revoked", "data": {"id": '
            '"sess_...", "user_id": "user_..."}}`, with svix-id, svix-timestamp and '
            "svix-signature headers",
        },
        # No bearer token: the Svix signature authenticates a delivery.
        "security": [],
    },
)
async def clerk_webhook(request: Request) -> WebhookAck:
    services = services_of(request)
    assert services.webhook is not None  # the route is served only with a secret
    try:
        headers = parse_headers(request.headers)
        body = await read_body(request, MAX_BODY_BYTES)
        event = verify(services.webhook, body, headers)
    except ApiError as exc:
        log.warning("webhook_refused", code=exc.problem.code)
        request.state.webhook_outcome = "refused"  # quoteapi.metrics counts deliveries by it
        raise
    async with services.database.unit() as session:
        outcome = await _act(session, headers["webhook-id"], event)
    request.state.webhook_outcome = outcome
    return WebhookAck(outcome=outcome)


async def _act(session: AsyncSession, svix_id: str, event: dict[str, Any]) -> str:
    """Do what the event asks; its outcome (`WebhookAck.outcome`)."""
    event_type: str = event["type"]
    if event_type not in _ACTIONS:
        log.debug("webhook_ignored", svix_id=svix_id, type=event_type[:64])
        return "ignored"
    keys, work, outcome = _ACTIONS[event_type]
    data = event.get("data")
    ids = [
        v for key in keys if isinstance(data, dict) and isinstance(v := data.get(key), str) and v
    ]
    if len(ids) < len(keys):
        # Acknowledged: a retry would carry the same body, and nothing could be done with it.
        log.warning("webhook_without_id", svix_id=svix_id, type=event_type)
        return "ignored"
    if not all(storable_text(value) for value in ids):
        # No such user or session can be in an accepted token (PostgreSQL stores no NUL or lone
        # surrogate, and the verifier refuses them): act on nothing, but record the delivery and
        # answer 2xx, so Svix stops retrying it.
        log.info("webhook_id_unstorable", svix_id=svix_id)
        recorded = await repository.record_delivery(session, svix_id, event_type)
        return "ignored" if recorded else "duplicate"
    if not await work(session, svix_id, event_type, *ids):
        log.info("webhook_duplicate", svix_id=svix_id)
        return "duplicate"
    return outcome
