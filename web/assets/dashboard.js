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

  var es = new EventSource(main.dataset.events + "?after=" + encodeURIComponent(String(last)));
  es.onopen = function () { setState(main.dataset.live, true); };
  es.onerror = function () {
    // The browser reconnects by itself, sending Last-Event-ID; a refused
    // stream (signed out, too many open) closes it for good.
    setState(es.readyState === EventSource.CLOSED ? "—" : main.dataset.offline, false);
  };
  es.addEventListener("audit", function (m) { addEntry(JSON.parse(m.data)); });
  es.addEventListener("stats", function (m) { setStats(JSON.parse(m.data)); });
  es.addEventListener("end", function (m) {
    es.close();
    setState("—", false);
    var p = document.getElementById("feed-ended");
    p.textContent = main.dataset.ended.replace("%s", m.data);
    p.hidden = false;
  });
})();
