// The HTTP API the page uses: dev tokens, the real write API, membership reads.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
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
  return new ApiError(response.status, code, message);
}

// POST /dev/token: a short-lived write token for any user name (development only).
export async function devToken(userId) {
  const response = await fetch("/dev/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user_id: userId }),
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

// POST (like) or DELETE (unlike) /items/{id}/like with the Bearer token; 202 when Kafka has it.
export async function setLiked(token, itemId, liked) {
  const response = await fetch(`/items/${encodeURIComponent(itemId)}/like`, {
    method: liked ? "POST" : "DELETE",
    headers: { Authorization: `Bearer ${token}` },
  });
  if (response.status !== 202) throw await failure(response);
  return response.json();
}

// Whether the token's user likes the item (memberships are private: the token must be
// that user's); null when the server cannot say right now.
export async function isLiked(token, itemId, userId) {
  const path = `/items/${encodeURIComponent(itemId)}/likes/${encodeURIComponent(userId)}`;
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
  if (!response.ok) return null;
  return (await response.json()).liked;
}
