// Calls to /api/v1 from the portal's pages: the session cookie authenticates, the CSRF
// token from the page's meta tag proves the call comes from our page.
const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

export const project = document.body.dataset.project;

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error ?? `HTTP ${status}`);
    this.status = status;
    this.body = body ?? {};
  }
}

export async function api(path, { method = "GET", json, form } = {}) {
  const headers = { "X-CSRF-Token": csrf, Accept: "application/json" };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  const response = await fetch(`/api/v1${path}`, { method, headers, body, credentials: "same-origin" });
  const payload = response.headers.get("Content-Type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new ApiError(response.status, payload);
  return payload;
}

// An upload with progress: fetch cannot report upload progress, XMLHttpRequest can.
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", `/api/v1${path}`);
    request.setRequestHeader("X-CSRF-Token", csrf);
    request.responseType = "json";
    request.upload.onprogress = (event) => event.lengthComputable && onProgress(event.loaded / event.total);
    request.onload = () =>
      request.status < 300 ? resolve(request.response) : reject(new ApiError(request.status, request.response));
    request.onerror = () => reject(new ApiError(0, { error: "the upload was interrupted" }));
    request.send(form);
  });
}

export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}
