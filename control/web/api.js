// The cabinet API client. Same-origin fetch: the browser sends the HttpOnly session cookie and
// an Origin header, and every body is JSON (Content-Type: application/json), which is what the
// API's CSRF rule asks for. No token is ever kept in page storage.

/** A failed call: the API's error object ({code, message, field}) plus the HTTP status. */
export class ApiError extends Error {
  constructor(status, code, message, field, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field || null;
    this.retryAfter = retryAfter || null;
  }
}

let onUnauthorized = null;

/** Called when an authenticated call answers 401 (the session ended). */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/** Calls `/api/v1{path}`; resolves to the parsed JSON (or null for 204), rejects with ApiError. */
export async function api(method, path, body, { quiet401 = false } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch("/api/v1" + path, init);
  } catch {
    throw new ApiError(0, "network", "network");
  }
  if (resp.status === 204) return null;
  let data = null;
  const type = resp.headers.get("Content-Type") || "";
  if (type.startsWith("application/json")) {
    try {
      data = await resp.json();
    } catch {
      data = null;
    }
  }
  if (resp.ok) return data;
  const e = (data && data.error) || {};
  const err = new ApiError(
    resp.status,
    e.code || "http_" + resp.status,
    e.message || resp.statusText,
    e.field,
    Number(resp.headers.get("Retry-After")) || null,
  );
  if (resp.status === 401 && !quiet401 && onUnauthorized) onUnauthorized();
  throw err;
}

let openapiPaths = null;

/** True when the running server offers `path` (read from its OpenAPI document), so that a
 * section whose API has not landed says so instead of failing. */
export async function offers(path) {
  if (!openapiPaths) {
    openapiPaths = api("GET", "/openapi.json")
      .then((doc) => new Set(Object.keys((doc && doc.paths) || {})))
      .catch(() => new Set());
  }
  return (await openapiPaths).has("/api/v1" + path);
}
