// The admin console's own script (htmx does the fetching and swapping):
// - ask before destructive actions (forms with data-confirm);
// - make relative times ("in 3m", "12s ago") tick, against the server's clock;
// - show what changed since the last view: accounts whose status changed, counts that moved.
(() => {
  "use strict";

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });

  // --- polling never undoes a navigation ---------------------------------------------------------
  // The live part asks for itself every few seconds; a click (filter, sort, page) asks for a
  // new view into the same place. An answer older than the last request for that place is
  // dropped, and no poll starts while a click's answer is on its way: what you chose stays.
  const flights = {};

  document.addEventListener("htmx:beforeRequest", (event) => {
    const target = event.detail.target;
    if (!target || !target.id) return;
    const flight = (flights[target.id] ||= { seq: 0, navigating: 0 });
    const poll = event.detail.elt === target;
    if (poll && flight.navigating) {
      event.preventDefault();
      return;
    }
    flight.seq += 1;
    event.detail.xhr.consoleSeq = flight.seq;
    event.detail.xhr.consoleNavigation = !poll;
    if (!poll) flight.navigating += 1;
  });

  document.addEventListener("htmx:beforeSwap", (event) => {
    const target = event.detail.target;
    const flight = target && flights[target.id];
    if (flight && event.detail.xhr.consoleSeq < flight.seq) event.detail.shouldSwap = false;
  });

  document.addEventListener("htmx:afterRequest", (event) => {
    const target = event.detail.target;
    const flight = target && flights[target.id];
    if (flight && event.detail.xhr.consoleNavigation) {
      event.detail.xhr.consoleNavigation = false; // count each request once
      flight.navigating = Math.max(0, flight.navigating - 1);
    }
  });

  // --- relative times ------------------------------------------------------------------------
  let clockOffset = 0; // server time minus this browser's time, from the last page or update

  function readServerClock() {
    const rendered = document.querySelector("[data-rendered]");
    const at = rendered ? Date.parse(rendered.dataset.rendered) : NaN;
    if (!Number.isNaN(at)) clockOffset = at - Date.now();
  }

  // The same words as the server's pages.relative().
  function relative(ms) {
    const future = ms >= 0;
    let seconds = Math.floor(Math.abs(ms) / 1000);
    const days = Math.floor(seconds / 86400); seconds -= days * 86400;
    const hours = Math.floor(seconds / 3600); seconds -= hours * 3600;
    const minutes = Math.floor(seconds / 60); seconds -= minutes * 60;
    let text;
    if (days) text = `${days}d ${hours}h`;
    else if (hours) text = `${hours}h ${minutes}m`;
    else if (minutes) text = `${minutes}m`;
    else text = `${seconds}s`;
    return future ? `in ${text}` : `${text} ago`;
  }

  function tick() {
    const now = Date.now() + clockOffset;
    for (const el of document.querySelectorAll("time[data-relative]")) {
      const at = Date.parse(el.getAttribute("datetime"));
      if (!Number.isNaN(at)) {
        const text = relative(at - now);
        if (el.textContent !== text) el.textContent = text;
      }
    }
  }

  // --- changes since the last view -------------------------------------------------------------
  const live = () => document.getElementById("live");
  const storageKey = (org) => `connector.console.v1.${org}`;

  function load(org) {
    try {
      return JSON.parse(window.localStorage.getItem(storageKey(org))) || null;
    } catch (_error) {
      return null;
    }
  }

  function save(org, state) {
    try {
      window.localStorage.setItem(storageKey(org), JSON.stringify(state));
    } catch (_error) { /* private mode or full storage: no memory of changes, nothing breaks */ }
  }

  function markChanges(announce) {
    const root = live();
    if (!root) return;
    const org = root.dataset.org;
    const previous = load(org);
    const state = previous || { rows: {}, counts: {} };
    const news = [];
    for (const row of root.querySelectorAll("tr[data-account-id]")) {
      const id = row.dataset.accountId;
      const seen = state.rows[id];
      const status = row.dataset.status;
      const label = row.dataset.statusLabel;
      if (!seen) {
        state.rows[id] = { s: status, l: label };
      } else if (seen.s !== status) {
        // Remember what it was when first seen changing, until marked as seen.
        state.rows[id] = { s: status, l: label, was: seen.was || seen.l, at: Date.now() };
        news.push(`${row.dataset.houseName} is now ${label}`);
      }
      const mark = state.rows[id];
      const note = row.querySelector(".change");
      if (mark.was && mark.was !== label) {
        row.classList.add("changed");
        if (note) {
          note.hidden = false;
          note.textContent = `changed, was ${mark.was}`;
        }
      } else {
        if (mark.was) delete mark.was;
        row.classList.remove("changed");
        if (note) note.hidden = true;
      }
    }
    for (const chip of root.querySelectorAll("a.count[data-status]")) {
      const status = chip.dataset.status;
      const count = Number(chip.dataset.count);
      if (!(status in state.counts)) state.counts[status] = count;
      const delta = count - state.counts[status];
      chip.querySelector(".delta")?.remove();
      if (delta) {
        const badge = document.createElement("span");
        badge.className = "delta";
        badge.textContent = delta > 0 ? `+${delta}` : `${delta}`;
        badge.title = `${delta > 0 ? "up" : "down"} ${Math.abs(delta)} since you last marked changes as seen`;
        chip.append(badge);
      }
    }
    save(org, state);
    const anyMarked = root.querySelector("tr.changed, .count .delta") !== null;
    const button = document.getElementById("seen");
    if (button) button.hidden = !anyMarked;
    const region = document.getElementById("changes");
    if (region && news.length) {
      const shown = news.slice(0, 3).join("; ") + (news.length > 3 ? `; and ${news.length - 3} more` : "");
      region.textContent = (announce ? "Just now: " : "Since your last visit: ") + shown + ".";
    }
  }

  function markSeen() {
    const root = live();
    if (!root) return;
    const org = root.dataset.org;
    const state = { rows: {}, counts: {} };
    for (const row of root.querySelectorAll("tr[data-account-id]")) {
      state.rows[row.dataset.accountId] = { s: row.dataset.status, l: row.dataset.statusLabel };
    }
    for (const chip of root.querySelectorAll("a.count[data-status]")) {
      state.counts[chip.dataset.status] = Number(chip.dataset.count);
    }
    save(org, state);
    const region = document.getElementById("changes");
    if (region) region.textContent = "";
    markChanges(false);
  }

  function ready() {
    readServerClock();
    const changes = document.getElementById("changes");
    if (changes && live()) {
      const button = document.createElement("button");
      button.type = "button";
      button.id = "seen";
      button.hidden = true;
      button.textContent = "Mark changes as seen";
      button.addEventListener("click", markSeen);
      changes.after(button);
    }
    markChanges(false);
    tick();
    window.setInterval(tick, 1000);
    document.body.addEventListener("htmx:afterSettle", () => {
      readServerClock();
      markChanges(true);
      tick();
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ready);
  else ready();
})();
