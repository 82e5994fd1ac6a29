"""The session-token problems: one per reason a token is refused, each with a stable code."""

from quoteapi.logs import EventLog
from quoteapi.problems import ApiError, Problem

log = EventLog("quoteapi.auth")

TOKEN_MISSING = Problem(401, "token-missing", "Authentication required")
TOKEN_MALFORMED = Problem(401, "token-malformed", "Malformed session token")
TOKEN_TOO_LARGE = Problem(401, "token-too-large", "Session token too large")
TOKEN_INVALID_ALGORITHM = Problem(401, "token-invalid-algorithm", "Unsupported token algorithm")
TOKEN_TYPE_NOT_SESSION = Problem(401, "token-type-not-session", "Not a session token")
TOKEN_UNKNOWN_KEY = Problem(401, "token-unknown-key", "Token signed by an unknown key")
TOKEN_AMBIGUOUS_KEY = Problem(401, "token-ambiguous-key", "Token names an ambiguous key")
TOKEN_INVALID_SIGNATURE = Problem(401, "token-invalid-signature", "Invalid token signature")
TOKEN_MISSING_CLAIM = Problem(401, "token-missing-claim", "Session token lacks a claim")
TOKEN_EXPIRED = Problem(401, "token-expired", "Session token expired")
TOKEN_LIFETIME_TOO_LONG = Problem(401, "token-lifetime-too-long", "Session token lives too long")
TOKEN_NOT_ACTIVE_YET = Problem(401, "token-not-active-yet", "Session token not valid yet")
TOKEN_IAT_IN_THE_FUTURE = Problem(401, "token-iat-in-the-future", "Session token issued later")
TOKEN_INVALID_ISSUER = Problem(401, "token-invalid-issuer", "Session token from another issuer")
TOKEN_INVALID_AUTHORIZED_PARTY = Problem(
    401, "token-invalid-authorized-party", "Session token minted for another origin"
)
TOKEN_SESSION_PENDING = Problem(401, "token-session-pending", "Session not active yet")
# The token verifies, but its session ended in Clerk: the database says so (messages.repository).
SESSION_REVOKED = Problem(401, "session-revoked", "Session ended")
AUTH_UNAVAILABLE = Problem(503, "auth-unavailable", "Authentication temporarily unavailable")
CHALLENGE = 'Bearer realm="quoteapi"'


class TokenRejected(ApiError):
    """The 401 for a token that fails the check `problem` names, with RFC 6750's challenge;
    logged by its code only, as it is made (each one is raised)."""

    def __init__(self, problem: Problem, detail: str) -> None:
        log.info("token_rejected", code=problem.code)  # never the token's contents
        # RFC 6750 limits error_description to printable ASCII without `"` and `\`.
        description = "".join(c for c in detail if " " <= c <= "~" and c not in '"\\')
        challenge = f'{CHALLENGE}, error="invalid_token", error_description="{description}"'
        super().__init__(problem, detail, headers={"WWW-Authenticate": challenge})
