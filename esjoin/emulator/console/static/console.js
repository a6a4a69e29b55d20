// The esjoin console (docs/console.md): plain JavaScript, no build step, no dependencies.
// Everything it shows comes from /_esjoin/ui/api/*; controls call the control API (/_esjoin/*).
"use strict";

const API = "/_esjoin/ui/api";
const SVG = "http://www.w3.org/2000/svg";
const state = {
  view: "pipeline",
  invocations: [],          // newest last, at most MAX_BARS
  lastId: 0,
  selected: null,           // invocation id
  window: { end: null, span: 60 },  // seconds shown, ending at `end` (null: now, following)
  data: { pages: [], next: null },
  live: null,
};
const MAX_BARS = 5000;
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(node, ...children) {  // replaceChildren, skipping the parts a condition left out
  node.replaceChildren(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
}

function json(value) {
  return el("pre", {}, JSON.stringify(value, null, 2));
}

async function api(path, options = {}) {
  const response = await fetch(path, { headers: { "Content-Type": "application/json" }, ...options });
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (error) { body = { message: text }; }
  if (!response.ok) throw new Error((body && (body.message || body.error)) || `HTTP ${response.status}`);
  return body;
}

function say(message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error-text", isError);
}

// ---- tabs -------------------------------------------------------------------------------------

function showView(name, focus = false) {
  state.view = name;
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const selected = tab.id === `tab-${name}`;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !selected;
    if (selected && focus) tab.focus();
  }
  refresh();
}

function setUpTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => showView(tab.id.slice(4)));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      event.preventDefault();
      showView(tabs[(index + step + tabs.length) % tabs.length].id.slice(4), true);
    });
  });
}

// ---- pipeline ---------------------------------------------------------------------------------

const COLUMNS = { stream: 0, mapping: 1, function: 2, table: 3, queue: 4 };

function figures(node) {
  switch (node.kind) {
    case "stream": return [`${node.shards} shards, ${node.status}`];
    case "table": return [`${node.items} items${node.streamArn ? ", stream on" : ""}`];
    case "queue": return [`visible ${node.visible}, in flight ${node.inFlight}, delayed ${node.delayed}`, node.dlq ? `DLQ ${node.dlq.split(":").pop()}` : ""];
    case "function": return [`warm ${node.warm}, busy ${node.busy}`, `p50 ${node.durationP50 ?? "–"} ms, p99 ${node.durationP99 ?? "–"} ms`];
    case "mapping": {
      const shardLags = node.shards && typeof node.shards === "object" ? Object.values(node.shards).map((s) => s.lag ?? "–") : [];
      const lag = typeof node.lag === "number" ? `lag ${node.lag}` : shardLags.length ? `lag per shard ${shardLags.join(", ")}` : "";
      return [`${node.state}, batch ${node.batchSize}, in flight ${node.inFlight ?? 0}`,
        `${lag}${(node.retrying || []).length ? `, retrying ${node.retrying.length}` : ""}`,
        node.lastError ? `last error: ${node.lastError}`.slice(0, 60) : ""];
    }
    default: return [];
  }
}

