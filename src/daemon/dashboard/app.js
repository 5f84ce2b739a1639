/*
 * Kitbash dashboard: the whole front-end in one file, no framework.
 *
 * The daemon serves this file at /dashboard/app.js, next to index.html and
 * app.css, and the JSON API it reads under /api/. The page is a set of views, one
 * <main id="view-NAME"> each, chosen by the location hash (#/NAME or
 * #/query/ID). Each view has enter(arg) and leave() hooks that start and stop
 * its own polling or EventSource.
 *
 * Safety: every piece of API data reaches the DOM through textContent,
 * setAttribute or createTextNode (see h() and svg() below); innerHTML is never
 * used, so query texts and answers cannot inject markup.
 */
"use strict";

// ---------------------------------------------------------------------------
// DOM helpers
// ---------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

/**
 * Creates an HTML element. props: "class", "text" (textContent), "dataset"
 * (object; null/undefined values are skipped), "on<event>" (listener), any
 * other key is set as an attribute (skipped when null/undefined/false).
 * Children may be nodes, strings/numbers (as text nodes), arrays, or null.
 */
function h(tag, props, ...children) {
  const node = document.createElement(tag);
  setProps(node, props);
  appendChildren(node, children);
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** Creates an SVG element; same conventions as h(). */
function svg(tag, props, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setProps(node, props);
  appendChildren(node, children);
  return node;
}

function setProps(node, props) {
  if (!props) return;
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.setAttribute("class", value);
    else if (key === "text") node.textContent = String(value);
    else if (key === "dataset") {
      for (const [k, v] of Object.entries(value)) {
        if (v !== undefined && v !== null) node.dataset[k] = String(v);
      }
    } else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else node.setAttribute(key, value === true ? "" : String(value));
  }
}

function appendChildren(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces a node's children; same child conventions as h() (nulls skipped). */
function setChildren(node, ...children) {
  node.replaceChildren();
  appendChildren(node, children);
}

/** An SVG <title> (tooltip) element. */
const tip = (text) => svg("title", { text });

/** A link to a query's detail view. */
function queryLink(id, short = false) {
  if (!id) return h("span", { class: "muted", text: "–" });
  return h("a", {
    class: "qid",
    href: "#/query/" + encodeURIComponent(id),
    title: id,
    text: short ? shortId(id) : id,
  });
}

const shortId = (id) => (id.length > 13 ? id.slice(0, 8) + "…" : id);

/** A coloured pill; tone is one of ok, warn, bad, info, muted. */
const badge = (text, tone, title) => h("span", { class: "badge " + (tone || "muted"), text, title });

/** Replaces the rows of a table's <tbody> with rows, or one "empty" row. */
function fillTable(table, rows, emptyText) {
  const body = table.tBodies[0];
  if (rows.length === 0) {
    const cols = table.tHead ? table.tHead.rows[0].cells.length : 1;
    body.replaceChildren(h("tr", { class: "empty" }, h("td", { colspan: cols, text: emptyText || "nothing here" })));
  } else {
    body.replaceChildren(...rows);
  }
}

/** A key/value list (<dl>) from [label, value-node-or-text] pairs. */
function kvList(pairs, props) {
  const dl = h("dl", Object.assign({ class: "kv" }, props));
  for (const [k, v] of pairs) dl.append(h("dt", { text: k }), h("dd", null, v === undefined || v === null || v === "" ? "–" : v));
  return dl;
}

/** Calls fn at most once per `ms` after the last call (for text inputs). */
function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

const DASH = "–";
const pad = (n, w = 2) => String(n).padStart(w, "0");
const isNum = (v) => typeof v === "number" && Number.isFinite(v);

/** An integer with thousands separators. */
const fmtInt = (n) => (isNum(n) ? Math.round(n).toLocaleString("en-US") : DASH);

/** A confidence in [0, 1], always three decimals (0.899 must not read as 0.90). */
const fmtConf = (c) => (isNum(c) ? c.toFixed(3) : DASH);

/** Milliseconds with a precision that suits their size. */
function fmtMs(ms, unit = true) {
  if (!isNum(ms)) return DASH;
  const a = Math.abs(ms);
  const s = a < 1 ? ms.toFixed(3) : a < 10 ? ms.toFixed(2) : a < 1000 ? ms.toFixed(1) : Math.round(ms).toLocaleString("en-US");
  return unit ? s + " ms" : s;
}

const fmtPct = (r) => (isNum(r) ? (r * 100).toFixed(1) + "%" : DASH);

function fmtBytes(n) {
  if (!isNum(n)) return DASH;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : 1)) + " " + units[i];
}

/** Unix ms (fractional allowed) of an RFC 3339 string, keeping microseconds; NaN if unparsable. */
function parseTime(s) {
  if (typeof s !== "string") return NaN;
  const m = /^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$/.exec(s);
  if (!m) return Date.parse(s);
  const base = Date.parse(m[1] + (m[3] || "Z"));
  return base + (m[2] ? parseFloat(m[2]) * 1000 : 0);
}

/** Local HH:MM. */
function fmtHM(ms) {
  const d = new Date(ms);
  return pad(d.getHours()) + ":" + pad(d.getMinutes());
}

/** Local HH:MM:SS.mmm. */
function fmtHMSms(ms) {
  if (!isNum(ms)) return DASH;
  const d = new Date(ms);
  return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3);
}

/** Local YYYY-MM-DD HH:MM:SS.mmm of an RFC 3339 string (the raw string if unparsable). */
function fmtDateTime(s) {
  const ms = parseTime(s);
  if (!isNum(ms)) return s ? String(s) : DASH;
  const d = new Date(ms);
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + fmtHMSms(ms);
}

/** A short duration: 850 ms, 12s, 3m 4s, 2h 5m, 3d 4h. */
function fmtDuration(ms) {
  if (!isNum(ms)) return DASH;
  const neg = ms < 0;
  let s = Math.abs(ms) / 1000;
  let out;
  if (s < 1) out = Math.round(s * 1000) + " ms";
  else if (s < 60) out = Math.floor(s) + "s";
  else if (s < 3600) out = Math.floor(s / 60) + "m " + Math.floor(s % 60) + "s";
  else if (s < 86400) out = Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  else out = Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  return neg ? "-" + out : out;
}

/** "12s ago" for an RFC 3339 time, relative to the server's clock when known. */
function fmtAge(s) {
  const t = parseTime(s);
  if (!isNum(t)) return DASH;
  return fmtDuration(serverNow() - t) + " ago";
}

/** A time cell: local time, raw string and age on hover. */
const timeCell = (s) => h("span", { title: s ? s + " (" + fmtAge(s) + ")" : null, text: s ? fmtDateTime(s) : DASH });

/** Colour of an event kind: hits green, misses amber, failures red, others grey. */
function eventTone(ev) {
  switch (ev) {
    case "layer_hit":
    case "query_completed":
      return "ok";
    case "layer_miss":
    case "escalation":
      return "warn";
    case "layer_timeout":
    case "layer_error":
    case "query_failed":
    case "query_dead":
      return "bad";
    default:
      return "muted";
  }
}

/** Colour of a query status. */
function statusTone(st) {
  if (st === "answered" || st === "completed") return "ok";
  if (st === "unanswered") return "warn";
  if (st === "failed" || st === "dead") return "bad";
  if (ACTIVE_STATUSES.has(st)) return "info";
  return "muted";
}

/** Statuses of a query still being worked on (its detail view polls). */
const ACTIVE_STATUSES = new Set(["pending", "running", "processing"]);

