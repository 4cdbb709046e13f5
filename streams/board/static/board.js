// The status board's live updates: server-sent events (/events), or polling /api/services
// when EventSource is missing or fails. Values from records are set as text, never as markup.
"use strict";
(function () {
  const config = JSON.parse(document.body.dataset.config);
  const words = config.words;
  const sitesBox = document.getElementById("sites");
  const updates = document.getElementById("updates");
  const heard = document.getElementById("heard");
  const rows = new Map();
  let nowMs = config.now_ms;
  let polling = null;

  const RFC3339 = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d)(?::\d\d(?:\.\d+)?)?(Z|[+-]\d\d:\d\d)$/i;

  function sinceText(since) {
    if (!since) return "";
    const m = RFC3339.exec(since);
    if (!m) return since;
    const offset = m[3].toUpperCase() === "Z" ? "+00:00" : m[3];
    return m[1] + " " + m[2] + " " + offset;
  }

  function durationText(seconds) {
    const total = Math.floor(Math.max(0, Math.floor(seconds)) / 60);
    const days = Math.floor(total / 1440);
    const hours = Math.floor((total % 1440) / 60);
    const minutes = total % 60;
    if (days) return days + "d " + hours + "h";
    if (hours) return hours + "h " + String(minutes).padStart(2, "0") + "m";
    return minutes + "m";
  }

  function durationOf(since) {
    if (nowMs === null || !since || !RFC3339.test(since)) return "";
    const start = Date.parse(since);
    return Number.isNaN(start) ? "" : durationText((nowMs - start) / 1000);
  }

  function cell(row, name) {
    return row.querySelector("." + name);
  }

  function setState(td, state) {
    td.textContent = "";
    const icon = document.createElement("span");
    icon.className = "icon";
    icon.setAttribute("aria-hidden", "true");
    icon.textContent = config.icons[state] || "?";
    const text = document.createElement("span");
    text.className = "state-text";
    text.textContent = words["state." + state] || state;
    td.append(icon, " ", text);
  }

  function incidentHref(incident) {
    return "/incident/" + encodeURIComponent(incident) + "?lang=" + encodeURIComponent(config.lang);
  }

  function fill(tr, s) {
    tr.className = "state-" + s.state;
    tr.dataset.since = s.since || "";
    cell(tr, "c-service").textContent = s.service;
    setState(cell(tr, "c-state"), s.state);
    cell(tr, "c-since").textContent = sinceText(s.since);
    cell(tr, "c-duration").textContent = durationOf(s.since);
    const inc = cell(tr, "c-incident");
    inc.textContent = "";
    if (s.incident) {
      const a = document.createElement("a");
      a.href = incidentHref(s.incident);
      a.textContent = s.incident;
      inc.append(a);
    } else {
      inc.textContent = words.none;
    }
    const held = s.queue && s.queue.held === true;
    const queue = cell(tr, "c-queue");
    queue.textContent = held ? words.held : words.not_held;
    const pending = s.pending_release;
    if (pending && typeof pending === "object" && typeof pending.actor === "string"
        && typeof pending.expires === "string") {
      const waiting = document.createElement("span");
      waiting.className = "waiting";
      waiting.textContent = words.release_waiting
        .replace("{actor}", () => pending.actor)
        .replace("{time}", () => sinceText(pending.expires));
      queue.append(" ", waiting);
    }
    const manual = s.manual && typeof s.manual === "object" ? s.manual : null;
    cell(tr, "c-paper").textContent = manual && Number.isInteger(manual.open) ? String(manual.open) : "";
    cell(tr, "c-reason").textContent = s.last_reason || "";
  }

  const COLUMNS = ["c-service", "c-state", "c-since", "c-duration", "c-incident", "c-queue", "c-paper", "c-reason"];

  function newRow(s) {
    const tr = document.createElement("tr");
    tr.dataset.service = s.service;
    for (const name of COLUMNS) {
      const td = document.createElement(name === "c-service" ? "th" : "td");
      if (name === "c-service") td.scope = "row";
      td.className = name;
      tr.append(td);
    }
    return tr;
  }

  function section(site) {
    for (const sec of sitesBox.querySelectorAll("section.site")) {
      if (sec.dataset.site === site) return sec.querySelector("tbody");
    }
    const first = document.querySelector("section.site thead");
    const sec = document.createElement("section");
    sec.className = "site";
    sec.dataset.site = site;
    const h2 = document.createElement("h2");
    h2.textContent = site;
    const table = document.createElement("table");
    const head = first ? first.cloneNode(true) : headRow();
    const tbody = document.createElement("tbody");
    table.append(head, tbody);
    sec.append(h2, table);
    const after = [...sitesBox.querySelectorAll("section.site")].find((x) => x.dataset.site > site);
    sitesBox.insertBefore(sec, after || null);
    return tbody;
  }

  function headRow() {
    const thead = document.createElement("thead");
    const tr = document.createElement("tr");
    for (const key of ["service", "state", "since", "duration", "incident", "queue", "paper_open", "last_reason"]) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = words[key];
      tr.append(th);
    }
    thead.append(tr);
    return thead;
  }

  function insertSorted(tbody, tr, service) {
    const after = [...tbody.children].find((x) => x.dataset.service > service);
    tbody.insertBefore(tr, after || null);
  }

  function remove(service) {
    const tr = rows.get(service);
    if (!tr) return;
    const tbody = tr.parentNode;
    tr.remove();
    rows.delete(service);
    if (tbody && tbody.children.length === 0) tbody.closest("section").remove();
  }

  function upsert(s, match) {
    if (!match) {
      remove(s.service);
    } else {
      let tr = rows.get(s.service);
      if (tr && tr.closest("section").dataset.site !== s.site) {
        remove(s.service);
        tr = undefined;
      }
      if (!tr) {
        if (rows.size >= config.limit) {
          document.getElementById("more").hidden = false;
          return;
        }
        tr = newRow(s);
        insertSorted(section(s.site), tr, s.service);
        rows.set(s.service, tr);
      }
      fill(tr, s);
    }
    document.getElementById("empty").hidden = rows.size > 0;
  }

  function retime() {
    for (const tr of rows.values()) cell(tr, "c-duration").textContent = durationOf(tr.dataset.since);
  }

  function renderAll(list) {
    const keep = new Set();
    for (const s of list.slice(0, config.limit)) {
      keep.add(s.service);
      upsert(s, true);
    }
    for (const service of [...rows.keys()]) if (!keep.has(service)) remove(service);
    document.getElementById("more").hidden = list.length <= config.limit;
  }

  function setHeard(value) {
    heard.textContent = value || words.never;
  }

  async function poll() {
    try {
      const response = await fetch("/api/services?" + config.query, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const body = await response.json();
      renderAll(body.services);
      setHeard(body.heard_from_kafka);
    } catch (e) {
      updates.textContent = words.connecting;
    }
  }

  function startPolling() {
    if (polling !== null) return;
    updates.textContent = words.polling;
    updates.dataset.mode = "polling";
    poll();
    polling = setInterval(poll, 3000);
  }

  for (const tr of document.querySelectorAll("tr[data-service]")) rows.set(tr.dataset.service, tr);

  if (typeof window.EventSource !== "function") {
    startPolling();
    return;
  }
  const source = new EventSource("/events?" + config.query);
  source.addEventListener("open", function () {
    updates.textContent = words.live;
    updates.dataset.mode = "live";
    poll();
  });
  source.addEventListener("service", function (event) {
    const message = JSON.parse(event.data);
    upsert(message.service, message.match);
  });
  source.addEventListener("clock", function (event) {
    const message = JSON.parse(event.data);
    if (message.now_ms !== null) nowMs = message.now_ms;
    setHeard(message.heard_from_kafka);
    retime();
  });
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) {
      startPolling();
    } else {
      updates.textContent = words.connecting;
    }
  });
})();
