// signoff console: ticking countdowns and live updates. Pages work without it.
(function () {
  "use strict";
  var skew = 0; // server clock minus this browser's, from the page's data-server-now

  function readSkew() {
    var el = document.querySelector("[data-server-now]");
    if (el) {
      var server = Date.parse(el.getAttribute("data-server-now"));
      if (!isNaN(server)) skew = server - Date.now();
    }
  }

  function left(ms) {
    if (ms <= 0) return "expired";
    var s = Math.floor(ms / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    s = s % 60;
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    if (h) return h + "h " + pad(m) + "m left";
    if (m) return m + "m " + pad(s) + "s left";
    return s + "s left";
  }

  function tick() {
    var now = Date.now() + skew;
    var items = document.querySelectorAll("time.countdown[data-deadline]");
    for (var i = 0; i < items.length; i++) {
      var el = items[i];
      var ms = Date.parse(el.getAttribute("data-deadline")) - now;
      var text = left(ms);
      if (el.textContent !== text) el.textContent = text;
      if (ms <= 0 && !el.classList.contains("expired")) {
        el.classList.add("expired");
        var card = el.closest(".card");
        if (card) card.classList.add("ended");
        var status = document.querySelector(".status-line .status-pending");
        if (status && !card) { status.textContent = "expired"; status.className = "status status-expired"; }
      }
    }
  }

  var refreshing = false, again = false, timer = null;

  function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    var area = document.getElementById("comment");
    var typed = area ? area.value : null;
    var focused = document.activeElement && document.activeElement.id;
    fetch(location.href, { headers: { "X-Fragment": "1" }, credentials: "same-origin" })
      .then(function (r) {
        if (r.redirected || r.status === 401 || r.status === 403) { location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html === null) return;
        var main = document.getElementById("main");
        main.innerHTML = html;
        var area2 = document.getElementById("comment");
        if (area2 && typed !== null) area2.value = typed;
        if (focused) { var f = document.getElementById(focused); if (f) f.focus(); }
        readSkew();
        tick();
      })
      .catch(function () {})
      .then(function () {
        refreshing = false;
        if (again) { again = false; schedule(); }
      });
  }

  function schedule() {
    if (timer) clearTimeout(timer);
    timer = setTimeout(refresh, 250);
  }

  function listen() {
    var kind = document.body.getAttribute("data-live");
    if (!kind || !window.EventSource) return;
    var mine = document.body.getAttribute("data-live-id");
    var source = new EventSource("/ui/live");
    source.addEventListener("change", function (e) {
      var ids = (e.data || "").split(",");
      if (kind === "pending" || ids.indexOf("*") >= 0 || ids.indexOf(mine) >= 0) schedule();
    });
    source.addEventListener("error", function () {
      // Closed for good (the session ended meanwhile, say): the page reads itself again,
      // and goes to the sign-in form if it must.
      if (source.readyState === EventSource.CLOSED) schedule();
    });
    source.addEventListener("signed-out", function () {
      source.close();
      location.href = "/ui/login?next=" + encodeURIComponent(location.pathname);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    readSkew();
    tick();
    setInterval(tick, 250);
    listen();
  });
})();