/** Colour of a layer attempt's outcome. */
const outcomeTone = (o) => ({ hit: "ok", miss: "warn", timeout: "bad", error: "bad" })[o] || "muted";

// ---------------------------------------------------------------------------
// API access, the token, and the error banner
// ---------------------------------------------------------------------------

/** An error from the API: HTTP status (0 when unreachable), message, JSON body. */
class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
  toString() {
    return this.status ? this.status + ": " + this.message : this.message;
  }
}

const TOKEN_KEY = "kitbash.dashboard.token";
const getToken = () => sessionStorage.getItem(TOKEN_KEY) || "";

/**
 * Fetches JSON from the API. POSTs send `body` as JSON and the bearer token.
 * Non-2xx replies throw ApiError with the reply's {"error"} text.
 */
async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (method !== "GET") {
    const token = getToken();
    if (token) headers.Authorization = "Bearer " + token;
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "cannot reach the daemon (" + e.message + ")");
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!res.ok) {
    const msg = data && typeof data.error === "string" ? data.error : text.slice(0, 300) || res.statusText;
    throw new ApiError(res.status, msg, data);
  }
  return data;
}

/** A query string from an object, leaving out empty values. */
function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") p.set(k, String(v));
  const s = p.toString();
  return s ? "?" + s : "";
}

/** Current fetch errors by source; shown together in the #error banner. */
const errors = new Map();

function setError(source, err) {
  if (err) errors.set(source, String(err));
  else errors.delete(source);
  const banner = $("error");
  banner.hidden = errors.size === 0;
  banner.replaceChildren(...[...errors].map(([src, msg]) => h("div", null, h("strong", { text: src + ": " }), msg)));
}

/** Shows an action's outcome in an inline message element. */
function showMessage(node, text, tone) {
  node.hidden = false;
  node.className = "message " + tone;
  node.textContent = text;
}

// ---------------------------------------------------------------------------
// Polling helper: runs fn, then again `interval` ms after it finished
// ---------------------------------------------------------------------------

class Poller {
  /** interval: ms, or a function returning ms (read before each wait). */
  constructor(fn, interval) {
    this.fn = fn;
    this.interval = interval;
    this.timer = null;
    this.generation = 0;
  }
  start() {
    this.stop();
    this.run(++this.generation);
  }
  stop() {
    this.generation++;
    clearTimeout(this.timer);
  }
  async run(gen) {
    try {
      await this.fn();
    } catch (e) {
      console.error(e);
    }
    if (gen !== this.generation) return; // stopped or restarted meanwhile
    const ms = typeof this.interval === "function" ? this.interval() : this.interval;
    this.timer = setTimeout(() => this.run(gen), ms);
  }
}

// ---------------------------------------------------------------------------
// Shared state: the latest overview (header, actions flag, layer names)
// ---------------------------------------------------------------------------

const app = {
  overview: null, // last /api/overview reply
  clockSkew: 0, // server now - browser now, ms
  actions: null, // whether actions are enabled (null until known)
  view: null, // name of the current view
};

const serverNow = () => Date.now() + app.clockSkew;

/** Shows or hides everything that depends on overview.actions. */
function setActions(enabled) {
  const changed = app.actions !== enabled;
  app.actions = enabled;
  $("readonly-note").hidden = enabled;
  $("token-box").hidden = !enabled;
  document.body.dataset.actions = enabled ? "1" : "0";
  // Views that render action buttons draw them again from their last data.
  if (changed && app.view && views[app.view].redraw) views[app.view].redraw();
}

/** The header's readiness dot: state is ok, warn or bad. */
function setIndicator(state, text) {
  const ind = $("status-indicator");
  ind.dataset.state = state;
  $("status-text").textContent = text;
}

/** Fills the header from an overview (or a 503 body with instance/ready/redis_ok). */
function renderHeader(o) {
  if (o.instance) {
    $("instance").textContent = o.instance;
    document.title = "Kitbash · " + o.instance;
  }
  if (o.version) $("version").textContent = "v" + o.version;
  if (o.redis_ok === false) setIndicator("bad", "redis unreachable");
  else if (o.ready === false) setIndicator("warn", "not ready");
  else if (o.ready) setIndicator("ok", "live · ready");
}

/** Fetches the overview; renders header and (cheaply, even when hidden) the overview view. */
async function refreshOverview() {
  try {
    const o = await api("/api/overview");
    app.overview = o;
    const now = parseTime(o.now);
    if (isNum(now)) app.clockSkew = now - Date.now();
    renderHeader(o);
    setActions(Boolean(o.actions));
    renderOverview(o);
    feedView.setLayerOptions((o.layers || []).map((l) => l.layer));
    setError("overview", null);
  } catch (e) {
    if (e.body && e.body.instance) renderHeader(e.body);
    else setIndicator("bad", e.status ? "error " + e.status : "offline");
    setError("overview", e);
  }
  // Readiness hook for automated browser tests: the first overview is on screen.
  document.body.dataset.ready = "1";
}

// ---------------------------------------------------------------------------
// 1. Overview view
// ---------------------------------------------------------------------------

/** Sets a tile's value, with an optional smaller second part. */
function setTile(id, main, sub) {
  setChildren($(id), h("span", { text: main }), sub ? h("span", { class: "tile-sub", text: " " + sub }) : null);
}

function renderOverview(o) {
  setTile("overview-queue-len", fmtInt(o.queue_len));
  // Per priority lane, highest first (older servers send no breakdown).
  const lanes = o.queue_by_lane || {};
  $("overview-queue-lanes").textContent = ["critical", "high", "normal", "low"]
    .filter((l) => l in lanes)
    .map((l) => l + " " + fmtInt(lanes[l]))
    .join(" · ");
  setTile("overview-in-flight", fmtInt(o.in_flight));
  setTile("overview-dead-len", fmtInt(o.dead_len));
  $("overview-dead-len").closest(".tile").dataset.tone = o.dead_len > 0 ? "bad" : "";
  setTile("overview-grains", fmtInt(o.grains), "(" + fmtInt(o.crystallized) + " crystallised)");
  const mem = o.redis_memory;
  if (mem) {
    const max = mem.maxmemory_bytes ? fmtBytes(mem.maxmemory_bytes) : "no limit";
    const servers = mem.servers > 1 ? ", over " + mem.servers + " servers" : "";
    setTile("overview-redis-memory", fmtBytes(mem.used_bytes), "(peak " + fmtBytes(mem.peak_bytes) + ", max " + max + servers + ")");
  } else {
    $("overview-redis-memory").replaceChildren(h("span", { class: "tile-error", text: o.redis_memory_error || "unknown" }));
  }

  // Layers table.
  fillTable(
    $("overview-layers"),
    (o.layers || []).map((l) => {
      const st = l.stats || {};
      const c = st.counters || {};
      const w = st.window || {};
      return h(
        "tr",
        { dataset: { layer: l.layer } },
        h("td", null, h("strong", { text: l.layer }), l.kind ? h("span", { class: "muted small", text: " " + l.kind }) : null),
        h("td", null, l.enabled ? badge("enabled", "ok") : badge("disabled", "muted")),
        h("td", { class: "num", text: fmtConf(l.min_confidence) }),
        h("td", { class: "num" }, l.kind === "grains" ? h("span", { class: "muted", text: "n/a", title: "layer0 runs in the daemon" }) : liveWorkers(l)),
        h("td", { class: "num", text: fmtInt(c.attempts) }),
        h("td", { class: "num", text: fmtPct(st.hit_rate) }),
        h("td", { class: "num" + (c.timeouts > 0 ? " warn-text" : ""), text: fmtInt(c.timeouts) }),
        h("td", { class: "num" + (c.errors > 0 ? " bad-text" : ""), text: fmtInt(c.errors) }),
        h("td", { class: "num", title: w.count ? w.count + " samples; p99 " + fmtMs(w.p99) : "no samples", text: fmtMs(w.p50, false) + " / " + fmtMs(w.p95, false) })
      );
    }),
    "no layers"
  );

  // Daemons, then workers.
  const procs = [...(o.daemons || []), ...(o.workers || [])];
  fillTable(
    $("overview-processes"),
    procs.map((p) =>
      h(
        "tr",
        { dataset: { name: p.name, role: p.role } },
        h("td", { title: [p.pid ? "pid " + p.pid : "", p.started_at ? "started " + fmtDateTime(p.started_at) : ""].filter(Boolean).join(", ") || null },
          h("span", { class: "mono nowrap", text: p.name }), p.name === o.instance ? h("span", { class: "muted small", text: " (this)" }) : null),
        h("td", { text: p.role + (p.kind ? " · " + p.kind : "") }),
        h("td", { text: p.layer || (p.live_layers && p.live_layers.length ? p.live_layers.join(", ") : DASH) }),
        h("td", null, p.healthy ? badge("healthy", "ok") : badge("unhealthy", "bad"), p.reason ? h("span", { class: "small reason", text: " " + p.reason }) : null),
        h("td", null, h("div", { class: "counters" }, Object.entries(p.counters || {}).map(([k, v]) => h("code", { text: k + "=" + (isNum(v) ? fmtInt(v) : String(v)) })))),
        h("td", { class: "num nowrap", title: p.updated_at, text: fmtAge(p.updated_at) })
      )
    ),
    "no live daemons or workers"
  );
}

