// smsc-mailer dashboard: live progress without a framework. An element with data-live="URL" is
// refreshed from that URL (a server-rendered HTML fragment, escaped there) every 2 s until the
// fragment holds a [data-final] marker. A form with data-confirm asks before it submits.
"use strict";
(function () {
  var PERIOD_MS = 2000;

  function poll(el) {
    var url = el.getAttribute("data-live");
    var busy = false;
    var timer = setInterval(function () {
      if (busy || document.hidden) { return; }
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" }, cache: "no-store" })
        .then(function (r) {
          if (r.status === 401) { clearInterval(timer); window.location.reload(); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          if (html === null || html === undefined) { return; }
          el.innerHTML = html;
          if (el.querySelector("[data-final]")) { clearInterval(timer); el.removeAttribute("data-live"); }
        })
        .catch(function () { /* the next tick tries again */ })
        .then(function () { busy = false; });
    }, PERIOD_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(poll);
  });
  // forms inside live fragments are replaced every tick: listen on the document
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { ev.preventDefault(); }
  });
})();
