"""POST /webhooks/clerk: Clerk's signed events; `user.deleted` erases that user's data."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.db import SessionDep, begin_for_user
from quoteapi.errors import WEBHOOK_TOO_LARGE, ApiError
from quoteapi.models import UserMessage, WebhookAck, WebhookDelivery
from quoteapi.webhooks import MAX_BODY_BYTES, Verifier, parse_headers

log = logging.getLogger("quoteapi.webhooks")

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

# Svix retries a failed delivery for about a day and a half; a week covers that and a manual
# resend from the dashboard. Older ids are pruned a batch at a time as new deliveries arrive.
DELIVERY_RETENTION = timedelta(days=7)
_PRUNE_BATCH = 100


async def get_verifier(request: Request) -> Verifier:
    """The verifier create_app built from CLERK_WEBHOOK_SIGNING_SECRET."""
    verifier: Verifier = request.app.state.webhook_verifier
    return verifier


VerifierDep = Annotated[Verifier, Depends(get_verifier)]

_REFUSED: dict[int | str, dict[str, Any]] = {
    400: {"description": "Missing, malformed, stale or unsigned delivery (see `code`)"},
    413: {"description": f"Body larger than {MAX_BODY_BYTES} bytes"},
}


@router.post(
    "/clerk",
    summary="Receive a Clerk webhook (Svix-signed); `user.deleted` erases the user's quote",
    responses=_REFUSED,
    # The body is read raw (the signature covers its exact bytes), so FastAPI cannot infer it.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
            "description": 'A Clerk event, e.g. `{"type": "user.deleted", '
            '"data": {"id": "user_..."}}`, with svix-id, svix-timestamp and '
            "svix-signature headers",
        }
    },
)
async def clerk_webhook(request: Request, verifier: VerifierDep, session: SessionDep) -> WebhookAck:
    try:
        signed = parse_headers(request.headers)
        body = await _read_body(request, MAX_BODY_BYTES)
        event = verifier.verify(body, signed)
    except ApiError as exc:
        log.warning("event=webhook_refused code=%s", exc.problem.code)
        raise
    event_type: str = event["type"]
    if event_type != "user.deleted":
        log.debug("event=webhook_ignored svix_id=%s type=%r", signed.msg_id, event_type[:64])
        return WebhookAck(outcome="ignored")
    data = event.get("data")
    user_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(user_id, str) or not user_id:
        # Acknowledged: a retry would carry the same body, and nothing could be done with it.
        log.warning("event=webhook_user_deleted_without_id svix_id=%s", signed.msg_id)
        return WebhookAck(outcome="ignored")
    rls = request.app.state.settings.database_row_level_security
    if not await _erase_user(session, signed.msg_id, event_type, user_id, rls=rls):
        log.info("event=webhook_duplicate svix_id=%s", signed.msg_id)
        return WebhookAck(outcome="duplicate")
    return WebhookAck(outcome="deleted")


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body (the signature covers its exact bytes), refused past `limit` bytes without
    reading the rest."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def _too_large(limit: int) -> ApiError:
    return ApiError(WEBHOOK_TOO_LARGE, f"Webhook bodies are limited to {limit} bytes.")


async def _erase_user(
    session: AsyncSession, svix_id: str, event_type: str, user_id: str, *, rls: bool
) -> bool:
    """Record the delivery and delete the user's rows in one transaction (bound to that user,
    for row-level security); False (and nothing changed) when this svix-id was already
    recorded."""
    record = (
        insert(WebhookDelivery)
        .values(svix_id=svix_id, event_type=event_type)
        .on_conflict_do_nothing(index_elements=[col(WebhookDelivery.svix_id)])
        .returning(col(WebhookDelivery.svix_id))
    )
    await begin_for_user(session, user_id, rls=rls)
    if (await session.exec(record)).first() is None:
        await session.rollback()
        return False
    erased = await session.exec(delete(UserMessage).where(col(UserMessage.user_id) == user_id))
    await session.exec(_prune_statement())
    await session.commit()
    log.info(
        "event=webhook_user_deleted svix_id=%s user_id=%s rows=%d",
        svix_id,
        user_id,
        erased.rowcount,
    )
    return True


def _prune_statement() -> Any:
    """Delete a batch of the oldest expired delivery ids; rows another transaction is pruning
    are skipped rather than waited for."""
    expired = (
        select(col(WebhookDelivery.svix_id))
        .where(col(WebhookDelivery.received_at) < func.now() - DELIVERY_RETENTION)
        .order_by(col(WebhookDelivery.received_at))
        .limit(_PRUNE_BATCH)
        .with_for_update(skip_locked=True)
    )
    return delete(WebhookDelivery).where(col(WebhookDelivery.svix_id).in_(expired))
