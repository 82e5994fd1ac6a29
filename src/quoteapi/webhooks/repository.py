"""Every statement of the webhook feature: record a delivery, erase a user, end a session, prune."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.database.engine import SERVER_WAITS, server_waits, transaction
from quoteapi.logs import EventLog

log = EventLog("quoteapi.webhooks")

# Svix retries a failed delivery for about a day and a half; a week also covers a manual resend.
DELIVERY_RETENTION = timedelta(days=7)
# A session that ended matters while a token issued before can still be accepted: at most 12 h
# (auth.verify.MAX_TOKEN_LIFETIME_SECONDS) plus 300 s of leeway; Clerk's tokens live 60 s.
REVOCATION_RETENTION = timedelta(days=1)

# A delivery that acts binds its transaction to the user for row-level security (`bind_user`, as
# `act_as` does for a request) after SERVER_WAITS bounds its lock waits; an erasure also takes the
# user's lock exclusively: no write of theirs overlaps it.
_BIND: Final = text(f"SELECT bind_user(:user_id) FROM {SERVER_WAITS}")
_BIND_AND_LOCK: Final = text(
    f"SELECT bind_user(:user_id), lock_user(:user_id, exclusive => true) FROM {SERVER_WAITS}"
)
_RECORD: Final = text("""
INSERT INTO webhook_deliveries (svix_id, event_type) VALUES (:svix_id, :event_type)
ON CONFLICT (svix_id) DO NOTHING
RETURNING svix_id
""")
# Erased for good (no write of theirs succeeds afterwards), their quote deleted.
_ERASE: Final = text("""
WITH erased AS (INSERT INTO erased_users (user_id) VALUES (:user_id) ON CONFLICT DO NOTHING)
DELETE FROM user_messages WHERE user_id = :user_id
""")
_REVOKE: Final = text("""
INSERT INTO revoked_sessions (session_id, user_id, expires_at)
VALUES (:session_id, :user_id, now() + CAST(:kept AS interval))
ON CONFLICT DO NOTHING
""")
# A batch of the oldest expired delivery ids, skipping rows another transaction is pruning. Then
# expired revocations, by a function with the owner's rights (migration 0005): this role can
# neither see other users' revocations nor delete any.
_PRUNE_DELIVERIES: Final = text("""
DELETE FROM webhook_deliveries WHERE svix_id IN (
    SELECT svix_id FROM webhook_deliveries
    WHERE received_at < now() - CAST(:kept AS interval)
    ORDER BY received_at
    LIMIT 100
    FOR UPDATE SKIP LOCKED
)
""")
_PRUNE_REVOCATIONS: Final = text("SELECT prune_revoked_sessions()")


async def record_delivery(session: AsyncSession, svix_id: str, event_type: str) -> bool:
    """Record a delivery; False when this svix-id was already recorded (a redelivery)."""
    connection = await session.connection()
    recorded = await connection.execute(_RECORD, {"svix_id": svix_id, "event_type": event_type})
    return recorded.first() is not None


async def erase_user(session: AsyncSession, svix_id: str, event_type: str, user_id: str) -> bool:
    """Record the delivery, the user as erased, and delete their quote, in one transaction that
    holds the user's lock; False (nothing changed) for a redelivery."""
    connection = await _bound(session, _BIND_AND_LOCK, user_id)
    if not await record_delivery(session, svix_id, event_type):
        return False
    rows = (await connection.execute(_ERASE, {"user_id": user_id})).rowcount
    await _prune(connection)
    log.info("webhook_user_deleted", svix_id=svix_id, user_id=user_id, rows=rows)
    return True


async def revoke_session(
    session: AsyncSession, svix_id: str, event_type: str, user_id: str, session_id: str
) -> bool:
    """Record the delivery and the session as ended; False (nothing changed) for a redelivery."""
    connection = await _bound(session, _BIND, user_id)
    if not await record_delivery(session, svix_id, event_type):
        return False
    params = {"user_id": user_id, "session_id": session_id, "kept": REVOCATION_RETENTION}
    await connection.execute(_REVOKE, params)
    await _prune(connection)
    log.info(
        "webhook_session_ended",
        svix_id=svix_id,
        type=event_type,
        user_id=user_id,
        session_id=session_id,
    )
    return True


async def _bound(session: AsyncSession, bind: TextClause, user_id: str) -> AsyncConnection:
    await transaction(session)
    connection = await session.connection()
    await connection.execute(bind, {"user_id": user_id, **server_waits(session)})
    return connection


async def _prune(connection: AsyncConnection) -> None:
    await connection.execute(_PRUNE_DELIVERIES, {"kept": DELIVERY_RETENTION})
    await connection.execute(_PRUNE_REVOCATIONS)
