// agent-sidecar live page. Plain ES module, no dependencies, no build step.
//
//   WS /v1/tail    -> the event list (batches {"events": [...], "dropped": n})
//   GET /v1/stats  -> the figures and the per-agent table, once a second
//   GET /v1/series -> the charts: the window's history when the page opens (or the window or a
//                     filter changes), then its last two steps once a second
//
// The list keeps at most web.max_rows events (or fewer with ?rows=), so memory stays
// flat however long the tab stays open. It is virtualised: only the rows on screen
// exist in the DOM, refreshed at most 10 times a second, so a flood of events costs
// the same few dozen row updates as a trickle.

const FILTER_KEYS = ["type", "agent", "workflow", "severity"];
const STATS_FILTER_KEYS = ["type", "agent", "workflow"]; // /v1/stats has no severity filter
const DEFAULT_WINDOWS = ["1m", "5m", "15m", "1h"];
// The server coalesces events into at most 20 messages a second. It sends at most
// tail.max_batch (500) events per message, so this also caps the page at 10,000 ev/s.
const TAIL_INTERVAL_MS = 50;
const ROW_HEIGHT = 20; // px, as in app.css
const STATS_EVERY_MS = 1000;
const OPTIONS_EVERY_MS = 5000;
const HISTORY = 120; // chart points when /v1/series cannot answer (two minutes of /v1/stats, one a second)
const TOKEN_KEY = "agent-sidecar.token";

const $ = (sel) => document.querySelector(sel);
const query = new URLSearchParams(location.search);

function intParam(name, fallback, min, max) {
  const n = Number.parseInt(query.get(name) ?? "", 10);
  return Number.isFinite(n) ? Math.min(max, Math.max(min, n)) : fallback;
}

const configuredRows = Number.parseInt(document.querySelector('meta[name="sidecar-max-rows"]')?.content, 10) || 1000;

const state = {
  maxRows: intParam("rows", configuredRows, 1, configuredRows),
  filter: Object.fromEntries(FILTER_KEYS.map((k) => [k, query.get(k) ?? ""])),
  window: query.get("window") || "1m",
  windows: DEFAULT_WINDOWS,
  token: sessionStorage.getItem(TOKEN_KEY),
  paused: false,
  received: 0,
  dropped: 0,
  buffer: [], // the list's events, oldest first, never more than maxRows
  added: 0, // events added since the last frame (to keep a scrolled view still)
  frame: 0, // a pending requestAnimationFrame or setTimeout for render()
  lastRender: 0,
  ws: null,
  attempts: 0,
  reconnectTimer: 0,
  chart: { key: "", mode: "stats", step: 0, span: 60, asOf: 0, points: [] }, // see loadSeries
  statsBusy: false,
  seriesBusy: false,
  asking: false,
};

// ---------------------------------------------------------------- helpers

function authHeaders() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

function statsQuery(extra = {}) {
  const p = new URLSearchParams();
  for (const k of STATS_FILTER_KEYS) if (state.filter[k]) p.set(k, state.filter[k]);
  for (const [k, v] of Object.entries(extra)) p.set(k, v);
  return p;
}

async function getJSON(path) { // `path` is relative to the page, like the WebSocket URL
  const used = state.token;
  const res = await fetch(path, { headers: authHeaders(), cache: "no-store" });
  if (res.status === 401) {
    if (state.token === used) askToken(); // not for answers to a token already replaced
    throw new Error("token required");
  }
  if (!res.ok) {
    let detail = "";
    try { detail = (await res.json()).error ?? ""; } catch { /* not JSON */ }
    throw new Error(`HTTP ${res.status}${detail ? `: ${detail}` : ""}`);
  }
  return res.json();
}

function fmt(value, digits = 1) {
  if (value === null || value === undefined) return "–";
  if (Math.abs(value) >= 1e6) return `${(value / 1e6).toFixed(2)}M`;
  if (Math.abs(value) >= 1e4) return `${(value / 1e3).toFixed(1)}k`;
  return Number.isInteger(value) ? String(value) : value.toFixed(digits);
}

