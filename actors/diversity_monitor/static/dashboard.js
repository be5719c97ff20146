// The orchestra's live page: /dashboard/state once, then server-sent events (/dashboard/events).
// Plain JS, no framework; charts by uPlot when it was vendored (`make vendor`), numbers without it.
"use strict";

const HOUR = 3600;
const COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
const TIER_RANK = { hot: 0, warm: 1, cold: 2 };
const view = { state: null, points: [], tail: [], charts: {} };
window.orchestra = view; // for people poking at it in the console, and for the browser test

// --- formatting ------------------------------------------------------------------------------------
const $ = (sel) => document.querySelector(sel);
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
function bytes(n) {
  if (n == null) return "-";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(n >= 100 || i === 0 ? 0 : n >= 10 ? 1 : 2)} ${units[i]}`;
}
function usd(x) {
  if (x == null) return "-";
  if (x !== 0 && Math.abs(x) < 0.001) return "$" + x.toPrecision(2);
  const digits = Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 1 ? 2 : 4;
  return "$" + x.toFixed(digits);
}
const pct = (x) => (x == null ? "-" : `${(100 * x).toFixed(x > 0 && x < 0.1 ? 1 : 0)}%`);
function span(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 90) return `${seconds}s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)}m`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)}h`;
  return `${Math.round(seconds / 86400)}d`;
}
const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });
const colour = (i) => COLOURS[i % COLOURS.length];
function colourOf(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return colour(h);
}

// --- the panels ------------------------------------------------------------------------------------
function renderHeadline(h) {
  const shown = {
    models_loaded: h.models_loaded,
    hosts_up: h.hosts_up,
    request_rate_per_second: h.request_rate_per_second >= 1 ? h.request_rate_per_second.toFixed(1) : h.request_rate_per_second.toPrecision(2),
    cache_hit_ratio: pct(h.cache_hit_ratio),
    error_ratio: pct(h.error_ratio),
    spend_today_usd: usd(h.spend_today_usd),
    diversity_score: h.diversity_score == null ? "-" : h.diversity_score.toFixed(2),
    alerts_open: h.alerts_open,
  };
  for (const [key, text] of Object.entries(shown)) {
    const node = document.querySelector(`[data-figure="${key}"]`);
    node.textContent = text;
    node.dataset.value = h[key] == null ? "" : String(h[key]);
  }
  document.querySelector('[data-figure="alerts_open"]').parentElement.classList.toggle("bad", h.alerts_open > 0);
}

function renderPhase(p, now) {
  $("#phase").textContent = p ? `phase: ${p.phase}` : "phase: none set";
  const parts = [];
  if (p && p.since) parts.push(`since ${span(now - p.since)} ago`);
  if (p && p.rotation && Object.keys(p.rotation).length) {
    parts.push("picks " + Object.entries(p.rotation).map(([g, ms]) => `${g}: ${ms.join(", ")}`).join("; "));
  }
  if (p && p.next_rotation_at) parts.push(`next rotation in ${span(p.next_rotation_at - now)}`);
  $("#rotation").textContent = parts.join(" · ");
}

function renderCards(cards, models) {
  const box = $("#cards");
  box.replaceChildren();
  if (!cards.length) box.append(el("p", { class: "muted" }, "no gpu_host reporting"));
  for (const c of cards) {
    const bar = el("div", { class: "bar" });
    let accounted = 0;
    for (const m of c.models) {
      accounted += m.bytes;
      const w = (100 * m.bytes) / Math.max(1, c.total);
      bar.append(el("span", { class: "seg", style: `width:${w}%;background:${colourOf(m.model)}`, title: `${m.model}#${m.instance}: ${bytes(m.bytes)}` }, w > 12 ? m.model : ""));
    }
    const other = Math.max(0, c.used - accounted);
    if (other > 0) bar.append(el("span", { class: "seg other", style: `width:${(100 * other) / Math.max(1, c.total)}%`, title: `other: ${bytes(other)}` }));
    box.append(el("div", { class: "card", "data-card": `${c.host}/${c.card}` },
      el("div", { class: "cardhead" }, el("b", {}, `${c.host} / ${c.card}`), el("span", { class: "muted" }, `${bytes(c.used)} of ${bytes(c.total)}`)),
      bar));
  }
  const body = $("#models tbody");
  body.replaceChildren();
  const sorted = [...models].sort((a, b) => (TIER_RANK[a.keep_alive] ?? 3) - (TIER_RANK[b.keep_alive] ?? 3) || a.model.localeCompare(b.model));
  for (const m of sorted) {
    body.append(el("tr", { "data-model": m.model },
      el("td", {}, m.host), el("td", {}, el("span", { class: "dot", style: `background:${colourOf(m.model)}` }), `${m.model}${m.instance ? "#" + m.instance : ""}${m.draining ? " (draining)" : ""}`),
      el("td", {}, el("span", { class: `tier ${m.keep_alive}` }, m.keep_alive)), el("td", { class: "num" }, m.in_flight),
      el("td", { class: "num" }, m.queue_depth), el("td", { class: "num" }, m.tokens_per_s.toFixed(1)), el("td", { class: "num" }, bytes(m.bytes))));
  }
}

