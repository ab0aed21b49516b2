// The cabinet API client. Same-origin fetch: the browser sends the HttpOnly session cookie and
// an Origin header (which is what the API's CSRF rule checks on every write); bodies are JSON
// (Content-Type: application/json), except the DNS filter's own lists, which are plain text
// (apiText). No token is ever kept in page storage.

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
export async function api(method, path, body, opts) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return send(path, init, opts);
}

/** Like api(), for the endpoints whose body is plain text (one rule a line): `text` (when given)
 * goes as `text/plain; charset=utf-8`; a text/plain answer resolves to its text, a JSON one to
 * the parsed JSON. */
export async function apiText(method, path, text, opts) {
  const init = { method, headers: { Accept: "text/plain, application/json" } };
  if (text !== undefined) {
    init.headers["Content-Type"] = "text/plain; charset=utf-8";
    init.body = String(text);
  }
  return send(path, init, opts);
}

async function send(path, init, { quiet401 = false } = {}) {
  init.credentials = "same-origin";
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
  } else if (resp.ok && type.startsWith("text/plain")) {
    return resp.text();
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