/** Live worker count, highlighted when an enabled worker layer has none. */
function liveWorkers(l) {
  const n = l.live_workers;
  return h("span", { class: l.enabled && !n ? "bad-text" : null, text: fmtInt(n) });
}

/** A row of a query list (overview "recent" and the query search). */
function queryRow(q, withAnswer) {
  return h(
    "tr",
    {
      dataset: { queryId: q.query_id },
      class: "clickable",
      onclick: (ev) => {
        if (!ev.target.closest("a")) location.hash = "#/query/" + encodeURIComponent(q.query_id);
      },
    },
    h("td", null, queryLink(q.query_id, true)),
    h("td", { class: "text-cell", title: q.query_text, text: q.query_text }),
    h("td", null, badge(q.status, statusTone(q.status))),
    h("td", { text: q.answered_by || DASH }),
    h("td", { class: "num", text: fmtConf(q.confidence) }),
    withAnswer ? h("td", { class: "text-cell", title: q.answer || null, text: q.answer || DASH }) : null,
    h("td", { class: "num nowrap", title: q.created_at, text: fmtAge(q.created_at) })
  );
}

async function refreshRecent() {
  try {
    const r = await api("/api/queries" + qs({ limit: 10 }));
    fillTable($("overview-recent"), (r.queries || []).map((q) => queryRow(q, false)), "no recent queries");
    setError("recent queries", null);
  } catch (e) {
    setError("recent queries", e);
  }
}

const overviewPoller = new Poller(refreshOverview, () => (app.view === "overview" ? 2000 : 10000));
const recentPoller = new Poller(refreshRecent, 2000);

const overviewView = {
  enter() {
    overviewPoller.start(); // immediately, then every 2 s while shown
    recentPoller.start();
  },
  leave() {
    recentPoller.stop();
    setError("recent queries", null);
    // overviewPoller keeps running (slower) for the header.
  },
};

// ---------------------------------------------------------------------------
// Charts: tiny inline-SVG helpers shared by the layer cards
// ---------------------------------------------------------------------------

/** A "nice" upper bound and tick step for 0..max with about n ticks. */
function niceScale(max, n = 4) {
  if (!(max > 0)) return { max: 1, step: 0.25 };
  const raw = max / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw);
  return { max: Math.ceil(max / step - 1e-9) * step, step };
}

/** A compact tick label. */
function fmtTick(v) {
  if (v >= 1000) return (v / 1000).toFixed(v % 1000 ? 1 : 0) + "k";
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toFixed(3)));
}

/**
 * Draws an empty chart frame: y grid and labels (left), optional right axis
 * labels, x time ticks (HH:MM). Returns {node, x(t), y(v), yR(v), plot}.
 */
function chartFrame({ fromMs, toMs, yMax, yLabel, right }) {
  const W = 600, H = 220;
  const m = { l: 46, r: right ? 42 : 24, t: 24, b: 26 };
  const pw = W - m.l - m.r, ph = H - m.t - m.b;
  const span = Math.max(toMs - fromMs, 1);
  const x = (t) => m.l + ((t - fromMs) / span) * pw;
  const ys = niceScale(yMax);
  const y = (v) => m.t + ph - (v / ys.max) * ph;
  const yR = (r) => m.t + ph - r * ph; // right axis: 0..1
  const node = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "xMidYMid meet", role: "img" });

  // Horizontal grid lines and left labels.
  for (let v = 0; v <= ys.max + 1e-9; v += ys.step) {
    node.append(
      svg("line", { class: "grid-line", x1: m.l, x2: W - m.r, y1: y(v), y2: y(v) }),
      svg("text", { class: "axis-label", x: m.l - 6, y: y(v) + 4, "text-anchor": "end", text: fmtTick(v) })
    );
  }
  if (right) {
    for (const r of [0, 0.5, 1]) {
      node.append(svg("text", { class: "axis-label", x: W - m.r + 6, y: yR(r) + 4, text: r * 100 + "%" }));
    }
  }
  node.append(svg("text", { class: "axis-title", x: 4, y: 10, text: yLabel }));

  // Time ticks: a step in minutes giving at most ~7 labels, aligned to it.
  const minutes = span / 60000;
  const stepMin = [1, 2, 5, 10, 15, 30, 60, 120, 360, 720, 1440].find((s) => minutes / s <= 7) || 1440;
  const stepMs = stepMin * 60000;
  for (let t = Math.ceil(fromMs / stepMs) * stepMs; t <= toMs; t += stepMs) {
    node.append(
      svg("line", { class: "tick", x1: x(t), x2: x(t), y1: m.t + ph, y2: m.t + ph + 4 }),
      svg("text", { class: "axis-label", x: x(t), y: H - 8, "text-anchor": "middle", text: fmtHM(t) })
    );
  }
  node.append(svg("line", { class: "axis-line", x1: m.l, x2: W - m.r, y1: m.t + ph, y2: m.t + ph }));
  return { node, x, y, yR, plot: { left: m.l, right: W - m.r, top: m.t, bottom: m.t + ph, width: pw } };
}

/**
 * Draws a line through [x, y] points where y may be null (a gap): separate
 * path segments, and a dot for a point with no neighbour.
 */
function gappyLine(parent, pts, cls, title) {
  let seg = [];
  const flush = () => {
    if (seg.length === 1) parent.append(svg("circle", { class: cls + " dot", cx: seg[0][0], cy: seg[0][1], r: 2.2 }, tip(title)));
    else if (seg.length > 1) {
      const d = seg.map(([px, py], i) => (i ? "L" : "M") + px.toFixed(1) + " " + py.toFixed(1)).join(" ");
      parent.append(svg("path", { class: cls, d }, tip(title)));
    }
    seg = [];
  };
  for (const [px, py] of pts) {
    if (py === null) flush();
    else seg.push([px, py]);
  }
  flush();
}

