// The console's own script, allowed by the Content-Security-Policy as a same-origin file
// (no inline script anywhere). It does three small things:
// - times marked data-local are shown in the browser's time zone (Intl);
// - an element with data-events and data-fragment re-fetches its fragment when the server
//   sends an event (new runs), so the page updates without reloading;
// - the output element appends what its event stream sends (a live attempt's output).
"use strict";
(function () {
  function offset(date, zone) {
    const parts = new Intl.DateTimeFormat("en-CA", {
      timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
      minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short",
    }).formatToParts(date);
    const get = (type) => (parts.find((p) => p.type === type) || {}).value || "";
    return `${get("year")}-${get("month")}-${get("day")} ${get("hour")}:${get("minute")}:${get("second")} ${get("timeZoneName")}`;
  }

  function localTimes(root) {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    root.querySelectorAll("time[data-local]").forEach((el) => {
      el.textContent = offset(new Date(el.getAttribute("datetime")), zone);
    });
    root.querySelectorAll("[data-zone-name]").forEach((el) => {
      el.textContent = `Your zone (${zone})`;
    });
  }

  function liveFragment(el) {
    let timer = null;
    let busy = false;
    const source = new EventSource(el.dataset.events);
    const refresh = async () => {
      if (busy) { timer = setTimeout(refresh, 300); return; }
      busy = true;
      try {
        const answer = await fetch(el.dataset.fragment, { credentials: "same-origin" });
        if (answer.ok) { el.innerHTML = await answer.text(); localTimes(el); }
      } finally { busy = false; }
    };
    source.addEventListener("run", () => { clearTimeout(timer); timer = setTimeout(refresh, 250); });
    source.addEventListener("end", () => source.close());
  }

  function liveOutput(el) {
    const source = new EventSource(el.dataset.events);
    const state = document.querySelector("[data-follow-state]");
    let fresh = true;
    source.addEventListener("open", () => { fresh = true; });
    source.addEventListener("output", (event) => {
      // The stream starts from the attempt's first byte: replace what the page showed.
      if (fresh) { el.textContent = ""; fresh = false; }
      const chunk = JSON.parse(event.data);
      const span = document.createElement("span");
      span.className = chunk.stream;
      span.textContent = chunk.text;
      const atEnd = el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
      el.appendChild(span);
      if (atEnd) el.scrollTop = el.scrollHeight;
    });
    source.addEventListener("end", () => {
      source.close();
      if (state) state.textContent = "The run has ended.";
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED && state) state.textContent = "Disconnected.";
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    localTimes(document);
    document.querySelectorAll("[data-events][data-fragment]").forEach(liveFragment);
    document.querySelectorAll("pre[data-events]").forEach(liveOutput);
    // htmx sends the session's CSRF token with every request it makes.
    const csrf = document.body.dataset.csrf;
    document.body.addEventListener("htmx:configRequest", (event) => {
      if (csrf) event.detail.headers["X-CSRF-Token"] = csrf;
    });
  });
})();
