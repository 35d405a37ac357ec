// Calls to the gateway's API from its pages. A key (when the gateway has keys) comes from the
// page address (#key=...) once and is kept in this browser's localStorage.
"use strict";
(function () {
  const m = location.hash.match(/key=([^&]+)/);
  if (m) localStorage.setItem("i2vKey", decodeURIComponent(m[1]));
  const key = localStorage.getItem("i2vKey");
  const headers = key ? { Authorization: "Bearer " + key } : {};
  async function call(method, path, body) {
    const init = { method, headers: { ...headers } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    const data = resp.headers.get("content-type")?.includes("json") ? await resp.json() : await resp.blob();
    if (!resp.ok) throw new Error((data.error && data.error.message) || resp.statusText);
    return data;
  }
  window.i2v = { call, get: (p) => call("GET", p), post: (p, b) => call("POST", p, b) };
})();