/** A legend row of [class, label] swatches. */
const legend = (items) =>
  h("div", { class: "legend" }, items.map(([cls, label, line]) => h("span", null, h("i", { class: "swatch " + cls + (line ? " line" : "") }), label)));

/** Counts chart: stacked bars hits/misses/timeouts/errors per bucket, and the hit rate line. */
function countsChart(points, fromMs, toMs, bucketMs) {
  const known = points.filter((p) => p.attempts !== null && p.attempts !== undefined);
  const total = (p) => (p.hits || 0) + (p.misses || 0) + (p.timeouts || 0) + (p.errors || 0);
  // At least 0..4 so that an idle layer gets whole-number ticks.
  const yMax = Math.max(4, ...known.map((p) => Math.max(p.attempts || 0, total(p))));
  const per = bucketMs === 60000 ? "min" : bucketMs / 1000 + " s";
  const f = chartFrame({ fromMs, toMs, yMax, yLabel: "attempts / " + per, right: true });
  const bw = Math.max(1, (f.plot.width * bucketMs) / Math.max(toMs - fromMs, 1) - 1);
  const bars = svg("g", { class: "bars" });
  const kinds = [["hits", "c-hit"], ["misses", "c-miss"], ["timeouts", "c-timeout"], ["errors", "c-error"]];
  for (const p of known) {
    let base = 0;
    const label = fmtHM(p.t_ms) + " — " + kinds.map(([k]) => k + " " + (p[k] || 0)).join(", ") + ", attempts " + p.attempts;
    for (const [k, cls] of kinds) {
      const v = p[k] || 0;
      if (v <= 0) continue;
      bars.append(svg("rect", { class: cls, x: f.x(p.t_ms) + 0.5, width: bw, y: f.y(base + v), height: Math.max(0.5, f.y(base) - f.y(base + v)) }, tip(label)));
      base += v;
    }
  }
  f.node.append(bars);
  // Hit rate: hits over attempts (or over the four outcomes when attempts is 0).
  const rate = points.map((p) => {
    const denom = p.attempts || total(p);
    return [f.x(p.t_ms) + bw / 2, p.attempts === null || p.attempts === undefined || !denom ? null : f.yR(Math.min(1, (p.hits || 0) / denom))];
  });
  gappyLine(f.node, rate, "l-rate", "hit rate");
  return h("figure", null, f.node, legend([["c-hit", "hits"], ["c-miss", "misses"], ["c-timeout", "timeouts"], ["c-error", "errors"], ["l-rate", "hit rate (right)", true]]));
}

/** Latency chart: p50/p95/p99 lines in ms; buckets without samples are gaps. */
function latencyChart(points, fromMs, toMs, bucketMs) {
  const vals = points.flatMap((p) => [p.p50, p.p95, p.p99]).filter(isNum);
  const f = chartFrame({ fromMs, toMs, yMax: Math.max(0.001, ...vals), yLabel: "latency ms" });
  const cx = (p) => f.x(p.t_ms) + (f.plot.width * bucketMs) / Math.max(toMs - fromMs, 1) / 2;
  for (const [k, cls] of [["p99", "l-p99"], ["p95", "l-p95"], ["p50", "l-p50"]]) {
    gappyLine(f.node, points.map((p) => [cx(p), isNum(p[k]) ? f.y(p[k]) : null]), cls, k);
  }
  // Invisible hover targets per bucket with the numbers.
  for (const p of points) {
    if (!p.samples) continue;
    f.node.append(
      svg("rect", { class: "hover", x: f.x(p.t_ms), width: Math.max(1, (f.plot.width * bucketMs) / Math.max(toMs - fromMs, 1)), y: f.plot.top, height: f.plot.bottom - f.plot.top },
        tip(`${fmtHM(p.t_ms)} — ${p.samples} samples: p50 ${fmtMs(p.p50)}, p95 ${fmtMs(p.p95)}, p99 ${fmtMs(p.p99)}`))
    );
  }
  return h("figure", null, f.node, legend([["l-p50", "p50", true], ["l-p95", "p95", true], ["l-p99", "p99", true]]));
}

// ---------------------------------------------------------------------------
// 2. Layers view: per-layer history charts
// ---------------------------------------------------------------------------

const layersView = {
  poller: new Poller(() => layersView.refresh(), 15000),
  enter() {
    this.poller.start();
  },
  leave() {
    this.poller.stop();
    setError("layer history", null);
  },
  async refresh() {
    try {
      const r = await api("/api/layers/history" + qs({ minutes: 60, bucket_s: 60 }));
      this.render(r);
      setError("layer history", null);
    } catch (e) {
      setError("layer history", e);
    }
  },
  render(r) {
    const bucketMs = (r.bucket_s || 60) * 1000;
    // to_ms is the end of the window; the last bucket starts at most there.
    const toMs = Math.max(r.to_ms, ...(r.layers || []).flatMap((l) => l.points.map((p) => p.t_ms + bucketMs)));
    const since = isNum(r.counters_since_ms) ? "counts since " + fmtHM(r.counters_since_ms) : null;
    const cards = (r.layers || []).map((l) => {
      const pts = l.points || [];
      const sum = (k) => pts.reduce((a, p) => a + (p[k] || 0), 0);
      const attempts = sum("attempts");
      return h(
        "section",
        { class: "layer-card", dataset: { layer: l.layer } },
        h("header", null,
          h("h2", { text: l.layer }),
          h("span", { class: "muted small", text: `${fmtInt(attempts)} attempts · ${fmtInt(sum("hits"))} hits · ${fmtInt(sum("timeouts"))} timeouts · ${fmtInt(sum("errors"))} errors in the window` })),
        h("div", { class: "charts" }, countsChart(pts, r.from_ms, toMs, bucketMs), latencyChart(pts, r.from_ms, toMs, bucketMs)),
        since ? h("p", { class: "muted small since", text: since }) : null
      );
    });
    $("layers-cards").replaceChildren(...(cards.length ? cards : [h("p", { class: "muted", text: "no layers" })]));
  },
};

// ---------------------------------------------------------------------------
// 3. Live feed view: history, then an EventSource with the current filters
// ---------------------------------------------------------------------------

const FEED_MAX_ROWS = 500;

