"""POST /webhooks/clerk: Clerk's signed events. `user.deleted` erases that user's data for good;
`session.revoked`, `session.ended` and `session.removed` stop that session's tokens at once.

A delivery is authenticated (headers, then the signature over the whole, size-capped body)
before it takes a database session: an unsigned or dribbling client holds no shared slot."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.auth.verify import storable_text
from quoteapi.bodies import read_body
from quoteapi.database.problems import DATABASE_PROBLEMS
from quoteapi.logs import EventLog
from quoteapi.problems import PAYLOAD_TOO_LARGE, ApiError, problem_doc
from quoteapi.services import services_of
from quoteapi.webhooks import SESSION_ENDED_EVENTS, USER_DELETED_EVENT, repository
from quoteapi.webhooks.signatures import MAX_BODY_BYTES, parse_headers

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


@dataclass(frozen=True)
class SignedEvent:
    """A delivery whose signature verified: its Svix message id and the event."""

    msg_id: str
    event: dict[str, Any]


async def signed_event(request: Request) -> SignedEvent:
    """The delivery, once its headers and its signature over the whole body check out."""
    verifier = services_of(request).webhook_verifier
    assert verifier is not None  # the route is served only with a signing secret
    try:
        signed = parse_headers(request.headers)
        body = await read_body(request, MAX_BODY_BYTES)
        event = verifier.verify(body, signed)
    except ApiError as exc:
        log.warning("webhook_refused", code=exc.problem.code)
        request.state.webhook_outcome = "refused"
        raise
    return SignedEvent(signed.msg_id, event)


SignedEventDep = Annotated[SignedEvent, Depends(signed_event)]


class Action(NamedTuple):
    """What an event does: the ids it needs from `data`, the work given them, its outcome."""

    ids: tuple[str, ...]
    work: Callable[..., Awaitable[bool]]
    outcome: str


_ACTIONS = {
    USER_DELETED_EVENT: Action(("id",), repository.erase_user, "deleted"),
    **{
        event: Action(("user_id", "id"), repository.revoke_session, "revoked")
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
            headers={"Retry-After": {"schema": {"type": "integer"}}},
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
async def clerk_webhook(request: Request, delivery: SignedEventDep) -> WebhookAck:
    async with services_of(request).database.unit() as session:
        outcome = await _act(delivery, session)
    request.state.webhook_outcome = outcome  # quoteapi.metrics counts deliveries by it
    return WebhookAck(outcome=outcome)


async def _act(delivery: SignedEvent, session: AsyncSession) -> str:
    """Do what the event asks; its outcome (`WebhookAck.outcome`)."""
    event_type: str = delivery.event["type"]
    action = _ACTIONS.get(event_type)
    if action is None:
        ignored = event_type[:64]
        log.debug("webhook_ignored", svix_id=delivery.msg_id, type=ignored)
        return "ignored"
    ids = _ids(delivery, action.ids)
    if ids is None:
        # Acknowledged: a retry would carry the same body, and nothing could be done with it.
        return "ignored"
    if not all(storable_text(value) for value in ids):
        # No such user or session can be in an accepted token (PostgreSQL stores no NUL or lone
        # surrogate, and the verifier refuses them): act on nothing, but record the delivery and
        # answer 2xx, so Svix stops retrying it.
        log.info("webhook_id_unstorable", svix_id=delivery.msg_id)
        recorded = await repository.record_delivery(session, delivery.msg_id, event_type)
        return "ignored" if recorded else "duplicate"
    if not await action.work(session, delivery.msg_id, event_type, *ids):
        log.info("webhook_duplicate", svix_id=delivery.msg_id)
        return "duplicate"
    return action.outcome


def _ids(delivery: SignedEvent, keys: tuple[str, ...]) -> list[str] | None:
    """The event's `data` ids named by `keys`, each a non-empty string; None (logged) if not."""
    data = delivery.event.get("data")
    data = data if isinstance(data, dict) else {}
    ids = [value for key in keys if isinstance(value := data.get(key), str) and value]
    if len(ids) == len(keys):
        return ids
    log.warning("webhook_without_id", svix_id=delivery.msg_id, type=delivery.event["type"])
    return None
