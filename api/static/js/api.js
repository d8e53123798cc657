// The dashboard's client for the REST API: JSON in and out, the CSRF header on unsafe
// methods, and one refresh of the session when the access token has lapsed.

const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

/** An error answer of the API: status, code, message and the field at fault. */
export class ApiError extends Error {
  constructor(status, body) {
    const detail = (body && body.error) || {};
    super(detail.message || `request failed with status ${status}`);
    this.status = status;
    this.code = detail.code || "http_error";
    this.field = detail.field || null;
  }
}

/** The session's CSRF token, from the cookie the server set at sign-in. */
export function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)appguard_csrf=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

function send(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (!SAFE.has(method)) {
    const token = csrfToken();
    if (token) headers["X-CSRF-Token"] = token;
  }
  return fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
}

/** Run work() while no other tab of this origin refreshes the session. */
export async function withLock(work) {
  // Refresh tokens work once: tabs must not refresh at the same time, or the second
  // would present a used token and the server would end the session.
  if (navigator.locks) return navigator.locks.request("appguard-refresh", work);
  return work();
}

/** Rotate the session's tokens; true when the session is still alive. */
export async function refreshSession() {
  if (!csrfToken()) return false;
  const resp = await send("POST", "/api/auth/refresh", {});
  return resp.ok;
}

/** Call the API; resolves to the decoded JSON (null for 204), rejects with ApiError. */
export async function api(method, path, body) {
  let resp = await send(method, path, body);
  if (resp.status === 401 && !path.startsWith("/api/auth/")) {
    resp = await withLock(async () => {
      // Another tab may have refreshed while this one waited: try again before refreshing.
      const again = await send(method, path, body);
      if (again.status !== 401 || !(await refreshSession())) return again;
      return send(method, path, body);
    });
    if (resp.status === 401) {
      location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    }
  }
  const data = resp.status === 204 ? null : await resp.json().catch(() => null);
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}
