// subrole's live dashboard: follows /dashboard/events (Server-Sent Events)
// and puts new audit entries at the top of the list and new counts in the
// counters. No library, no build step; text goes in with textContent only.
"use strict";
(function () {
  var main = document.getElementById("dashboard");
  if (!main || !window.EventSource) return;
  var list = document.getElementById("entries");
  var empty = document.getElementById("empty");
  var state = document.getElementById("feed-state");
  var maxEntries = 200;
  var last = Number(main.dataset.after || "0");

  function setState(text, live) {
    state.textContent = text;
    state.className = "feed-state" + (live ? " live" : "");
  }

  function span(cls, text) {
    var s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function addEntry(e) {
    if (e.seq <= last) return; // already shown
    last = e.seq;
    var li = document.createElement("li");
    li.className = "entry kind-" + e.kind + " new";
    li.dataset.seq = String(e.seq);
    var t = document.createElement("time");
    t.textContent = e.time;
    li.append(t, " ", span("kind", e.label), " ", span("who", e.who), " ",
      span("change", e.change), " ", span("detail", e.detail));
    list.prepend(li);
    while (list.children.length > maxEntries) list.lastElementChild.remove();
    empty.hidden = true;
  }

  function setStats(s) {
    document.querySelectorAll("[data-stat]").forEach(function (dd) {
      var v = s[dd.dataset.stat];
      if (v !== undefined && dd.textContent !== String(v)) {
        dd.textContent = String(v);
        dd.classList.add("changed");
        setTimeout(function () { dd.classList.remove("changed"); }, 1500);
      }
    });
    if (s.status) {
      var ul = document.getElementById("status");
      ul.replaceChildren.apply(ul, s.status.map(function (line) {
        var li = document.createElement("li");
        li.textContent = line;
        return li;
      }));
    }
  }

  // connect opens the feed after the newest entry shown. The browser
  // reconnects a dropped stream by itself (with Last-Event-ID); a stream it
  // gives up on (refused, or a proxy's 502 while subrole restarts) and a
  // server shutting down are retried here, 2 s doubling to 30 s, once the
  // page answers. A page that answers with a redirect means the session is
  // over: then the feed ends for good, as after "end".
  var es = null, retry = 2000, timer = 0;

  function ended(why) {
    if (es) es.close();
    clearTimeout(timer);
    setState("—", false);
    var p = document.getElementById("feed-ended");
    p.textContent = main.dataset.ended.replace("%s", why);
    p.hidden = false;
  }

  function later() {
    if (es) es.close();
    setState(main.dataset.offline, false);
    clearTimeout(timer);
    timer = setTimeout(function () {
      var again = function () { retry = Math.min(retry * 2, 30000); later(); };
      fetch(window.location.pathname, { redirect: "manual", cache: "no-store", credentials: "same-origin" })
        .then(function (r) {
          if (r.type === "opaqueredirect" || r.status === 401 || r.status === 403) ended(main.dataset.signedOut);
          else if (r.ok) connect();
          else again();
        }, again);
    }, retry);
  }

  function connect() {
    es = new EventSource(main.dataset.events + "?after=" + encodeURIComponent(String(last)));
    es.onopen = function () { retry = 2000; setState(main.dataset.live, true); };
    es.onerror = function () {
      if (es.readyState === EventSource.CLOSED) later();
      else setState(main.dataset.offline, false);
    };
    es.addEventListener("audit", function (m) { addEntry(JSON.parse(m.data)); });
    es.addEventListener("stats", function (m) { setStats(JSON.parse(m.data)); });
    es.addEventListener("restart", function () { later(); });
    // The log was replaced by a shorter one (a backup restored): what this
    // page shows is not in it any more, and its position is past the end.
    es.addEventListener("reset", function () { es.close(); location.reload(); });
    es.addEventListener("end", function (m) { ended(m.data); });
  }
  connect();
})();