// A duration in the unit a person reads (850 ms, 8.1 s, 1.1 min), not "67.9k ms".
function duration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "–";
  if (Math.abs(ms) < 1000) return `${Number.isInteger(ms) ? ms : ms.toFixed(1)} ms`;
  if (Math.abs(ms) < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (Math.abs(ms) < 3600000) return `${(ms / 60000).toFixed(1)} min`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

const NO_AGENT = "(no agent)"; // the row of events that name no agent

function money(value) {
  if (value === null || value === undefined) return "–";
  return `$${value < 1 ? value.toFixed(4) : value.toFixed(2)}`;
}

function setOutput(name, value, text) {
  for (const el of document.querySelectorAll(`output[data-metric="${name}"]`)) {
    el.dataset.value = value === null || value === undefined ? "" : String(value);
    el.textContent = text;
  }
}

// ---------------------------------------------------------------- URL (shareable view)

function syncURL() {
  const p = new URLSearchParams();
  for (const k of FILTER_KEYS) if (state.filter[k]) p.set(k, state.filter[k]);
  if (state.window !== "1m") p.set("window", state.window);
  if (query.has("rows")) p.set("rows", String(state.maxRows));
  const qs = p.toString();
  history.replaceState(null, "", qs ? `?${qs}` : location.pathname);
}

// ---------------------------------------------------------------- token

function askToken() {
  const dialog = $("#token-dialog");
  if (state.asking || dialog.open) return;
  state.asking = true;
  $("#token-refused").hidden = !state.token;
  $("#token-input").value = "";
  dialog.showModal();
  $("#token-input").focus();
}

$("#token-form").addEventListener("submit", () => {
  const token = $("#token-input").value.trim();
  state.asking = false;
  if (!token) return;
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token); // this tab only; gone when it closes
  reconnectNow();
  loadSeries();
  refreshStats();
  refreshOptions();
});

// ---------------------------------------------------------------- connection state

function setConn(stateName, text) {
  const el = $("#conn");
  el.dataset.state = stateName;
  el.textContent = text;
}

function showCounters() {
  const r = $("#received");
  r.dataset.count = String(state.received);
  r.textContent = `${state.received.toLocaleString("en")} received`;
  const d = $("#dropped");
  d.dataset.count = String(state.dropped);
  d.textContent = `${state.dropped.toLocaleString("en")} dropped`;
  d.title = state.dropped ? "the sidecar dropped events this page could not take in time (tail.client_queue)" : "";
}

// ---------------------------------------------------------------- the tail

function tailURL() {
  const p = new URLSearchParams();
  for (const k of FILTER_KEYS) if (state.filter[k]) p.set(k, state.filter[k]);
  p.set("interval_ms", String(TAIL_INTERVAL_MS));
  if (state.token) p.set("token", state.token);
  // Relative to the page, so it also works behind a proxy that serves the sidecar under a path.
  const url = new URL("v1/tail", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.search = p.toString();
  return url.href;
}

function connect() {
  clearTimeout(state.reconnectTimer);
  let opened = false;
  const ws = new WebSocket(tailURL());
  state.ws = ws;
  setConn(state.attempts ? "reconnecting" : "connecting", state.attempts ? "reconnecting…" : "connecting…");

  ws.onopen = () => {
    opened = true;
    state.attempts = 0;
    $("#conn").dataset.synced = "true"; // the filter went in the URL
    if (state.paused) ws.send(JSON.stringify({ op: "pause" }));
    else setConn("connected", "connected");
  };

  ws.onmessage = (msg) => {
    let data;
    try { data = JSON.parse(msg.data); } catch { return; }
    if (Array.isArray(data.events)) {
      receive(data.events, data.dropped || 0);
    } else if (data.op === "subscribed") {
      $("#conn").dataset.synced = "true"; // the server now filters as the form says
    } else if (data.op === "paused" || data.op === "resumed") {
      setConn(data.op === "paused" ? "paused" : "connected", data.op === "paused" ? "connected · paused" : "connected");
    } else if (data.op === "error") {
      setConn("error", `server: ${data.error}`);
    }
  };

  ws.onclose = () => {
    if (state.ws !== ws) return; // replaced on purpose
    state.ws = null;
    state.attempts += 1;
    // 0.5 s, 1 s, 2 s, then every 4 s, with jitter so many tabs do not reconnect in step.
    const delay = Math.min(4000, 250 * 2 ** state.attempts) * (0.8 + Math.random() * 0.4);
    setConn("reconnecting", `disconnected · reconnecting in ${(delay / 1000).toFixed(1)} s`);
    state.reconnectTimer = setTimeout(connect, delay);
    // A handshake refused with 401 looks like any other failure to a page: ask /v1/stats.
    if (!opened) refreshStats();
  };
}

function reconnectNow() {
  const old = state.ws;
  state.ws = null;
  if (old) old.close();
  state.attempts = 0;
  connect();
}

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
}

