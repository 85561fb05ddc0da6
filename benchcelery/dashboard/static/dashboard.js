// Live parts: every element with data-live="URL" gets its HTML from URL every few seconds
// (paused while the tab is hidden). Forms with data-confirm ask before they post.
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
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(function (el) {
      setInterval(function () { refresh(el); }, every);
    });
    document.addEventListener("submit", function (e) {
      var msg = e.target.getAttribute("data-confirm");
      if (msg && !window.confirm(msg)) e.preventDefault();
    });
  });
})();