const feedView = {
  es: null, // the open EventSource, if any
  generation: 0, // bumped on every (re)connect; stale callbacks compare it
  lastId: null, // newest event id shown or buffered: where a new stream resumes
  paused: false,
  buffer: [], // events received while paused
  seen: new Set(), // ids shown, to drop duplicates
  eventKindsLoaded: false,
  retryTimer: null,

  init() {
    const restart = () => app.view === "feed" && this.connect();
    $("feed-filter-layer").addEventListener("change", restart);
    $("feed-filter-event").addEventListener("change", restart);
    $("feed-filter-query").addEventListener("input", debounce(restart, 400));
    $("feed-pause").addEventListener("click", () => this.togglePause());
  },
  enter() {
    this.loadEventKinds();
    this.connect();
  },
  leave() {
    this.close();
    setError("feed", null);
    setError("event kinds", null); // retried on the next visit
  },

  /** Fills the layer filter with the overview's layers, keeping the choice. */
  setLayerOptions(names) {
    const sel = $("feed-filter-layer");
    const have = [...sel.options].slice(1).map((o) => o.value);
    if (have.join() === names.join()) return;
    const chosen = sel.value;
    sel.replaceChildren(h("option", { value: "", text: "all" }), ...names.map((n) => h("option", { value: n, text: n })));
    sel.value = names.includes(chosen) ? chosen : "";
  },

  async loadEventKinds() {
    if (this.eventKindsLoaded) return;
    try {
      const r = await api("/api/events");
      const sel = $("feed-filter-event");
      const chosen = sel.value;
      sel.replaceChildren(h("option", { value: "", text: "all" }), ...(r.events || []).map((n) => h("option", { value: n, text: n })));
      sel.value = chosen;
      this.eventKindsLoaded = true;
      setError("event kinds", null);
    } catch (e) {
      setError("event kinds", e);
    }
  },

  filters() {
    return {
      layer: $("feed-filter-layer").value,
      event: $("feed-filter-event").value,
      query: $("feed-filter-query").value.trim(),
    };
  },

  setStatus(live) {
    $("feed-status").textContent = live ? "live" : "reconnecting…";
    $("feed-indicator").dataset.state = live ? "ok" : "bad";
  },

  close() {
    this.generation++;
    clearTimeout(this.retryTimer);
    if (this.es) this.es.close();
    this.es = null;
    this.setStatus(false);
  },

  /**
   * (Re)starts the feed for the current filters: loads the last 100
   * matching events, then follows the stream from the newest of them
   * (`after`), so that nothing written in between is missed.
   */
  async connect() {
    this.close();
    const gen = this.generation;
    const f = this.filters();
    $("feed-list").replaceChildren();
    this.seen.clear();
    this.buffer = [];
    this.lastId = null;
    this.updatePauseButton();
    try {
      const r = await api("/api/feed" + qs({ count: 100, ...f }));
      if (gen !== this.generation) return;
      for (const ev of r.events || []) this.add(ev, false);
      setError("feed", null);
    } catch (e) {
      if (gen !== this.generation) return;
      setError("feed", e);
    }
    this.openStream(f, gen);
  },

  openStream(f, gen) {
    // On its own reconnects the browser sends Last-Event-ID, which the
    // server prefers to `after`.
    const es = new EventSource("/api/feed/stream" + qs({ ...f, after: this.lastId }));
    this.es = es;
    this.setStatus(false);
    es.onopen = () => gen === this.generation && this.setStatus(true);
    es.onerror = () => {
      if (gen !== this.generation) return;
      this.setStatus(false);
      // The browser retries by itself unless the reply was not an event
      // stream (an error status: readyState is CLOSED): retry by hand.
      if (es.readyState === EventSource.CLOSED) {
        this.retryTimer = setTimeout(() => gen === this.generation && this.openStream(f, gen), 3000);
      }
    };
    const onEvent = (msg) => {
      if (gen !== this.generation) return;
      let ev;
      try {
        ev = JSON.parse(msg.data);
      } catch (_) {
        return;
      }
      if (!ev.id && msg.lastEventId) ev.id = msg.lastEventId;
      this.receive(ev);
    };
    es.addEventListener("decision", onEvent);
    es.onmessage = onEvent; // events without an `event:` line
    // The server skipped ahead: decisions came faster than a page can follow.
    es.addEventListener("skipped", (msg) => {
      if (gen !== this.generation) return;
      if (msg.lastEventId) this.lastId = msg.lastEventId;
      let why = "";
      try {
        why = JSON.parse(msg.data).reason || "";
      } catch (_) {
        why = msg.data;
      }
      this.notice("decisions skipped: " + why + " (a filter shows fewer)");
    });
  },

  /** A line on top of the list that is not a decision (skips). */
  notice(text) {
    if (this.paused) return;
    const list = $("feed-list");
    const first = list.firstElementChild;
    // One notice for a run of skips, kept current.
    if (first && first.classList.contains("feed-skip")) first.remove();
    list.prepend(h("div", { class: "feed-row feed-skip", text }));
    while (list.childElementCount > FEED_MAX_ROWS) list.lastElementChild.remove();
  },

  /** A stream event: shown, or buffered while paused. */
  receive(ev) {
    if (ev.id) this.lastId = ev.id;
    if (this.paused) {
      this.buffer.push(ev);
      if (this.buffer.length > FEED_MAX_ROWS) this.buffer.shift();
      this.updatePauseButton();
    } else this.add(ev, true);
  },

  togglePause() {
    this.paused = !this.paused;
    if (!this.paused) {
      const pending = this.buffer;
      this.buffer = [];
      for (const ev of pending) this.add(ev, true);
    }
    this.updatePauseButton();
  },

  updatePauseButton() {
    const btn = $("feed-pause");
    btn.textContent = this.paused ? `Resume (${this.buffer.length} buffered)` : "Pause";
    btn.classList.toggle("active", this.paused);
  },

  /** Puts one event on top of the list, dropping the oldest beyond 500. */
  add(ev, fresh) {
    if (ev.id) {
      if (this.seen.has(ev.id)) return;
      this.seen.add(ev.id);
      this.lastId = ev.id;
    }
    const list = $("feed-list");
    list.prepend(feedRow(ev, fresh));
    while (list.childElementCount > FEED_MAX_ROWS) {
      const gone = list.lastElementChild;
      this.seen.delete(gone.dataset.eventId);
      gone.remove();
    }
  },
};

/** The time of an event in unix ms: t_ms, else parsed ts. */
const eventMs = (ev) => (isNum(ev.t_ms) ? ev.t_ms : parseTime(ev.ts));

function feedRow(ev, fresh) {
  return h(
    "div",
    {
      class: "feed-row" + (fresh ? " fresh" : ""),
      dataset: { eventId: ev.id, event: ev.event, layer: ev.layer, queryId: ev.query_id },
    },
    h("span", { class: "mono", title: ev.ts, text: fmtHMSms(eventMs(ev)) }),
    h("span", null, badge(ev.event, eventTone(ev.event))),
    h("span", { text: ev.layer || "" }),
    h("span", null, ev.query_id ? queryLink(ev.query_id, true) : ""),
    h("span", { class: "num", text: isNum(ev.confidence) ? fmtConf(ev.confidence) : "" }),
    h("span", { class: "num", text: isNum(ev.latency_ms) ? fmtMs(ev.latency_ms) : "" }),
    h("span", { class: "ellipsis", title: ev.worker || null, text: ev.worker || "" }),
    h("span", { class: "ellipsis", title: ev.reason || null, text: ev.reason || "" }),
    h("span", { class: "ellipsis mono", title: ev.grain || null, text: ev.grain || "" })
  );
}

// ---------------------------------------------------------------------------
// 4. Query view: search, list, and one query's detail with its waterfall
// ---------------------------------------------------------------------------