function receive(events, dropped) {
  state.received += events.length;
  state.dropped += dropped;
  const buffer = state.buffer;
  for (const ev of events) buffer.push(ev);
  if (buffer.length > state.maxRows) buffer.splice(0, buffer.length - state.maxRows);
  state.added += events.length;
  scheduleRender();
}

// ---------------------------------------------------------------- the list

const list = $("#events");
const scroller = $("#scroller");
const rowEvent = new WeakMap();

function severityOf(ev) {
  if (typeof ev.severity === "string") return ev.severity;
  return typeof ev.type === "string" && ev.type.endsWith(".failed") ? "error" : "info";
}

function timeOf(ev) {
  let ms = NaN;
  if (typeof ev.timestamp === "number") ms = ev.timestamp * 1000;
  else if (typeof ev.timestamp === "string") ms = Date.parse(ev.timestamp);
  if (!Number.isFinite(ms) && typeof ev.received_at === "number") ms = ev.received_at * 1000;
  if (!Number.isFinite(ms)) return "";
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function tokensOf(ev) {
  if (Number.isFinite(ev.tokens)) return ev.tokens;
  const n = (Number.isFinite(ev.input_tokens) ? ev.input_tokens : 0) + (Number.isFinite(ev.output_tokens) ? ev.output_tokens : 0);
  return n || null;
}

const text = (v) => (v === null || v === undefined ? "" : String(v));

// A row is one line of monospace text with padded columns, not eight cells: at
// thousands of events a second every visible row changes on every refresh, and one
// text node per row costs the browser a fraction of the style, layout and paint of
// eight (bench/page_longtasks.py: the longest task's CPU time fell from 42 to 17 ms).
// [name, minimum width in characters, right-aligned, share of the spare width]
const COLUMNS = [
  ["time", 12, false, 0], ["sev", 8, false, 0], ["type", 16, false, 3], ["agent", 12, false, 3],
  ["workflow", 10, false, 2], ["duration", 10, true, 0], ["tokens", 7, true, 0], ["cost", 8, true, 0],
];
const DROP_FIRST = ["workflow", "tokens", "cost", "sev", "duration"]; // when the list is narrow
let columns = [];

function charWidth() {
  const probe = document.createElement("span");
  probe.className = "row";
  probe.style.cssText = "position:absolute;visibility:hidden;padding:0";
  probe.textContent = "0".repeat(100);
  document.body.append(probe);
  const width = probe.getBoundingClientRect().width / 100;
  probe.remove();
  return width || 7.5;
}

function layoutColumns() {
  const fits = Math.floor((scroller.clientWidth - 16) / charWidth());
  let cols = COLUMNS.map(([name, width, right, grow], index) => ({ name, width, right, grow, index }));
  const needed = () => cols.reduce((n, c) => n + c.width + 1, -1);
  for (const name of DROP_FIRST) {
    if (needed() <= fits) break;
    cols = cols.filter((c) => c.name !== name);
  }
  const spare = fits - needed();
  const shares = cols.reduce((n, c) => n + c.grow, 0);
  if (spare > 0 && shares) for (const c of cols) c.width += Math.floor((spare * c.grow) / shares);
  columns = cols;
  $("#events-head").textContent = line(COLUMNS.map(([name]) => name));
  for (const li of list.children) rowEvent.delete(li); // refill at the new widths
}

function line(cells) {
  return columns
    .map((c) => {
      let v = cells[c.index];
      if (v.length > c.width) v = `${v.slice(0, c.width - 1)}…`;
      return c.right ? v.padStart(c.width) : v.padEnd(c.width);
    })
    .join(" ");
}

function newRow() {
  const li = document.createElement("li");
  li.className = "row";
  li.tabIndex = 0;
  return li;
}

function fillRow(li, ev) {
  const severity = severityOf(ev);
  li.dataset.severity = severity;
  const cells = [
    timeOf(ev),
    severity,
    text(ev.type),
    text(ev.agent),
    text(ev.workflow),
    Number.isFinite(ev.duration_ms) ? duration(ev.duration_ms) : "",
    text(tokensOf(ev) ?? ""),
    Number.isFinite(ev.cost_usd) ? money(ev.cost_usd) : "",
  ];
  li.textContent = line(cells); // never innerHTML: event fields are untrusted
  rowEvent.set(li, ev);
}

// At thousands of events a second nobody reads rows 60 times a second; refreshing
// the list 10 times a second saves most of the style, layout and paint work.
const LIST_EVERY_MS = 100;

function scheduleRender(soon = false) {
  if (state.frame) return;
  const wait = soon ? 0 : state.lastRender + LIST_EVERY_MS - performance.now();
  if (wait > 0) {
    state.frame = setTimeout(() => { state.frame = requestAnimationFrame(render); }, wait);
  } else {
    state.frame = requestAnimationFrame(render);
  }
}

function render(now) {
  state.frame = 0;
  state.lastRender = now ?? performance.now();
  const buffer = state.buffer;
  const n = buffer.length;
  list.style.height = `${n * ROW_HEIGHT}px`;
  list.dataset.rows = String(n);
  list.setAttribute("aria-rowcount", String(n));
  // Someone reading further down keeps their rows in place while new ones arrive on top.
  if (state.added && scroller.scrollTop > 0) scroller.scrollTop += state.added * ROW_HEIGHT;
  state.added = 0;
  const top = scroller.scrollTop;
  const first = Math.min(n, Math.max(0, Math.floor(top / ROW_HEIGHT) - 2));
  const last = Math.min(n, Math.ceil((top + scroller.clientHeight) / ROW_HEIGHT) + 2);
  const want = Math.max(0, last - first);
  while (list.childElementCount < want) list.append(newRow());
  while (list.childElementCount > want) list.lastElementChild.remove();
  let li = list.firstElementChild;
  for (let i = first; i < last; i++, li = li.nextElementSibling) {
    const ev = buffer[n - 1 - i]; // newest first
    if (rowEvent.get(li) !== ev) fillRow(li, ev);
    if (li.dataset.index !== String(i)) {
      li.dataset.index = String(i);
      li.style.top = `${i * ROW_HEIGHT}px`;
    }
  }
  showCounters();
}

function clearList() {
  state.buffer = [];
  state.added = 0;
  scroller.scrollTop = 0;
  scheduleRender(true);
}

function focusRow(index) {
  const n = state.buffer.length;
  if (index < 0 || index >= n) return;
  const y = index * ROW_HEIGHT;
  if (y < scroller.scrollTop) scroller.scrollTop = y;
  else if (y + ROW_HEIGHT > scroller.scrollTop + scroller.clientHeight) scroller.scrollTop = y + ROW_HEIGHT - scroller.clientHeight;
  render();
  list.querySelector(`li[data-index="${index}"]`)?.focus();
}

function openDetail(li) {
  const ev = rowEvent.get(li);
  if (!ev) return;
  $("#detail-title").textContent = `${text(ev.type)}${ev.agent ? ` · ${ev.agent}` : ""}`;
  $("#detail-body").textContent = JSON.stringify(ev, null, 2);
  $("#detail").showModal();
}

scroller.addEventListener("scroll", () => scheduleRender(true), { passive: true });
window.addEventListener("resize", () => {
  layoutColumns();
  scheduleRender(true);
});
list.addEventListener("click", (e) => {
  const li = e.target.closest("li");
  if (li) openDetail(li);
});
list.addEventListener("keydown", (e) => {
  const li = e.target.closest("li");
  if (!li) return;
  const index = Number(li.dataset.index);
  if (e.key === "Enter" || e.key === " ") {
    e.preventDefault();
    openDetail(li);
  } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
    e.preventDefault();
    focusRow(index + (e.key === "ArrowDown" ? 1 : -1));
  } else if (e.key === "Home" || e.key === "End") {
    e.preventDefault();
    focusRow(e.key === "Home" ? 0 : state.buffer.length - 1);
  }
});

