"""POST /webhooks/clerk: Clerk's signed events; `user.deleted` erases that user's data.

A delivery is authenticated (headers, then the signature over the whole, size-capped body)
before it takes a database session: an unsigned or dribbling client holds no shared slot."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, Field

from quoteapi.auth.verify import storable_text
from quoteapi.bodies import read_body
from quoteapi.problems import PAYLOAD_TOO_LARGE, ApiError, problem_doc
from quoteapi.services import services_of
from quoteapi.webhooks import repository
from quoteapi.webhooks.signatures import MAX_BODY_BYTES, WebhookVerifier, parse_headers

log = logging.getLogger("quoteapi.webhooks")

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


class WebhookAck(BaseModel):
    """The answer to a verified webhook delivery (Svix shows it in the Clerk dashboard)."""

    outcome: str = Field(
        description="`deleted` (the user's data is erased), `duplicate` (this svix-id was "
        "already processed), or `ignored` (an event this service does not act on)",
        examples=["deleted"],
    )


@dataclass(frozen=True)
class SignedEvent:
    """A delivery whose signature verified: its Svix message id and the event."""

    msg_id: str
    event: dict[str, Any]


def install(app: FastAPI, verifier: WebhookVerifier) -> None:
    """Serve POST /webhooks/clerk on `app`, checking deliveries with `verifier`."""
    app.state.webhook_verifier = verifier
    app.include_router(router)


async def signed_event(request: Request) -> SignedEvent:
    """The delivery, once its headers and its signature over the whole body check out."""
    verifier: WebhookVerifier = request.app.state.webhook_verifier  # set by `install`
    try:
        signed = parse_headers(request.headers)
        body = await read_body(request, MAX_BODY_BYTES)
        event = verifier.verify(body, signed)
    except ApiError as exc:
        log.warning("event=webhook_refused code=%s", exc.problem.code)
        raise
    return SignedEvent(signed.msg_id, event)


SignedEventDep = Annotated[SignedEvent, Depends(signed_event)]


@router.post(
    "/clerk",
    summary="Receive a Clerk webhook (Svix-signed); `user.deleted` erases the user's quote",
    responses={
        400: {"description": "Missing, malformed, stale or unsigned delivery (see `code`)"},
        413: problem_doc(f"Body larger than {MAX_BODY_BYTES} bytes", PAYLOAD_TOO_LARGE),
    },
    # The body is read raw (the signature covers its exact bytes), so FastAPI cannot infer it.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
            "description": 'A Clerk event, e.g. `{"type": "user.deleted", '
            '"data": {"id": "user_..."}}`, with svix-id, svix-timestamp and '
            "svix-signature headers",
        },
        # No bearer token: the Svix signature authenticates a delivery.
        "security": [],
    },
)
async def clerk_webhook(request: Request, delivery: SignedEventDep) -> WebhookAck:
    database = services_of(request).database
    event_type: str = delivery.event["type"]
    if event_type != "user.deleted":
        log.debug("event=webhook_ignored svix_id=%s type=%r", delivery.msg_id, event_type[:64])
        return WebhookAck(outcome="ignored")
    data = delivery.event.get("data")
    user_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(user_id, str) or not user_id:
        # Acknowledged: a retry would carry the same body, and nothing could be done with it.
        log.warning("event=webhook_user_deleted_without_id svix_id=%s", delivery.msg_id)
        return WebhookAck(outcome="ignored")
    if not storable_text(user_id):
        # No such user can exist (PostgreSQL stores no NUL or lone surrogate): erase nothing,
        # but record the delivery and answer 2xx, so Svix stops retrying it.
        log.info("event=webhook_user_id_unstorable svix_id=%s", delivery.msg_id)
        recorded = await database.run(repository.record_delivery, delivery.msg_id, event_type)
        return WebhookAck(outcome="ignored" if recorded else "duplicate")
    if not await database.run(repository.erase_user, delivery.msg_id, event_type, user_id):
        log.info("event=webhook_duplicate svix_id=%s", delivery.msg_id)
        return WebhookAck(outcome="duplicate")
    return WebhookAck(outcome="deleted")