function renderGraph(graph) {
  const svg = $("graph");
  svg.replaceChildren();
  svg.append(el("svg:defs", {}, el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" },
    el("svg:path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#90a4ae" }))));
  const width = Math.max(svg.clientWidth || 1000, 900);
  const columnWidth = width / 5, boxWidth = columnWidth - 24, boxHeight = 58;
  const rows = [0, 0, 0, 0, 0], place = {};
  const nodes = [...graph.nodes].sort((a, b) => a.name.localeCompare(b.name));
  for (const node of nodes) {
    const column = COLUMNS[node.kind] ?? 4;
    place[node.id] = { x: column * columnWidth + 12, y: 12 + rows[column] * (boxHeight + 14) };
    rows[column] += 1;
  }
  const height = 24 + Math.max(...rows) * (boxHeight + 14);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.style.height = `${Math.max(height, 200)}px`;
  for (const edge of graph.edges) {
    const from = place[edge.from], to = place[edge.to];
    if (!from || !to) continue;
    const forward = to.x > from.x;
    const x1 = forward ? from.x + boxWidth : from.x, x2 = forward ? to.x : to.x + boxWidth;
    const y1 = from.y + boxHeight / 2, y2 = to.y + boxHeight / 2, mid = (x1 + x2) / 2;
    svg.append(el("svg:path", { class: `edge ${edge.kind}`, d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}` },
      el("svg:title", {}, `${edge.kind}${edge.label ? ` (${edge.label})` : ""}`)));
  }
  const body = $("resources").tBodies[0];
  body.replaceChildren();
  for (const node of nodes) {
    const { x, y } = place[node.id];
    const lines = figures(node).filter(Boolean);
    const group = el("svg:g", { class: `node ${node.kind}${node.paused ? " paused" : ""}`, "data-kind": node.kind, "data-name": node.name },
      el("svg:title", {}, `${node.kind} ${node.name}\n${lines.join("\n")}`),
      el("svg:rect", { x, y, width: boxWidth, height: boxHeight }),
      el("svg:text", { x: x + 6, y: y + 15, class: "title" }, `${node.kind}: ${node.name}`.slice(0, 38)),
      lines.map((line, i) => el("svg:text", { x: x + 6, y: y + 30 + i * 12 }, line.slice(0, 52))));
    svg.append(group);
    body.append(el("tr", {}, el("td", {}, node.kind), el("td", {}, node.name), el("td", {}, lines.join("; "))));
  }
  say(`${graph.region}: ${nodes.filter((n) => n.kind === "function").length} functions, ` +
      `${nodes.filter((n) => n.kind === "mapping").length} mappings; ${graph.quiescence.quiescent ? "quiescent" : "working"}`);
}

// ---- timeline ---------------------------------------------------------------------------------

async function loadInvocations() {
  if (state.lastId === 0) {  // a first look: only the newest MAX_BARS, not the whole history
    const changes = await api(`${API}/changes`);
    state.lastId = Math.max(0, changes.lastId - MAX_BARS);
  }
  let more = true;
  while (more) {
    const page = await api(`${API}/invocations?since=${state.lastId}&limit=200`);
    for (const record of page.invocations) state.invocations.push(record);
    if (page.invocations.length) state.lastId = page.invocations[page.invocations.length - 1].id;
    more = page.more;
  }
  if (state.invocations.length > MAX_BARS) state.invocations.splice(0, state.invocations.length - MAX_BARS);
}

function outcomeClass(record) {
  return record.injectedFault ? "fault" : record.outcome;
}

function describe(record) {
  const when = new Date(record.startedAt * 1000).toISOString().slice(11, 23);
  return `${record.lane}: ${record.injectedFault ? "injected fault, " : ""}${record.outcome}` +
    `${record.attempt > 1 ? `, retry ${record.attempt - 1}` : ""}${record.duplicate ? ", duplicate delivery" : ""}` +
    `, ${record.batchIds.length} records, ${record.durationMs} ms at ${when}`;
}

function renderTimeline() {
  const svg = $("timeline");
  const records = state.invocations;
  svg.replaceChildren();
  const lanes = [...new Set(records.map((r) => r.lane))].sort();
  const width = Math.max(svg.clientWidth || 1000, 600), labelWidth = 260, laneHeight = 26;
  const height = Math.max(120, 30 + lanes.length * laneHeight);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.style.height = `${height}px`;
  const newest = records.length ? Math.max(...records.map((r) => r.endedAt)) : Date.now() / 1000;
  const end = $("follow").checked || state.window.end === null ? newest + 1 : state.window.end;
  state.window.end = end;
  const start = end - state.window.span;
  const x = (t) => labelWidth + ((t - start) / state.window.span) * (width - labelWidth - 10);
  for (let tick = 0; tick <= 5; tick += 1) {
    const t = start + (tick * state.window.span) / 5;
    svg.append(el("svg:text", { class: "axis", x: x(t), y: height - 4 }, new Date(t * 1000).toISOString().slice(11, 19)));
  }
  lanes.forEach((lane, i) => svg.append(el("svg:text", { class: "lane-label", x: 4, y: 18 + i * laneHeight }, lane.slice(0, 42))));
  for (const record of records) {
    if (record.endedAt < start || record.startedAt > end) continue;
    const lane = lanes.indexOf(record.lane);
    const left = Math.max(labelWidth, x(record.startedAt));
    const barWidth = Math.max(3, x(record.endedAt) - left);
    const classes = `bar ${outcomeClass(record)}${record.duplicate ? " duplicate" : ""}${record.id === state.selected ? " selected" : ""}`;
    svg.append(el("svg:rect", {
      class: classes, x: left, y: 6 + lane * laneHeight, width: barWidth, height: laneHeight - 10,
      "data-id": record.id, "data-outcome": outcomeClass(record), role: "button", "aria-label": describe(record),
      onclick: () => openInvocation(record.id),
    }, el("svg:title", {}, describe(record))));
    if (record.attempt > 1) {
      svg.append(el("svg:text", { class: "axis", x: left + barWidth + 2, y: 18 + lane * laneHeight }, "↻"));
    }
  }
}

function visibleBars() {
  return [...$("timeline").querySelectorAll("rect.bar")];
}

function setUpTimeline() {
  const svg = $("timeline");
  const zoom = (factor) => { state.window.span = Math.min(3600, Math.max(0.5, state.window.span * factor)); renderTimeline(); };
  const pan = (fraction) => { $("follow").checked = false; state.window.end += state.window.span * fraction; renderTimeline(); };
  $("zoom-in").addEventListener("click", () => zoom(0.5));
  $("zoom-out").addEventListener("click", () => zoom(2));
  $("pan-left").addEventListener("click", () => pan(-0.25));
  $("pan-right").addEventListener("click", () => pan(0.25));
  $("follow").addEventListener("change", renderTimeline);
  svg.addEventListener("wheel", (event) => { event.preventDefault(); zoom(event.deltaY > 0 ? 1.25 : 0.8); }, { passive: false });
  let drag = null;
  svg.addEventListener("pointerdown", (event) => { if (event.target.tagName !== "rect") drag = event.clientX; });
  window.addEventListener("pointerup", () => { drag = null; });
  svg.addEventListener("pointermove", (event) => {
    if (drag === null) return;
    const width = svg.clientWidth || 1000;
    pan(-(event.clientX - drag) / width);
    drag = event.clientX;
  });
  svg.addEventListener("keydown", (event) => {
    const bars = visibleBars();
    const index = bars.findIndex((bar) => Number(bar.dataset.id) === state.selected);
    if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
      event.preventDefault();
      if (!bars.length) return;
      const next = bars[Math.min(bars.length - 1, Math.max(0, index + (event.key === "ArrowRight" ? 1 : -1)))];
      state.selected = Number(next.dataset.id);
      renderTimeline();
      say(next.getAttribute("aria-label"));
    } else if (event.key === "Enter" && state.selected !== null) {
      event.preventDefault();
      openInvocation(state.selected);
    } else if (event.key === "+" || event.key === "=") {
      zoom(0.5);
    } else if (event.key === "-") {
      zoom(2);
    }
  });
}

async function openInvocation(id) {
  state.selected = id;
  renderTimeline();
  const detail = $("detail");
  try {
    const found = await api(`${API}/invocations/${id}`);
    const record = found.invocation;
    fill(detail,
      el("h2", {}, `Invocation ${record.id}: ${record.function}`),
      el("p", { class: "outcome" }, describe(record)),
      record.errorType ? el("p", { class: "error-text" }, `${record.errorType}: ${record.errorMessage || ""}`) : null,
      found.payloadTruncated ? el("p", {}, "The payload or response was cut at 256 KB.") : null,
      el("h3", {}, found.records.length ? `Records (${found.records.length}), decoded` : "Event"),
      json(found.records.length ? found.records : found.event),
      el("h3", {}, "Response"), json(found.response),
      el("h3", {}, "batchItemFailures"), json(found.batchItemFailures),
      el("h3", {}, "Log"), el("pre", { class: "log" }, found.log || "(no log lines)"),
    );
  } catch (error) {
    detail.replaceChildren(el("p", { class: "error-text" }, `Invocation ${id}: ${error.message}`));
  }
}

// ---- failures ---------------------------------------------------------------------------------

async function renderFailures() {
  const found = await api(`${API}/failures`);
  const root = $("failures");
  root.replaceChildren();
  if (!found.queues.length) root.append(el("p", {}, "No failure or dead-letter queues in this stack."));
  for (const queue of found.queues) {
    const article = el("article", { "data-queue": queue.name },
      el("h2", {}, `${queue.name} (${queue.count} messages)`), el("p", {}, queue.why));
    if (!queue.messages.length) article.append(el("p", {}, "Empty."));
    for (const message of queue.messages) {
      article.append(el("section", { class: "failure", "data-message": message.messageId },
        el("h3", {}, `Message ${message.messageId}`),
        el("p", {}, `Reason: ${message.reason || "(none given)"}; received ${message.receiveCount} times`),
        el("h4", {}, "Original record"), json(message.original ?? message.body),
        el("button", {
          type: "button", "aria-label": `Replay message ${message.messageId} to its source`,
          onclick: () => replay(queue.arn, message.messageId),
        }, "Replay to source")));
    }
    root.append(article);
  }
}

async function replay(queue, messageId) {
  if (!window.confirm(`Send message ${messageId} back to its source and delete it from the failure queue?`)) return;
  try {
    const result = await api(`${API}/failures/replay`, { method: "POST", body: JSON.stringify({ queue, messageId }) });
    say(`replayed ${result.replayed} to ${result.to}`);
  } catch (error) {
    say(`replay failed: ${error.message}`, true);
  }
  renderFailures();
}

// ---- data -------------------------------------------------------------------------------------

async function setUpData() {
  const [tables, streams] = await Promise.all([api(`${API}/tables`), api(`${API}/streams`)]);
  const source = $("data-source");
  const chosen = source.value;
  source.replaceChildren(
    ...tables.tables.map((t) => el("option", { value: `table:${t.name}` }, `table ${t.name} (${t.items})`)),
    ...streams.streams.map((s) => el("option", { value: `stream:${s.name}`, "data-shards": s.shards.join(",") }, `stream ${s.name}`)),
  );
  if (chosen) source.value = chosen;
  fillShards();
}

function fillShards() {
  const option = $("data-source").selectedOptions[0];
  const shards = option && option.dataset.shards ? option.dataset.shards.split(",") : [];
  $("data-shard").replaceChildren(...shards.map((s) => el("option", { value: s }, s)));
  $("data-shard").disabled = !shards.length;
}

async function showData(start) {
  const [kind, name] = ($("data-source").value || ":").split(/:(.*)/s);
  if (!name) return;
  const key = $("data-key").value.trim();
  const params = new URLSearchParams({ limit: "50" });
  if (key) params.set("key", key);
  let page;
  if (kind === "table") {
    if (start) params.set("start", start);
    page = await api(`${API}/tables/${encodeURIComponent(name)}?${params}`);
    const columns = page.keys;
    fill($("data-rows"),
      el("p", {}, `${page.count} items${key ? ` with key ${key}` : ""}; ${page.items.length} on this page`),
      el("table", { "aria-label": `Items of ${name}` },
        el("thead", {}, el("tr", {}, ...columns.map((c) => el("th", { scope: "col" }, c)), el("th", { scope: "col" }, "item"))),
        el("tbody", {}, ...page.items.map((item) => el("tr", {}, ...columns.map((c) => el("td", {}, JSON.stringify(item[c]))), el("td", {}, json(item)))))));
  } else {
    params.set("shard", $("data-shard").value);
    if (start) params.set("after", start);
    page = await api(`${API}/streams/${encodeURIComponent(name)}?${params}`);
    $("data-rows").replaceChildren(el("table", { "aria-label": `Records of ${name} ${page.shard}` },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "sequence number"), el("th", { scope: "col" }, "partition key"), el("th", { scope: "col" }, "data"))),
      el("tbody", {}, ...page.records.map((r) => el("tr", {}, el("td", {}, r.sequenceNumber), el("td", {}, r.partitionKey), el("td", {}, json(r.data)))))));
  }
  state.data.next = page.next;
  $("data-next").disabled = !page.next;
  $("data-prev").disabled = state.data.pages.length === 0;
}

function setUpDataForm() {
  $("data-source").addEventListener("change", fillShards);
  $("data-form").addEventListener("submit", (event) => { event.preventDefault(); state.data.pages = []; showData(null).catch((e) => say(e.message, true)); });
  $("data-next").addEventListener("click", () => {
    if (!state.data.next) return;
    state.data.pages.push(state.data.current ?? null);
    state.data.current = state.data.next;
    showData(state.data.next).catch((e) => say(e.message, true));
  });
  $("data-prev").addEventListener("click", () => {
    state.data.current = state.data.pages.pop() ?? null;
    showData(state.data.current).catch((e) => say(e.message, true));
  });
  $("user-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const found = await api(`${API}/users/${encodeURIComponent($("user-id").value.trim())}`);
      const view = (found.tables.views || [])[0] || null;
      fill($("user"),
        el("div", { class: "side" },
          el("div", {}, el("h3", {}, "View row"), json(view)),
          el("div", {}, el("h3", {}, "Oracle's fold of the user's events"), json(found.oracle))),
        el("h3", {}, `Events on the input stream (${found.events.length})`), json(found.events),
        el("h3", {}, "Events table rows"), json(found.tables.events),
        el("h3", {}, "Snapshot"), json(found.tables.snapshots));
    } catch (error) {
      $("user").replaceChildren(el("p", { class: "error-text" }, error.message));
    }
  });
}

// ---- controls ---------------------------------------------------------------------------------

async function renderControls() {
  const [graph, faults] = await Promise.all([api(`${API}/graph`), api("/_esjoin/faults")]);
  $("quiescence").textContent = graph.quiescence.quiescent ? "Quiescent: no mapping has work pending." : "Working: mappings have work pending.";
  const mappings = graph.nodes.filter((n) => n.kind === "mapping");
  $("mappings").tBodies[0].replaceChildren(...mappings.map((m) => el("tr", { "data-mapping": m.id },
    el("td", {}, m.name), el("td", {}, m.state), el("td", {}, String(m.inFlight ?? 0)),
    el("td", {}, el("button", {
      type: "button", "aria-label": `${m.paused ? "Resume" : "Pause"} mapping ${m.name}`,
      onclick: () => control(`/_esjoin/mappings/${m.id}/${m.paused ? "resume" : "pause"}`, "POST"),
    }, m.paused ? "Resume" : "Pause")))));
  const functions = graph.nodes.filter((n) => n.kind === "function").map((n) => n.name);
  const select = $("fault-function");
  const chosen = select.value;
  select.replaceChildren(...functions.map((f) => el("option", { value: f }, f)));
  if (chosen) select.value = chosen;
  $("faults").tBodies[0].replaceChildren(...faults.faults.map((f) => el("tr", {},
    el("td", {}, f.id), el("td", {}, `${f.action} ${f.function || f.operation}${f.count ? ` × ${f.count}` : ""}`),
    el("td", {}, String(f.hits)),
    el("td", {}, el("button", { type: "button", "aria-label": `Clear fault ${f.id}`, onclick: () => control(`/_esjoin/faults/${f.id}`, "DELETE") }, "Clear")))));
}

async function control(path, method, body) {
  try {
    await api(path, { method, body: body ? JSON.stringify(body) : undefined });
    say(`${method} ${path}: done`);
  } catch (error) {
    say(`${method} ${path}: ${error.message}`, true);
  }
  renderControls();
}

function setUpControls() {
  $("fault-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const rule = { function: $("fault-function").value, action: $("fault-action").value, count: Number($("fault-count").value) || 1 };
    if (rule.action === "delay") rule.delaySeconds = Number($("fault-delay").value) || 0;
    control("/_esjoin/faults", "POST", rule);
  });
  $("faults-clear").addEventListener("click", () => control("/_esjoin/faults", "DELETE"));
}

// ---- live updates -----------------------------------------------------------------------------

let refreshing = false, again = false;
async function refresh() {
  if (refreshing) { again = true; return; }
  refreshing = true;
  try {
    if (state.view === "pipeline") renderGraph(await api(`${API}/graph`));
    if (state.view === "timeline") { await loadInvocations(); renderTimeline(); }
    if (state.view === "failures") await renderFailures();
    if (state.view === "data" && !$("data-source").options.length) await setUpData();
    if (state.view === "controls") await renderControls();
  } catch (error) {
    say(error.message, true);
  } finally {
    refreshing = false;
    if (again) { again = false; setTimeout(refresh, 250); }
  }
}

const POLL_MS = 500;  // two looks a second at /api/changes; a view refreshes only when something moved

async function poll() {
  try {
    const changes = await api(`${API}/changes`);
    const moved = !state.live || changes.lastId !== state.live.lastId || changes.quiescent !== state.live.quiescent;
    if (changes.lastId < state.lastId) { state.invocations = []; state.lastId = 0; }  // history cleared
    state.live = changes;
    if (moved && state.view !== "data" && state.view !== "failures") await refresh();
  } catch (error) {
    say(`live updates interrupted (${error.message}); retrying…`, true);
  }
  setTimeout(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  setUpTabs();
  setUpTimeline();
  setUpDataForm();
  setUpControls();
  showView("pipeline");
  setTimeout(poll, POLL_MS);
});
