// The quote API, as a browser calls it: a bearer token on every request, the ETag kept to
// make replace and delete safe (If-Match), and the API's problem+json `detail` as the error.

export class ApiError extends Error {
  constructor(status, detail, code) {
    super(detail);
    this.status = status;
    this.code = code;
  }
}

async function problem(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: fall back to the status line
  }
  const detail = body?.detail ?? `${response.status} ${response.statusText}`;
  return new ApiError(response.status, detail, body?.code ?? "http-error");
}

async function send(url, init, baseUrl) {
  try {
    return await fetch(url, { ...init, cache: "no-store" });
  } catch {
    // A CORS refusal and an unreachable server look the same to a page: a TypeError.
    throw new ApiError(
      0,
      `Cannot reach the API at ${baseUrl}: is it running, and does its CORS_ALLOW_ORIGINS ` +
        `list this page's origin (${location.origin})?`,
      "network-error",
    );
  }
}

// `getToken()` returns a fresh session token: Clerk.session.getToken(), or the dev issuer's.
export function createApi(baseUrl, getToken) {
  const url = `${baseUrl}/me/message`;

  async function call(method, { message, headers = {} } = {}) {
    const init = { method, headers: { Authorization: `Bearer ${await getToken()}`, ...headers } };
    if (message !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify({ message });
    }
    return send(url, init, baseUrl);
  }

  async function quoteFrom(response) {
    if (!response.ok) throw await problem(response);
    return { ...(await response.json()), etag: response.headers.get("ETag") };
  }

  return {
    /** The stored quote ({message, created_at, updated_at, etag}), or null when none is. */
    async read() {
      const response = await call("GET");
      return response.status === 404 ? null : quoteFrom(response);
    },
    /** Save a first quote; never overwrites one saved meanwhile (412 then). */
    async create(message) {
      return quoteFrom(await call("PUT", { message, headers: { "If-None-Match": "*" } }));
    },
    /** Replace the quote we showed, only if nobody changed it since (412 otherwise). */
    async replace(message, etag) {
      return quoteFrom(await call("PUT", { message, headers: { "If-Match": etag } }));
    },
    /** Delete the quote we showed, only if nobody changed it since. */
    async remove(etag) {
      const response = await call("DELETE", { headers: { "If-Match": etag } });
      if (!response.ok) throw await problem(response);
    },
  };
}

// Dev mode only: POST /dev/token on the API (mounted only while its dev issuer is on).
export async function fetchDevToken(baseUrl, userId) {
  const response = await send(
    `${baseUrl}/dev/token`,
    {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user_id: userId }),
    },
    baseUrl,
  );
  if (!response.ok) throw await problem(response);
  return response.json();
}