function renderMoney(money) {
  const box = $("#budgets");
  box.replaceChildren();
  if (!money.guard) box.append(el("p", { class: "muted" }, `no budget_guard answering; the monitor counts ${usd(money.spend_today_usd)} spent today`));
  for (const b of money.budgets) {
    const used = b.spent_usd + b.held_usd;
    const share = b.hard_usd ? Math.min(1, used / b.hard_usd) : 0;
    const bar = el("div", { class: "bar money" }, el("span", { class: "seg", style: `width:${100 * share}%;background:${share >= 1 ? "#e15759" : share >= Math.min(...(b.soft.length ? b.soft : [2])) ? "#edc948" : "#59a14f"}` }));
    for (const s of b.soft) bar.append(el("i", { class: "mark", style: `left:${100 * s}%`, title: `soft threshold ${pct(s)}` }));
    box.append(el("div", { class: "budget", "data-scope": b.scope, "data-spent": String(b.spent_usd) },
      el("div", { class: "cardhead" }, el("b", {}, b.scope), el("span", { class: "muted" }, `${usd(b.spent_usd)}${b.held_usd ? ` + ${usd(b.held_usd)} held` : ""} of ${b.hard_usd == null ? "no cap" : usd(b.hard_usd)} · ${b.period}`)),
      bar));
  }
  const cost = $("#cost tbody");
  cost.replaceChildren();
  for (const [tier, c] of Object.entries(money.cost_per_request_usd)) cost.append(el("tr", {}, el("td", {}, tier), el("td", { class: "num" }, usd(c))));
  const dis = $("#disabled");
  dis.replaceChildren();
  if (!money.disabled.length) dis.append(el("li", { class: "muted" }, "none: every tier takes requests"));
  for (const d of money.disabled) dis.append(el("li", { "data-tier": d.tier }, el("b", {}, d.tier), ` off${d.until ? " until " + new Date(d.until * 1000).toLocaleString() : ""}${d.reason ? ": " + d.reason : ""}`));
}

function renderAlerts(alerts, remediations, now) {
  const body = $("#alerts tbody");
  body.replaceChildren();
  if (!alerts.length) body.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "no open alert")));
  for (const a of alerts) {
    const context = Object.entries(a.context).map(([k, v]) => `${k}=${v}`).join(" ");
    const action = a.acked_by
      ? el("span", { class: "muted" }, `acked by ${a.acked_by}`)
      : el("button", { onclick: () => acknowledge(a.alert_id) }, "acknowledge");
    body.append(el("tr", { "data-alert": a.alert_id },
      el("td", {}, el("span", { class: `sev ${a.severity}` }, a.severity)), el("td", {}, a.alert_id),
      el("td", { class: "num" }, span(now - a.raised_at)), el("td", { class: "ctx" }, context), el("td", {}, action)));
  }
  const list = $("#remediations");
  list.replaceChildren();
  if (!remediations.length) list.append(el("li", { class: "muted" }, "none"));
  for (const r of remediations) list.append(el("li", {}, `${clock(r.at)} `, el("b", {}, r.action), ` for ${r.alert_id}: ${r.detail}`));
}

function renderReviews(r, now) {
  const reviews = r || { pending: 0, newest: [] };
  $("#reviews-pending").textContent = reviews.pending;
  $("#review-queue").classList.toggle("bad", reviews.pending > 0);
  const body = $("#reviews tbody");
  body.replaceChildren();
  if (!reviews.newest.length) body.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "nothing to review")));
  for (const i of reviews.newest) {
    body.append(el("tr", { "data-review": i.request_id, title: i.prompt },
      el("td", { class: "num" }, span(now - i.queued_at)), el("td", {}, i.request_id),
      el("td", { class: "num" }, i.consistency.toFixed(2)), el("td", {}, i.models.join(", "))));
  }
}

async function acknowledge(id) {
  const r = await fetch("/dashboard/ack", { method: "POST", headers: { "Content-Type": "application/json", "X-Orchestra": "ack" }, body: JSON.stringify({ alert_id: id }) });
  if (!r.ok) notice(`acknowledging ${id} failed: ${await r.text()}`);
}

function tailItem(e) {
  const li = el("li", { "data-kind": e.kind }, el("time", {}, clock(e.at)), el("b", {}, e.kind), " ");
  if (e.request_id) {
    li.append(el("a", { href: `/dashboard/audit?id=${encodeURIComponent(e.request_id)}&at=${e.at}`, target: "_blank" }, e.request_id), " ");
  }
  li.append(el("span", { class: "muted" }, e.text));
  return li;
}

function pushTail(e) {
  const list = $("#tail");
  list.prepend(tailItem(e));
  while (list.children.length > 200) list.lastChild.remove();
}

