"""Every statement of the webhook feature: record a delivery, erase a user, record a session
that ended, prune what no longer matters."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import Text, bindparam, delete, func, literal, select
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.database.engine import SERVER_WAITS, server_waits, transaction
from quoteapi.messages.models import UserMessage
from quoteapi.webhooks.models import ErasedUser, RevokedSession, WebhookDelivery

log = logging.getLogger("quoteapi.webhooks")

# Svix retries a failed delivery for about a day and a half; a week covers that and a manual
# resend from the dashboard. Older ids are pruned a batch at a time as new deliveries arrive.
DELIVERY_RETENTION = timedelta(days=7)
_PRUNE_BATCH = 100
# A session that ended matters while a token issued before it ended can still be accepted:
# Clerk's session tokens live 60 s, accepted up to CLERK_LEEWAY_SECONDS (at most 300 s) past
# their expiry. A day covers that many times over, and the verifier refuses any token living
# longer than auth.verify.MAX_TOKEN_LIFETIME_SECONDS (12 h), so no token outlives this record.
REVOCATION_RETENTION = timedelta(days=1)
# The advisory-lock class of the per-user lock (its object is hashtext(user id)), fixed by
# migration 0004: `act_as` takes the lock shared for a write, the erasure exclusively.
USER_LOCK_CLASS = 0x71756F74

_USER = bindparam("user_id", type_=Text)
# Binds the transaction to the user for row-level security, as `act_as` does for a request,
# once the server's bounds on lock waits are set (SERVER_WAITS, read first): the erasure's wait
# for the user's lock is one of them.
_binding = func.set_config("app.user_id", _USER, True)
_BIND: Any = select(_binding).select_from(SERVER_WAITS)
_BIND_AND_LOCK: Any = select(
    _binding, func.pg_advisory_xact_lock(USER_LOCK_CLASS, func.hashtext(_USER))
).select_from(SERVER_WAITS)
_RECORD: Any = (
    insert(WebhookDelivery)
    .values(svix_id=bindparam("svix_id", type_=Text), event_type=bindparam("type", type_=Text))
    .on_conflict_do_nothing(index_elements=[col(WebhookDelivery.svix_id)])
    .returning(col(WebhookDelivery.svix_id))
)
_MARK_ERASED: Any = insert(ErasedUser).values(user_id=_USER).on_conflict_do_nothing()
_ERASE: Any = delete(UserMessage).where(col(UserMessage.user_id) == _USER)
_REVOKE: Any = (
    insert(RevokedSession)
    .values(
        session_id=bindparam("session_id", type_=Text),
        user_id=_USER,
        expires_at=func.now() + literal(REVOCATION_RETENTION),
    )
    .on_conflict_do_nothing()
)
# A batch of the oldest expired delivery ids; rows another transaction is pruning are skipped
# rather than waited for.
_EXPIRED = (
    select(col(WebhookDelivery.svix_id))
    .where(col(WebhookDelivery.received_at) < func.now() - DELIVERY_RETENTION)
    .order_by(col(WebhookDelivery.received_at))
    .limit(_PRUNE_BATCH)
    .with_for_update(skip_locked=True)
)
_PRUNE_DELIVERIES: Any = delete(WebhookDelivery).where(col(WebhookDelivery.svix_id).in_(_EXPIRED))
# Every user's expired revocations, a batch at a time: the function runs with the table owner's
# rights (migration 0005), so that this role itself can neither see other users' revocations
# nor delete any.
_PRUNE_REVOCATIONS: Any = select(func.prune_revoked_sessions())


async def record_delivery(session: AsyncSession, svix_id: str, event_type: str) -> bool:
    """Record a delivery that changes nothing; False when this svix-id was already recorded
    (so a redelivery is answered `duplicate`)."""
    recorded = await session.exec(_RECORD, params={"svix_id": svix_id, "type": event_type})
    return recorded.first() is not None


async def erase_user(session: AsyncSession, svix_id: str, event_type: str, user_id: str) -> bool:
    """Record the delivery, the user as erased, and delete their quote, in one transaction that
    holds the user's lock (no write of theirs overlaps it); False (and nothing changed) when
    this svix-id was already recorded."""
    await transaction(session)
    await session.exec(_BIND_AND_LOCK, params={"user_id": user_id, **server_waits(session)})
    if not await record_delivery(session, svix_id, event_type):
        return False
    await session.exec(_MARK_ERASED, params={"user_id": user_id})
    erased = await session.exec(_ERASE, params={"user_id": user_id})
    await _prune(session)
    log.info(
        "event=webhook_user_deleted svix_id=%s user_id=%s rows=%d",
        svix_id,
        user_id,
        erased.rowcount,
    )
    return True


async def revoke_session(
    session: AsyncSession, svix_id: str, event_type: str, user_id: str, session_id: str
) -> bool:
    """Record the delivery and the session as ended, in one transaction; False (and nothing
    changed) when this svix-id was already recorded."""
    await transaction(session)
    await session.exec(_BIND, params={"user_id": user_id, **server_waits(session)})
    if not await record_delivery(session, svix_id, event_type):
        return False
    await session.exec(_REVOKE, params={"user_id": user_id, "session_id": session_id})
    await _prune(session)
    log.info(
        "event=webhook_session_ended svix_id=%s type=%s user_id=%s session_id=%s",
        svix_id,
        event_type,
        user_id,
        session_id,
    )
    return True


async def _prune(session: AsyncSession) -> None:
    await session.exec(_PRUNE_DELIVERIES)
    await session.exec(_PRUNE_REVOCATIONS)