const queryView = {
  id: null, // the query shown, or null for the list
  generation: 0,
  timer: null,
  prefetched: null, // {id, data} found by the search, shown without a second fetch

  init() {
    $("query-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.search();
    });
  },
  enter(arg) {
    this.id = arg;
    if (arg) {
      $("query-results-panel").hidden = true;
      $("query-detail").hidden = false;
      this.loadDetail(arg);
    } else {
      $("query-detail").hidden = true;
      $("query-results-panel").hidden = false;
      this.list($("query-search").value.trim());
    }
  },
  leave() {
    this.generation++;
    clearTimeout(this.timer);
    setError("query", null);
  },

  /** Enter/click: an id that exists opens it; anything else is a text search. */
  async search() {
    const text = $("query-search").value.trim();
    if (text && !/\s/.test(text)) {
      try {
        const data = await api("/api/queries/" + encodeURIComponent(text));
        this.prefetched = { id: text, data };
        const target = "#/query/" + encodeURIComponent(text);
        if (location.hash === target) this.enter(text);
        else location.hash = target;
        return;
      } catch (e) {
        if (e.status !== 404) setError("query", e);
      }
    }
    if (this.id) location.hash = "#/query"; // enter() lists with the box's text
    else this.list(text);
  },

  async list(text) {
    const gen = ++this.generation;
    $("query-search-note").textContent = "searching…";
    try {
      const r = await api("/api/queries" + qs({ text, limit: 50 }));
      if (gen !== this.generation) return;
      const rows = (r.queries || []).map((q) => queryRow(q, true));
      fillTable($("query-results"), rows, text ? "no recent query contains “" + text + "”" : "no recent queries");
      $("query-search-note").textContent =
        (text ? `${rows.length} matching “${text}”` : `${rows.length} most recent`) + (r.scanned ? ` (among the last ${fmtInt(r.scanned)} events)` : "");
      setError("query", null);
    } catch (e) {
      if (gen !== this.generation) return;
      $("query-search-note").textContent = "";
      setError("query", e);
    }
  },

  /** Fetches and shows one query; polls every second while it is not finished. */
  async loadDetail(id) {
    const gen = ++this.generation;
    clearTimeout(this.timer);
    const detail = $("query-detail");
    let data;
    if (this.prefetched && this.prefetched.id === id) {
      data = this.prefetched.data;
      this.prefetched = null;
    } else {
      if (!detail.dataset.queryId || detail.dataset.queryId !== id) detail.replaceChildren(h("p", { class: "muted", text: "loading…" }));
      try {
        data = await api("/api/queries/" + encodeURIComponent(id));
      } catch (e) {
        if (gen !== this.generation) return;
        if (e.status === 404) {
          detail.dataset.queryId = id;
          detail.replaceChildren(h("h2", { class: "mono", text: id }), h("p", { class: "notice", text: "no such query (expired or never existed)" }));
          setError("query", null);
        } else {
          setError("query", e);
          this.timer = setTimeout(() => this.loadDetail(id), 3000);
        }
        return;
      }
      if (gen !== this.generation) return;
    }
    setError("query", null);
    renderQueryDetail(detail, id, data);
    const st = data.state && data.state.status;
    if (ACTIVE_STATUSES.has(st)) this.timer = setTimeout(() => gen === this.generation && this.loadDetail(id), 1000);
  },
};

function renderQueryDetail(detail, id, data) {
  const s = data.state;
  const events = data.events || [];
  detail.dataset.queryId = id;
  const parts = [];

  // Title: the question, the id, the status.
  parts.push(
    h("div", { class: "detail-head" },
      h("h2", { id: "query-question", class: "question", text: s ? s.query_text : "(state expired: events only)" }),
      h("div", { class: "muted small" }, h("span", { class: "mono", text: id }), " ",
        h("span", { id: "query-status" }, s ? badge(s.status, statusTone(s.status)) : badge("expired", "muted")),
        s && ACTIVE_STATUSES.has(s.status) ? h("span", { class: "small", text: " refreshing every second…" }) : null))
  );

  if (s) {
    // Answer and its provenance: layer, confidence, source, then any other field.
    const a = s.answer;
    const answer = h("div", { id: "query-answer", class: "answer" + (a ? "" : " muted") }, a ? a.text : "no answer");
    const prov = [];
    if (a) {
      prov.push(["layer", a.layer], ["confidence", fmtConf(a.confidence)], ["source", a.source]);
      for (const [k, v] of Object.entries(a)) {
        if (["text", "layer", "confidence", "source"].includes(k)) continue;
        flattenField(k, v, prov);
      }
    }
    const source = a ? kvList(prov, { id: "query-source" }) : h("div", { id: "query-source", class: "muted", text: DASH });

    const created = parseTime(s.created_at), started = parseTime(s.started_at), completed = parseTime(s.completed_at);
    const total = isNum(completed) && isNum(created) ? fmtMs(completed - created) : isNum(created) ? fmtDuration(serverNow() - created) + " so far" : DASH;
    const times = kvList(
      [
        ["created", timeCell(s.created_at)],
        ["started", s.started_at ? h("span", null, timeCell(s.started_at), isNum(started - created) ? h("span", { class: "muted", text: " (+" + fmtMs(started - created) + ")" }) : null) : DASH],
        ["completed", s.completed_at ? timeCell(s.completed_at) : DASH],
        ["total", total],
      ],
      { id: "query-times" }
    );
    const extra = [];
    if (s.error) extra.push(["error", h("span", { class: "bad-text", text: typeof s.error === "string" ? s.error : JSON.stringify(s.error) })]);
    if (s.recoveries) extra.push(["recoveries", String(s.recoveries)]);
    for (const [k, v] of Object.entries(s.metadata || {})) flattenField("metadata." + k, v, extra);

    parts.push(
      h("div", { class: "detail-grid" },
        h("div", null, h("h3", { text: "Answer" }), answer, source),
        h("div", null, h("h3", { text: "Timing" }), times, extra.length ? kvList(extra, { id: "query-extra" }) : null))
    );

    // Layer attempts.
    const attempts = s.layer_attempts || [];
    const at = h("table", { id: "query-attempts", class: "grid" },
      h("thead", null, h("tr", null, ["Layer", "Outcome", "Confidence", "Latency", "Worker", "Reason"].map((t, i) => h("th", { class: i === 2 || i === 3 ? "num" : null, text: t })))),
      h("tbody"));
    fillTable(at, attempts.map((x) =>
      h("tr", { dataset: { layer: x.layer, outcome: x.outcome } },
        h("td", { text: x.layer }),
        h("td", null, badge(x.outcome, outcomeTone(x.outcome))),
        h("td", { class: "num", text: fmtConf(x.confidence) }),
        h("td", { class: "num", text: fmtMs(x.latency_ms) }),
        h("td", { text: x.worker || DASH }),
        h("td", { class: "text-cell", title: x.reason || null, text: x.reason || DASH }))), "no layer attempts yet");
    parts.push(h("h3", { text: "Layer attempts" }), h("div", { class: "table-wrap" }, at));
  }

  // Waterfall and raw events.
  parts.push(h("h3", { text: "Waterfall" }), events.length ? waterfall(events, data.start_ms, data.end_ms) : h("p", { class: "muted", text: "no events (the feed has moved past them)" }));
  parts.push(h("h3", { text: "Events" }), h("div", { class: "table-wrap" }, eventsTable(events, data.start_ms)));
  detail.replaceChildren(...parts);
}

/** Adds [key, value] pairs for a field, flattening objects as key.sub; query ids become links. */
function flattenField(key, value, out) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flattenField(key + "." + k, v, out);
  } else if (/(^|\.)query_id$/.test(key) && typeof value === "string") {
    out.push([key, queryLink(value)]);
  } else if (/(^|[._])at$/.test(key) && typeof value === "string") {
    out.push([key, timeCell(value)]);
  } else {
    out.push([key, Array.isArray(value) ? JSON.stringify(value) : value === null ? "null" : String(value)]);
  }
}

/** Events whose latency_ms spans a bar ending at t_ms. */
const SPAN_EVENTS = new Set(["layer_hit", "layer_miss", "layer_timeout", "layer_error"]);

/**
 * The waterfall: one row per event; spans for layer outcomes with a latency
 * ([t - latency, t]), 2px markers for instants. The axis is ms from start_ms.
 */
