"""Every statement of the webhook feature: record a delivery, erase a user, prune old ids."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import Text, bindparam, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.messages.models import UserMessage
from quoteapi.messages.repository import bind_user
from quoteapi.webhooks.models import WebhookDelivery

log = logging.getLogger("quoteapi.webhooks")

# Svix retries a failed delivery for about a day and a half; a week covers that and a manual
# resend from the dashboard. Older ids are pruned a batch at a time as new deliveries arrive.
DELIVERY_RETENTION = timedelta(days=7)
_PRUNE_BATCH = 100

_RECORD: Any = (
    insert(WebhookDelivery)
    .values(svix_id=bindparam("svix_id", type_=Text), event_type=bindparam("type", type_=Text))
    .on_conflict_do_nothing(index_elements=[col(WebhookDelivery.svix_id)])
    .returning(col(WebhookDelivery.svix_id))
)
_ERASE: Any = delete(UserMessage).where(col(UserMessage.user_id) == bindparam("user_id"))
# A batch of the oldest expired delivery ids; rows another transaction is pruning are skipped
# rather than waited for.
_EXPIRED = (
    select(col(WebhookDelivery.svix_id))
    .where(col(WebhookDelivery.received_at) < func.now() - DELIVERY_RETENTION)
    .order_by(col(WebhookDelivery.received_at))
    .limit(_PRUNE_BATCH)
    .with_for_update(skip_locked=True)
)
_PRUNE: Any = delete(WebhookDelivery).where(col(WebhookDelivery.svix_id).in_(_EXPIRED))


async def record_delivery(session: AsyncSession, svix_id: str, event_type: str) -> bool:
    """Record a delivery that changes nothing; False when this svix-id was already recorded
    (so a redelivery is answered `duplicate`)."""
    recorded = await session.exec(_RECORD, params={"svix_id": svix_id, "type": event_type})
    return recorded.first() is not None


async def erase_user(session: AsyncSession, svix_id: str, event_type: str, user_id: str) -> bool:
    """Record the delivery and delete the user's rows in one transaction (bound to that user,
    for row-level security); False (and nothing changed) when this svix-id was already
    recorded."""
    await bind_user(session, user_id)
    if not await record_delivery(session, svix_id, event_type):
        return False
    erased = await session.exec(_ERASE, params={"user_id": user_id})
    await session.exec(_PRUNE)
    log.info(
        "event=webhook_user_deleted svix_id=%s user_id=%s rows=%d",
        svix_id,
        user_id,
        erased.rowcount,
    )
    return True