$("#pause").addEventListener("click", () => {
  state.paused = !state.paused;
  send({ op: state.paused ? "pause" : "resume" });
  const button = $("#pause");
  button.setAttribute("aria-pressed", String(state.paused));
  button.textContent = state.paused ? "Resume" : "Pause"; // the status follows the server's ack
});

$("#clear").addEventListener("click", clearList);

// ---------------------------------------------------------------- filters

const form = $("#filters");

function fillSelect(select, values, selected) {
  const wanted = new Set(values);
  if (selected) wanted.add(selected);
  const have = [...select.options].slice(1).map((o) => o.value);
  const next = [...wanted].sort();
  if (have.length === next.length && have.every((v, i) => v === next[i])) return;
  const options = next.map((v) => new Option(v, v, false, v === selected));
  select.replaceChildren(select.options[0], ...options);
  select.value = selected;
}

function showFilter() {
  for (const k of FILTER_KEYS) {
    const select = form.elements[k];
    if (k !== "severity") fillSelect(select, [], state.filter[k]);
    select.value = state.filter[k];
  }
}

form.addEventListener("submit", (e) => e.preventDefault());
form.addEventListener("change", (e) => {
  const name = e.target.name;
  if (name === "window") {
    state.window = e.target.value;
  } else if (FILTER_KEYS.includes(name)) {
    state.filter[name] = e.target.value;
    // The server clears this client's queue on subscribe; the list follows suit.
    clearList();
    $("#conn").dataset.synced = "false";
    const filter = Object.fromEntries(FILTER_KEYS.filter((k) => state.filter[k]).map((k) => [k, state.filter[k]]));
    send({ op: "subscribe", filter, interval_ms: TAIL_INTERVAL_MS });
  } else {
    return;
  }
  syncURL();
  loadSeries();
  refreshStats();
});