// --- the charts ------------------------------------------------------------------------------------
const CHARTS = [
  { id: "tokens", title: "tokens/s per model", series: (p) => p.tokens_per_s },
  { id: "requests", title: "requests/s per tier", series: (p) => p.requests_per_s },
  { id: "latency", title: "latency per tier (s): p50, p99", series: (p) => ({ ...prefix("p50 ", p.p50_s), ...prefix("p99 ", p.p99_s) }) },
  { id: "queue", title: "queue depth per model", series: (p) => p.queue_depth },
  { id: "cache", title: "cache hit rate", series: (p) => ({ "hit rate": p.cache_hit_rate }) },
  { id: "diversity", title: "diversity score", series: (p) => ({ score: p.diversity_score }) },
  { id: "families", title: "model-family mix (answers in window)", series: (p) => p.families },
];
function prefix(pre, obj) {
  const out = {};
  for (const [k, v] of Object.entries(obj || {})) out[pre + k] = v;
  return out;
}

function columns(def, points) {
  const names = [];
  for (const p of points) for (const k of Object.keys(def.series(p) || {})) if (!names.includes(k)) names.push(k);
  names.sort();
  const xs = points.map((p) => p.t);
  const ys = names.map((n) => points.map((p) => { const v = (def.series(p) || {})[n]; return v == null ? null : v; }));
  return { names, data: [xs, ...ys] };
}

function chartsReady() {
  return typeof window.uPlot === "function";
}

function renderCharts() {
  const box = $("#charts");
  const points = view.points;
  for (const def of CHARTS) {
    const { names, data } = columns(def, points);
    let slot = view.charts[def.id];
    if (!slot) {
      const holder = el("div", { class: "chart", "data-chart": def.id }, el("h3", {}, def.title));
      box.append(holder);
      slot = view.charts[def.id] = { holder, plot: null, names: "" , last: el("p", { class: "last muted" }) };
      holder.append(slot.last);
    }
    const latest = names.map((n, i) => { const v = data[i + 1][data[i + 1].length - 1]; return `${n}: ${v == null ? "-" : Number(v).toFixed(2)}`; });
    slot.last.textContent = names.length ? latest.join(" · ") : "no data yet";
    slot.holder.dataset.series = names.join(",");
    slot.holder.dataset.points = String(points.length);
    if (!chartsReady()) continue;
    const key = names.join("|");
    if (slot.plot && slot.names === key) {
      slot.plot.setData(data);
      continue;
    }
    if (slot.plot) slot.plot.destroy();
    slot.names = key;
    const width = Math.max(280, slot.holder.clientWidth - 16);
    slot.plot = new uPlot({
      width, height: 170,
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: true } },
      legend: { live: false },
      series: [{}, ...names.map((n, i) => ({ label: n, stroke: colour(i), width: 1.5, spanGaps: true }))],
      axes: [{ stroke: "#aaa", grid: { stroke: "#2a2f3a" } }, { stroke: "#aaa", grid: { stroke: "#2a2f3a" }, size: 50 }],
    }, data, slot.holder);
  }
  document.body.dataset.charts = chartsReady() ? (points.length ? "ready" : "empty") : "missing";
}

// --- state and the live stream ---------------------------------------------------------------------
function notice(text) {
  const n = $("#notice");
  n.hidden = !text;
  n.textContent = text || "";
}

function applyState(s) {
  view.state = s;
  renderHeadline(s.headline);
  renderPhase(s.phase, s.now);
  renderCards(s.cards, s.models);
  renderMoney(s.money);
  renderAlerts(s.alerts, s.remediations, s.now);
  renderReviews(s.reviews, s.now);
}

function addPoint(p) {
  view.points.push(p);
  const cutoff = p.t - HOUR;
  while (view.points.length && view.points[0].t < cutoff) view.points.shift();
  renderCharts();
}

async function start() {
  if (!chartsReady()) notice("Charts unavailable: the charting library (uPlot) is not installed on this orchestra. Run `make vendor` (npm) and reload; the figures below are live all the same.");
  const r = await fetch("/dashboard/state", { cache: "no-store" });
  if (!r.ok) { notice(`cannot read the state: ${r.status} ${await r.text()}`); return; }
  const first = await r.json();
  view.points = first.points;
  applyState(first);
  for (const e of first.tail) pushTail(e);
  renderCharts();
  const source = new EventSource("/dashboard/events");
  source.addEventListener("open", () => { $("#live").textContent = "live"; document.body.dataset.live = "live"; });
  source.addEventListener("error", () => { $("#live").textContent = "reconnecting…"; document.body.dataset.live = "down"; });
  source.addEventListener("state", (m) => applyState(JSON.parse(m.data)));
  source.addEventListener("point", (m) => addPoint(JSON.parse(m.data)));
  source.addEventListener("tail", (m) => pushTail(JSON.parse(m.data)));
}

start().catch((e) => notice(`dashboard error: ${e}`));