function waterfall(events, startMs, endMs) {
  const rows = events.map((ev) => {
    const t = eventMs(ev);
    const span = SPAN_EVENTS.has(ev.event) && isNum(ev.latency_ms);
    return { ev, t, from: span ? t - ev.latency_ms : t, span };
  });
  const start = isNum(startMs) ? startMs : Math.min(...rows.map((r) => r.t));
  let lo = Math.min(start, ...rows.map((r) => r.from));
  let hi = Math.max(isNum(endMs) ? endMs : start, ...rows.map((r) => r.t));
  if (hi - lo < 0.001) hi = lo + 1;

  // Drawn at the width it will have on screen (1 unit = 1 px) so text keeps its size.
  const W = Math.max(560, Math.round(($("query-detail").clientWidth || 992) - 32));
  const labelW = 210, rightPad = 70, rowH = 20, top = 22;
  const H = top + rows.length * rowH + 6;
  const pw = W - labelW - rightPad;
  const x = (t) => labelW + ((t - lo) / (hi - lo)) * pw;
  const node = svg("svg", { id: "waterfall", class: "waterfall", viewBox: `0 0 ${W} ${H}`, width: "100%", preserveAspectRatio: "xMinYMin meet" });

  // Time axis in ms from start.
  const sc = niceScale(hi - lo, 6);
  const first = Math.ceil((lo - start) / sc.step) * sc.step;
  for (let off = first; start + off <= hi + 1e-9; off += sc.step) {
    const px = x(start + off);
    node.append(
      svg("line", { class: "grid-line", x1: px, x2: px, y1: top - 4, y2: H - 4 }),
      svg("text", { class: "axis-label", x: px, y: 12, "text-anchor": "middle", text: (off > 0 ? "+" : "") + Number(off.toFixed(6)).toLocaleString("en-US") + (off === first ? " ms" : "") })
    );
  }

  rows.forEach((r, i) => {
    const y = top + i * rowH;
    const off = r.t - start;
    if (i % 2) node.append(svg("rect", { class: "stripe", x: 0, y, width: W, height: rowH }));
    node.append(svg("text", { class: "wf-label", x: 6, y: y + 14, text: r.ev.event + (r.ev.layer ? " " + r.ev.layer : "") }));
    let title = `${r.ev.event}${r.ev.layer ? " " + r.ev.layer : ""} at +${fmtMs(off)}`;
    if (r.span) title += `, took ${fmtMs(r.ev.latency_ms)} (from +${fmtMs(r.from - start)})`;
    if (r.ev.reason) title += ` — ${r.ev.reason}`;
    if (r.span) {
      const x0 = x(r.from), x1 = x(r.t);
      node.append(
        svg("rect", { class: "bar", dataset: { event: r.ev.event }, x: x0, y: y + 4, width: Math.max(x1 - x0, 3), height: rowH - 8, rx: 1.5 }, tip(title)),
        svg("text", { class: "wf-value", x: x1 + 4, y: y + 14, text: fmtMs(r.ev.latency_ms) })
      );
    } else {
      node.append(svg("rect", { class: "bar mark", dataset: { event: r.ev.event }, x: x(r.t) - 1, y: y + 3, width: 2, height: rowH - 6 }, tip(title)));
    }
  });
  return node;
}

function eventsTable(events, startMs) {
  const t = h("table", { id: "query-events", class: "grid" },
    h("thead", null, h("tr", null, ["Time", "Offset", "Event", "Layer", "Confidence", "Latency", "Worker", "Reason", "Grain", "Id"].map((x, i) => h("th", { class: i === 1 || i === 4 || i === 5 ? "num" : null, text: x })))),
    h("tbody"));
  fillTable(t, events.map((ev) => {
    const ms = eventMs(ev);
    return h("tr", { dataset: { eventId: ev.id, event: ev.event } },
      h("td", { class: "mono", title: ev.ts, text: fmtHMSms(ms) }),
      h("td", { class: "num", text: isNum(startMs) ? "+" + fmtMs(ms - startMs) : DASH }),
      h("td", null, badge(ev.event, eventTone(ev.event))),
      h("td", { text: ev.layer || "" }),
      h("td", { class: "num", text: isNum(ev.confidence) ? fmtConf(ev.confidence) : "" }),
      h("td", { class: "num", text: isNum(ev.latency_ms) ? fmtMs(ev.latency_ms) : "" }),
      h("td", { text: ev.worker || "" }),
      h("td", { class: "text-cell", title: ev.reason || null, text: ev.reason || "" }),
      h("td", { class: "mono", text: ev.grain || "" }),
      h("td", { class: "mono muted small", text: ev.id || "" }));
  }), "no events");
  return t;
}

// ---------------------------------------------------------------------------
// 5. Dead letters view: paged list with requeue/delete actions
// ---------------------------------------------------------------------------

const DEAD_PAGE = 50;

const deadView = {
  offset: 0,
  last: null, // last reply, for redraw()

  init() {
    $("dead-prev").addEventListener("click", () => this.page(-1));
    $("dead-next").addEventListener("click", () => this.page(1));
    $("dead-refresh").addEventListener("click", () => this.load());
  },
  enter() {
    $("dead-message").hidden = true;
    this.load();
  },
  leave() {
    setError("dead letters", null);
  },
  page(dir) {
    this.offset = Math.max(0, this.offset + dir * DEAD_PAGE);
    this.load();
  },

  async load() {
    try {
      let r = await api("/api/dead" + qs({ offset: this.offset, count: DEAD_PAGE }));
      // The list shrank under us (requeued or deleted): back to the last page.
      if (r.total > 0 && this.offset >= r.total) {
        this.offset = Math.floor((r.total - 1) / DEAD_PAGE) * DEAD_PAGE;
        r = await api("/api/dead" + qs({ offset: this.offset, count: DEAD_PAGE }));
      }
      this.last = r;
      this.redraw();
      setError("dead letters", null);
    } catch (e) {
      setError("dead letters", e);
    }
  },

  redraw() {
    const r = this.last;
    if (!r) return;
    const entries = r.entries || [];
    const from = entries.length ? this.offset + 1 : 0;
    $("dead-page").textContent = `${fmtInt(from)}–${fmtInt(this.offset + entries.length)} of ${fmtInt(r.total)}`;
    $("dead-prev").disabled = this.offset === 0;
    $("dead-next").disabled = this.offset + entries.length >= r.total;
    $("dead-list").classList.toggle("no-actions", !app.actions);
    fillTable($("dead-list"), entries.map((d) => this.row(d)), "the dead list is empty");
  },

  row(d) {
    // The queue entry; the whole record when it could not be parsed out.
    const entry = d.entry === undefined || d.entry === null ? d.record : d.entry;
    const entryText = typeof entry === "string" ? entry : JSON.stringify(entry);
    return h("tr", { class: "dead-row", dataset: { queryId: d.query_id } },
      h("td", { class: "nowrap" }, timeCell(d.at)),
      h("td", { class: "text-cell", title: d.reason || null, text: d.reason || DASH }),
      h("td", { class: "mono small nowrap", text: d.instance || DASH }),
      h("td", null, queryLink(d.query_id, true)),
      h("td", { class: "entry-cell" },
        h("details", null,
          h("summary", { title: entryText, text: entryText.length > 90 ? entryText.slice(0, 90) + "…" : entryText || "(empty)" }),
          h("pre", { class: "raw", text: prettyJson(entryText) }),
          h("div", { class: "muted small", text: "raw record:" }),
          h("pre", { class: "raw", text: d.record }))),
      h("td", { class: "actions-col" }, app.actions ? [
        h("button", { type: "button", class: "requeue", onclick: () => this.act("requeue", d) , text: "Requeue" }),
        h("button", { type: "button", class: "delete danger", onclick: () => this.act("delete", d), text: "Delete" }),
      ] : null));
  },

  /** POSTs {record} to /api/dead/<what>, shows the outcome, reloads. */
  async act(what, d) {
    const label = d.query_id ? "query " + d.query_id : "this entry";
    if (!confirm(what === "requeue" ? `Requeue ${label}?` : `Delete ${label} from the dead list for good?`)) return;
    const msg = $("dead-message");
    try {
      const r = await api("/api/dead/" + what, { method: "POST", body: { record: d.record } });
      if (what === "requeue") showMessage(msg, "requeued" + (r && r.query_id ? " query " + r.query_id : ""), "ok");
      else showMessage(msg, "deleted", "ok");
    } catch (e) {
      showMessage(msg, what + " failed: " + e, "bad");
    }
    this.load();
  },
};

