// The HTTP API of one likestream server (`base`: its URL, e.g. "https://likes.example/"):
// dev tokens, the write API, membership and count reads. No cookies are sent: the
// Bearer token is the only credential, so a page of another origin needs nothing but
// LIKESTREAM_CORS_ORIGINS on the server.

export class ApiError extends Error {
  // status: the HTTP status (0: no answer); retryAfter: seconds the server asked to wait.
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

async function failure(response) {
  let code = "http_error";
  let message = `HTTP ${response.status}`;
  try {
    const body = await response.json();
    code = body.error?.code ?? code;
    message = body.error?.message ?? message;
  } catch {
    // not JSON: keep the status line
  }
  const seconds = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
  return new ApiError(response.status, code, message, Number.isFinite(seconds) ? seconds : null);
}

async function call(base, path, init = {}) {
  try {
    return await fetch(new URL(path, base), { credentials: "omit", cache: "no-store", ...init });
  } catch (error) {
    throw new ApiError(0, "network", `the server could not be reached (${error.message})`);
  }
}

function itemPath(itemId) {
  return `items/${encodeURIComponent(itemId)}`;
}

// POST /dev/token: a short-lived write token for any user name (development only).
export async function devToken(base, userId) {
  const response = await call(base, "dev/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user_id: userId }),
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

// POST (like) or DELETE (unlike) /items/{id}/like with the Bearer token; 202 when Kafka has it.
export async function setLiked(base, token, itemId, liked) {
  const response = await call(base, `${itemPath(itemId)}/like`, {
    method: liked ? "POST" : "DELETE",
    headers: { Authorization: `Bearer ${token}` },
  });
  if (response.status !== 202) throw await failure(response);
  return response.json();
}

// Whether the token's user likes the item (memberships are private: the token must be
// that user's); null when the server cannot say right now.
export async function isLiked(base, token, itemId, userId) {
  const path = `${itemPath(itemId)}/likes/${encodeURIComponent(userId)}`;
  try {
    const response = await call(base, path, { headers: { Authorization: `Bearer ${token}` } });
    return response.ok ? (await response.json()).liked : null;
  } catch {
    return null;
  }
}

// GET /items/{id}/likes: the item's count; null when the server cannot say right now.
export async function likesOf(base, itemId) {
  try {
    const response = await call(base, `${itemPath(itemId)}/likes`);
    return response.ok ? (await response.json()).likes : null;
  } catch {
    return null;
  }
}