async function refreshOptions() {
  const largest = state.windows[state.windows.length - 1];
  for (const key of STATS_FILTER_KEYS) {
    try {
      const data = await getJSON(`v1/stats?${new URLSearchParams({ window: largest, by: key, limit: "200" })}`);
      fillSelect(form.elements[key], (data.groups || []).map((g) => g.key), state.filter[key]);
    } catch { /* shown by the stats panel */ }
  }
}

async function loadWindows() {
  try {
    const data = await getJSON("v1/stats");
    const names = Object.keys(data.windows || {});
    if (names.length) state.windows = names;
  } catch { /* keep the defaults */ }
  if (!state.windows.includes(state.window)) state.window = state.windows[0];
  const select = form.elements.window;
  select.replaceChildren(...state.windows.map((w) => new Option(w, w, false, w === state.window)));
  select.value = state.window;
}

// ---------------------------------------------------------------- stats and charts

async function refreshStats() {
  if (state.statsBusy) return;
  state.statsBusy = true;
  try {
    const [stats, byAgent] = await Promise.all([
      getJSON(`v1/stats?${statsQuery({ window: state.window })}`),
      getJSON(`v1/stats?${statsQuery({ window: state.window, by: "agent", limit: "20" })}`),
    ]);
    showStats(stats);
    showAgents(byAgent.groups || []);
    $("#stats-note").textContent = `${stats.exact === false ? "sampled" : "exact"} · as of ${stats.as_of ?? "?"}`;
  } catch (err) {
    $("#stats-note").textContent = `stats unavailable (${err.message})`;
  } finally {
    state.statsBusy = false;
  }
}

