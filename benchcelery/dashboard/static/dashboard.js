// Live parts: every element with data-live="URL" gets its HTML from URL every few seconds
// (paused while the tab is hidden). An element with data-stream="URL" listens to that
// server-sent-events stream instead: each "charts" event replaces its charts (and, when sent,
// its tables). Forms with data-confirm ask before they post.
(function () {
  "use strict";
  var every = 5000;
  function refresh(el) {
    if (document.hidden) return;
    fetch(el.getAttribute("data-live"), { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (r) {
        if (r.redirected || !r.ok) { if (r.redirected) location.reload(); return null; }
        return r.text();
      })
      .then(function (html) { if (html !== null) { el.innerHTML = html; el.setAttribute("data-refreshed", Date.now()); } })
      .catch(function () { el.setAttribute("data-stale", "1"); });
  }
  function put(root, id, html) {
    var el = root.querySelector("#" + id);
    if (el && typeof html === "string") el.innerHTML = html;
  }
  function listen(root) {
    if (!window.EventSource) return;
    var source = new EventSource(root.getAttribute("data-stream"));
    source.addEventListener("charts", function (e) {
      var d = JSON.parse(e.data);
      if (d.error) { root.setAttribute("data-stale", "1"); return; }
      root.removeAttribute("data-stale");
      put(root, "chart-throughput", d.throughput);
      put(root, "chart-wait", d.wait);
      put(root, "done-hour", String(d.done));
      put(root, "failed-hour", String(d.failed));
      put(root, "tables", d.tables);
      root.setAttribute("data-refreshed", Date.now());
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-stream]").forEach(listen);
    document.querySelectorAll("[data-live]").forEach(function (el) {
      setInterval(function () { refresh(el); }, every);
    });
    document.addEventListener("submit", function (e) {
      var msg = e.target.getAttribute("data-confirm");
      if (msg && !window.confirm(msg)) e.preventDefault();
    });
  });
})();