/** Pretty-prints JSON text; other text as is. */
function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch (_) {
    return text;
  }
}

// ---------------------------------------------------------------------------
// 6. Grains view: search, list, detail, forget
// ---------------------------------------------------------------------------

const grainsView = {
  last: null, // last list reply, for redraw()
  selected: null, // fact_id shown in the detail
  detail: null, // the grain shown in the detail
  generation: 0,

  init() {
    $("grains-search").addEventListener("input", debounce(() => this.load(), 300));
    $("grains-crystallized").addEventListener("change", () => this.load());
  },
  enter() {
    this.load();
  },
  leave() {
    setError("grains", null);
  },

  async load() {
    const gen = ++this.generation;
    try {
      const r = await api("/api/grains" + qs({ q: $("grains-search").value.trim(), crystallized: $("grains-crystallized").checked, limit: 50 }));
      if (gen !== this.generation) return;
      this.last = r;
      this.redraw();
      setError("grains", null);
    } catch (e) {
      if (gen === this.generation) setError("grains", e);
    }
  },

  redraw() {
    const r = this.last;
    if (r) {
      const grains = r.grains || [];
      $("grains-count").textContent = `${fmtInt(r.matched)} matching of ${fmtInt(r.total)} grains` + (grains.length < r.matched ? ` (first ${grains.length} shown)` : "");
      fillTable($("grains-list"), grains.map((g) => this.row(g)), "no grains match");
    }
    if (this.detail) this.showDetail(this.detail);
  },

  row(g) {
    const c = g.crystallized;
    return h("tr", { class: "clickable" + (g.fact_id === this.selected ? " selected" : ""), dataset: { factId: g.fact_id }, onclick: () => this.open(g) },
      h("td", { class: "mono small ellipsis-cell", title: g.fact_id, text: g.fact_id }),
      h("td", { class: "text-cell", title: g.question, text: g.question }),
      h("td", { class: "text-cell col-answer", title: g.answer, text: g.answer.length > 80 ? g.answer.slice(0, 80) + "…" : g.answer }),
      h("td", { class: "num", text: fmtConf(g.confidence) }),
      h("td", { class: "num", text: fmtInt(g.hits) }),
      h("td", { class: "small col-source", text: g.source || DASH }),
      h("td", null, c ? [badge("crystallised", "info", provenanceText(c)), h("div", { class: "muted small", text: (c.layer || c.by || "") + (c.expires_at ? " · expires " + fmtRelative(c.expires_at) : "") })] : ""));
  },

  /** Shows a grain from the list at once, then its fresh copy. */
  async open(g) {
    this.selected = g.fact_id;
    for (const tr of $("grains-list").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.factId === g.fact_id);
    this.showDetail(g);
    try {
      const fresh = await api("/api/grains/" + encodeURIComponent(g.fact_id));
      if (this.selected === g.fact_id) this.showDetail(fresh);
    } catch (e) {
      if (e.status === 404) showMessage($("grains-message"), "grain " + g.fact_id + " no longer exists", "bad");
      else setError("grains", e);
    }
  },

  showDetail(g) {
    this.detail = g;
    const pane = $("grain-detail");
    pane.hidden = false;
    $("grains-split").classList.add("with-detail");
    pane.dataset.factId = g.fact_id;
    const pairs = [];
    for (const [k, v] of Object.entries(g)) {
      if (k === "answer") pairs.push([k, h("div", { class: "answer-text", text: v })]);
      else if (k === "confidence") pairs.push([k, fmtConf(v)]);
      else flattenField(k, v, pairs);
    }
    setChildren(pane,
      h("div", { class: "detail-head" },
        h("h2", { class: "mono", text: g.fact_id }),
        h("button", { type: "button", class: "close", title: "close", text: "×", onclick: () => this.closeDetail() })),
      kvList(pairs),
      app.actions ? h("div", { class: "detail-actions" }, h("button", { type: "button", class: "forget danger", text: "Forget this grain", onclick: () => this.forget(g) })) : null
    );
  },

  closeDetail() {
    this.selected = null;
    this.detail = null;
    $("grain-detail").hidden = true;
    $("grains-split").classList.remove("with-detail");
    for (const tr of $("grains-list").tBodies[0].rows) tr.classList.remove("selected");
  },

  async forget(g) {
    if (!confirm(`Forget grain ${g.fact_id}? Layer0 will no longer answer with it.`)) return;
    const msg = $("grains-message");
    try {
      await api("/api/grains/" + encodeURIComponent(g.fact_id) + "/forget", { method: "POST", body: {} });
      showMessage(msg, "forgot " + g.fact_id, "ok");
      this.closeDetail();
    } catch (e) {
      showMessage(msg, "forget failed: " + e, "bad");
    }
    this.load();
  },
};

/** One line of a crystallised grain's provenance. */
function provenanceText(c) {
  return Object.entries(c).map(([k, v]) => k + ": " + v).join("\n");
}

/** "in 3h 2m" / "5m ago" for an RFC 3339 time. */
function fmtRelative(s) {
  const t = parseTime(s);
  if (!isNum(t)) return String(s);
  const d = t - serverNow();
  return d >= 0 ? "in " + fmtDuration(d) : fmtDuration(-d) + " ago";
}

// ---------------------------------------------------------------------------
// Router: #/NAME or #/query/ID; shows one <main id="view-NAME">
// ---------------------------------------------------------------------------

const views = {
  overview: overviewView,
  layers: layersView,
  feed: feedView,
  query: queryView,
  dead: deadView,
  grains: grainsView,
};

function route() {
  const m = /^#\/([a-z]+)(?:\/(.*))?$/.exec(location.hash);
  let name = m ? m[1] : "overview";
  let arg = m && m[2] ? safeDecode(m[2]) : null;
  if (!views[name]) {
    name = "overview";
    arg = null;
  }
  if (app.view) views[app.view].leave();
  app.view = name;
  for (const main of document.querySelectorAll("main.view")) main.hidden = main.id !== "view-" + name;
  for (const a of document.querySelectorAll("nav.tabs a[data-view]")) {
    const on = a.dataset.view === name;
    a.classList.toggle("active", on);
    if (on) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  views[name].enter(arg);
}

function safeDecode(s) {
  try {
    return decodeURIComponent(s);
  } catch (_) {
    return s;
  }
}

// ---------------------------------------------------------------------------
// Start-up
// ---------------------------------------------------------------------------

function start() {
  // The token lives in sessionStorage: this tab only, gone when it closes.
  const token = $("token");
  token.value = getToken();
  $("token-box").addEventListener("submit", (e) => e.preventDefault());
  token.addEventListener("input", () => {
    if (token.value) sessionStorage.setItem(TOKEN_KEY, token.value);
    else sessionStorage.removeItem(TOKEN_KEY);
  });

  feedView.init();
  queryView.init();
  deadView.init();
  grainsView.init();

  window.addEventListener("hashchange", route);
  if (!/^#\//.test(location.hash)) history.replaceState(null, "", "#/overview");
  route();
  // The overview view starts the header poller itself; other views need it too.
  if (app.view !== "overview") overviewPoller.start();
}

start();