function showStats(s) {
  const d = s.duration_ms || {};
  const r = s.rates || {};
  $("#stats-window").textContent = s.window ?? state.window;
  setOutput("events_per_second", r.events_per_second, fmt(r.events_per_second, 2));
  setOutput("p50", d.p50, duration(d.p50));
  setOutput("p95", d.p95, duration(d.p95));
  setOutput("p99", d.p99, duration(d.p99));
  setOutput("tokens_per_second", r.tokens_per_second, fmt(r.tokens_per_second));
  setOutput("cost_per_hour_usd", r.cost_per_hour_usd, money(r.cost_per_hour_usd));
  setOutput("events", s.events, fmt(s.events));
  setOutput("errors", s.errors, fmt(s.errors));
  setOutput("error_rate", s.error_rate, s.error_rate === null || s.error_rate === undefined ? "–" : `${(s.error_rate * 100).toFixed(2)}%`);
  setOutput("cost_usd", s.cost_usd, money(s.cost_usd));
  if (state.chart.mode === "stats") { // no history from /v1/series: chart the window's figures as they come
    const chart = state.chart;
    const t = Date.parse(s.as_of) / 1000;
    if (!Number.isFinite(t)) return;
    chart.asOf = t;
    chart.points.push({
      t, end: t, events: r.events_per_second ?? null, p50: d.p50 ?? null, p95: d.p95 ?? null, p99: d.p99 ?? null,
      tokens: r.tokens_per_second ?? null, cost: r.cost_per_hour_usd ?? null,
    });
    if (chart.points.length > HISTORY) chart.points.shift();
    chart.span = Math.max(1, t - chart.points[0].t);
    drawCharts();
  }
}

function showAgents(groups) {
  const rows = groups.map((g) => {
    const tr = document.createElement("tr");
    tr.dataset.key = g.key ?? "";
    const d = g.duration_ms || {};
    const cells = [g.key ?? NO_AGENT, fmt(g.events), fmt(g.errors), duration(d.p50), duration(d.p95), duration(d.p99), fmt((g.tokens || {}).total ?? null), money(g.cost_usd)];
    cells.forEach((value, i) => {
      const cell = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) cell.scope = "row";
      cell.textContent = value;
      tr.append(cell);
    });
    return tr;
  });
  $("#agents tbody").replaceChildren(...rows);
}

// ---------------------------------------------------------------- chart history (/v1/series)

const UNIT_SECONDS = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };

function seconds(name) { // "15m" -> 900, as the sidecar writes window names
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(String(name ?? ""));
  return m ? Number(m[1]) * UNIT_SECONDS[m[2] ?? "s"] : NaN;
}

function chartKey() {
  return statsQuery({ window: state.window }).toString();
}

// One chart point per step: rates over the part of the step that has passed (the last step
// holds now), the step's exact percentiles. `end` places it on the time axis.
function stepPoint(p, step, asOf) {
  const end = Math.min(p.t + step, asOf);
  const elapsed = Math.max(1, end - p.t);
  const d = p.duration_ms || {};
  return {
    t: p.t, end, events: p.events / elapsed, p50: d.p50 ?? null, p95: d.p95 ?? null, p99: d.p99 ?? null,
    tokens: p.tokens / elapsed, cost: (p.cost_usd / elapsed) * 3600,
  };
}

