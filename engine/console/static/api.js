// The token lives in sessionStorage and goes out as "Authorization: Bearer" on every call: there is no cookie
// another site could ride on, and closing the tab signs out.

const TOKEN_KEY = "timelapse-token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (t) => sessionStorage.setItem(TOKEN_KEY, t.trim()),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

// The login form is a page, and pages call the API: main.js registers it here rather than this module importing
// it (which would be an import cycle).
let signedOut = () => {};
export function onSignedOut(fn) { signedOut = fn; }

// A 401 means the token is unknown or revoked: forget it and ask for another. Any other error (403 included)
// carries the API's one-line detail for the page to show; the router words 403 as "Not allowed".
export async function api(path, { method = "GET", body, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${token.get() || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, `the console did not answer (${err.message})`);
  }
  if (res.status === 401) {
    token.clear();
    signedOut("Your token was not accepted (unknown or revoked). Paste a valid one.");
    throw new ApiError(401, "not signed in");
  }
  if (!res.ok) {
    let detail = `${res.status} ${res.statusText}`;
    try {
      const j = await res.json();
      if (j && j.detail) detail = detailText(j.detail);
    } catch (_) { /* not JSON: keep the status line */ }
    throw new ApiError(res.status, detail);
  }
  if (raw) return res;
  // 202: a running pipeline takes the request at its next epoch boundary; the dialogs tell the user so.
  if (res.status === 202) {
    const j = await res.json();
    return { ...j, pending: j.pending ?? true };
  }
  return res.json();
}

// The API's errors are one line, `{"detail": "..."}`; a request the API could not parse (a query parameter of the
// wrong type) is answered with FastAPI's list of `{loc, msg}`: its messages, joined, are that line.
function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => (d && d.msg ? `${d.msg}${Array.isArray(d.loc) ? ` (${d.loc.slice(1).join(".") || d.loc.join(".")})` : ""}` : JSON.stringify(d))).join("; ");
  }
  return JSON.stringify(detail);
}

export const P = (name) => `/api/pipelines/${encodeURIComponent(name)}`;
