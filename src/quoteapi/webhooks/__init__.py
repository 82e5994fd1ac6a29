"""Clerk's webhooks (POST /webhooks/clerk); here the events the service acts on, named once."""

USER_DELETED_EVENT = "user.deleted"
# A session that can no longer be used, whatever its tokens say.
SESSION_ENDED_EVENTS = ("session.revoked", "session.ended", "session.removed")
EVENT_TYPES = (USER_DELETED_EVENT, *SESSION_ENDED_EVENTS)
