"""Clerk's webhooks (POST /webhooks/clerk): `signatures` (Svix), `router`, `repository`, `models`.
Here: the events the service acts on, named once for the router and `quoteapi webhook-send`."""

USER_DELETED_EVENT = "user.deleted"
# A session that can no longer be used, whatever its tokens say.
SESSION_ENDED_EVENTS = ("session.revoked", "session.ended", "session.removed")
EVENT_TYPES = (USER_DELETED_EVENT, *SESSION_ENDED_EVENTS)