function mergeSeries(doc) {
  const chart = state.chart;
  const asOf = Date.parse(doc.as_of) / 1000;
  if (!Number.isFinite(asOf)) return;
  chart.asOf = Math.max(chart.asOf, asOf);
  const byStart = new Map(chart.points.map((p) => [p.t, p]));
  for (const p of doc.points || []) byStart.set(p.t, stepPoint(p, chart.step, asOf));
  const from = chart.asOf - chart.span;
  chart.points = [...byStart.values()].filter((p) => p.end > from).sort((a, b) => a.t - b.t);
}

// The charts open with the window's history (and open again when the window or a filter
// changes); without it (a window longer than insights.retention, an older sidecar) they chart
// /v1/stats as it comes, as before.
async function loadSeries() {
  const key = chartKey();
  state.chart = { key, mode: "stats", step: 0, span: seconds(state.window) || 60, asOf: 0, points: [] };
  drawCharts();
  try {
    const doc = await getJSON(`v1/series?${key}`);
    if (state.chart.key !== key) return; // the view changed while it loaded
    Object.assign(state.chart, { mode: "series", step: seconds(doc.step), span: seconds(doc.window) || state.chart.span });
    mergeSeries(doc);
    drawCharts();
  } catch { /* charted from /v1/stats */ }
}

// Once a second: the last two steps (the one that just ended may have had late events).
async function refreshSeries() {
  const chart = state.chart;
  if (chart.mode !== "series" || state.seriesBusy) return;
  state.seriesBusy = true;
  try {
    const doc = await getJSON(`v1/series?${statsQuery({ window: String(2 * chart.step), step: String(chart.step) })}`);
    if (state.chart !== chart) return;
    mergeSeries(doc);
    drawCharts();
  } catch { /* the next tick tries again */ } finally {
    state.seriesBusy = false;
  }
}

const SERIES = {
  events: [["events", "--accent"]],
  duration: [["p50", "--ok"], ["p95", "--warning"], ["p99", "--error"]],
  tokens: [["tokens", "--accent"]],
  cost: [["cost", "--warning"]],
};

function drawCharts() {
  const css = getComputedStyle(document.documentElement);
  const { points, span, asOf } = state.chart;
  const from = asOf - span;
  for (const canvas of document.querySelectorAll("canvas[data-chart]")) {
    const series = SERIES[canvas.dataset.chart];
    let max = 0;
    for (const p of points) for (const [key] of series) if (p[key] > max) max = p[key];
    // what the chart holds, for people's tools and the tests: the points and the top of the scale
    canvas.dataset.points = String(points.length);
    canvas.dataset.from = points.length ? String(points[0].t) : "";
    canvas.dataset.max = String(max);
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (!w || !h) continue;
    if (canvas.width !== Math.round(w * dpr)) canvas.width = Math.round(w * dpr);
    if (canvas.height !== Math.round(h * dpr)) canvas.height = Math.round(h * dpr);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.strokeStyle = css.getPropertyValue("--line");
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(0, h - 0.5);
    ctx.lineTo(w, h - 0.5);
    ctx.stroke();
    if (!max) continue;
    for (const [key, color] of series) {
      ctx.strokeStyle = css.getPropertyValue(color);
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let drawing = false;
      for (const p of points) {
        const v = p[key];
        if (v === null) { drawing = false; continue; }
        const x = ((p.end - from) / span) * w; // time runs left to right over the window
        const y = h - 2 - (v / max) * (h - 6);
        if (drawing) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        drawing = true;
      }
      ctx.stroke();
    }
    ctx.fillStyle = css.getPropertyValue("--dim");
    ctx.font = "10px sans-serif";
    ctx.fillText(canvas.dataset.chart === "duration" ? duration(max) : fmt(max), 2, 10);
  }
}

// ---------------------------------------------------------------- start

async function start() {
  layoutColumns();
  showFilter();
  showCounters();
  syncURL();
  connect();
  await loadWindows();
  syncURL();
  loadSeries();
  refreshStats();
  refreshOptions();
  setInterval(refreshStats, STATS_EVERY_MS);
  setInterval(refreshSeries, STATS_EVERY_MS);
  setInterval(refreshOptions, OPTIONS_EVERY_MS);
  window.addEventListener("resize", drawCharts);
}

start();
