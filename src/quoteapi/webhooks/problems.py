"""The webhook problems (POST /webhooks/clerk): one per reason a delivery is refused."""

from quoteapi.problems import Problem

WEBHOOK_MISSING_HEADER = Problem(400, "webhook-missing-header", "Webhook header missing")
WEBHOOK_MALFORMED_HEADER = Problem(400, "webhook-malformed-header", "Webhook header malformed")
WEBHOOK_STALE = Problem(400, "webhook-stale", "Webhook timestamp too old")
WEBHOOK_FUTURE = Problem(400, "webhook-future", "Webhook timestamp in the future")
WEBHOOK_INVALID_SIGNATURE = Problem(400, "webhook-invalid-signature", "Webhook signature invalid")
WEBHOOK_INVALID_BODY = Problem(400, "webhook-invalid-body", "Webhook body invalid")
