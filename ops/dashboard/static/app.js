// stockade dashboard: hand-written, no dependencies. Every value from the
// server goes into the page as text (textContent), never as HTML, so a symbol
// or a reason holding markup shows as that markup, inert.
"use strict";

const S = { csrf: "", control: false, live: null, page: "overview", lastDecision: -1, decisionsNext: "", pendingKey: null };
const API = "/api/v1";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, String(v));
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c === null || c === undefined ? "" : String(c)));
  return node;
}
const $ = (id) => document.getElementById(id);
function put(id, node) { const host = $(id); host.replaceChildren(node); }
function money(x) { return x === null || x === undefined ? "–" : Number(x).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }); }
function num(x, d = 4) { return x === null || x === undefined ? "–" : String(Math.round(Number(x) * 10 ** d) / 10 ** d); }
function signed(node, x) { node.textContent = money(x); node.classList.toggle("pos", x > 0); node.classList.toggle("neg", x < 0); }
function when(ns) { return ns ? new Date(ns / 1e6).toLocaleTimeString() : "–"; }

function table(headers, rows, attrs) {
  const head = el("tr", {}, ...headers.map((h) => el("th", {}, h)));
  const body = rows.map((r) => el("tr", r.attrs || {}, ...r.cells.map((c) => (c instanceof Node && c.tagName === "TD") ? c : el("td", {}, c))));
  if (!rows.length) body.push(el("tr", {}, el("td", { colspan: headers.length, class: "muted" }, "none")));
  return el("table", attrs || {}, el("thead", {}, head), el("tbody", {}, ...body));
}
const td = (v, cls) => el("td", { class: cls }, v);

async function call(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  const text = await response.text();
  let data = null;
  try { data = JSON.parse(text); } catch (e) { data = { ok: false, error: text }; }
  return { status: response.status, data };
}

// ---- overview ----------------------------------------------------------------

function renderOverview(o) {
  const st = $("state");
  st.textContent = o.trading_state;
  st.className = "badge " + o.trading_state;
  $("state-reason").textContent = o.trading_state_reason || "";
  const h = $("health");
  h.textContent = o.healthy ? "healthy" : "NOT healthy";
  h.className = "badge " + (o.healthy ? "ok" : "bad");
  $("equity").textContent = money(o.equity);
  signed($("pnl"), o.pnl_today);
  signed($("upl"), o.unrealized_pl);
  $("exposure").textContent = money(o.exposure);
  const c = o.market_clock || {};
  $("clock").textContent = c.is_open === undefined ? "unknown" : (c.is_open ? "open" : "closed")
    + (c.is_open && c.next_close_ns ? " · closes " + when(c.next_close_ns) : "")
    + (!c.is_open && c.next_open_ns ? " · opens " + new Date(c.next_open_ns / 1e6).toLocaleString() : "");
  $("placed").textContent = o.orders_placed;
  put("positions", table(["Symbol", "Qty", "Avg entry", "Market value", "Unrealised P&L", "Stop", "Target"],
    o.positions.map((p) => ({ attrs: { "data-symbol": p.symbol }, cells: [p.symbol, td(p.qty, "num"), td(num(p.avg_entry_price), "num"),
      td(money(p.market_value), "num"), td(money(p.unrealized_pl), "num " + (p.unrealized_pl > 0 ? "pos" : p.unrealized_pl < 0 ? "neg" : "")),
      td(num(p.stop), "num"), td(num(p.target), "num")] })), { id: "positions-table" }));
  $("open-orders-total").textContent = o.open_orders_total > o.open_orders.length ? `(newest ${o.open_orders.length} of ${o.open_orders_total})` : "";
  put("open-orders", table(["Created", "Symbol", "Side", "Qty", "Type", "State", "Filled", "Limit", "Stop"],
    o.open_orders.map((x) => ({ cells: [when(x.created_ns), x.symbol, x.side, td(x.qty, "num"), x.type, x.state,
      td(x.filled_qty, "num"), td(num(x.limit_price), "num"), td(num(x.stop_price), "num")] }))));
  $("feed-state").textContent = "(" + o.feed.state + ")";
  put("feed", table(["Symbol", "Last quote", "Quotes", ""],
    o.feed.symbols.map((f) => ({ cells: [f.symbol, td(f.age_s === null ? "never" : num(f.age_s, 1) + " s ago", "num"),
      td(f.quotes, "num"), td(f.stale ? "stale" : "", f.stale ? "stale" : "")] }))));
}

// ---- supervision tree --------------------------------------------------------

function renderTree(t) {
  const kids = {};
  for (const a of t.actors) (kids[a.parent || ""] = kids[a.parent || ""] || []).push(a);
  function branch(parent) {
    const items = (kids[parent] || []).map((a) => {
      const up = a.alive && !a.overdue;
      const li = el("li", {},
        el("span", { class: "node " + (up ? "up" : "down"), "data-actor": a.name, title: a.state }, a.name),
        el("span", { class: "node-info" }, `${a.state} · restarts ${a.restarts} · mailbox ${a.mailbox}`
          + (a.heartbeat_age_s === null ? "" : ` · heartbeat ${num(a.heartbeat_age_s, 1)} s ago`)));
      if (kids[a.name]) li.append(branch(a.name));
      return li;
    });
    return el("ul", { class: "tree" }, ...items);
  }
  put("tree", branch(""));
}

// ---- approvals ---------------------------------------------------------------

function renderPending(list) {
  $("pending-count").textContent = list.length ? `(${list.length})` : "";
  // Rebuilt only when the proposals change: a button replaced under the pointer would lose its click.
  const key = list.map((p) => p.proposal_id).join(",");
  if (key === S.pendingKey) {
    for (const p of list) {
      const cell = document.querySelector(`td[data-expires="${CSS.escape(p.proposal_id)}"]`);
      if (cell) cell.textContent = num(p.expires_in_s, 0) + " s";
    }
    return;
  }
  S.pendingKey = key;
  put("approvals", table(["Proposal", "Symbol", "Side", "Score", "Confidence", "Price", "Votes", "Expires in", ""],
    list.map((p) => ({ attrs: { "data-proposal": p.proposal_id }, cells: [p.proposal_id, p.symbol, p.side, td(num(p.score), "num"),
      td(num(p.confidence), "num"), td(num(p.price), "num"),
      el("td", { class: "votes" }, p.votes.map((v) => `${v.model} ${num(v.direction, 2)}×${num(v.weight, 2)}`).join(", ")),
      el("td", { class: "num", "data-expires": p.proposal_id }, num(p.expires_in_s, 0) + " s"),
      el("td", {}, el("button", { class: "approve", type: "button", disabled: !S.control, "data-approve": p.proposal_id,
        onclick: () => command("approve", { id: p.proposal_id }) }, "Approve"), " ",
        el("button", { type: "button", disabled: !S.control, "data-reject": p.proposal_id,
          onclick: () => command("reject", { id: p.proposal_id, reason: $("reason").value || "dashboard" }) }, "Reject"))] }))));
}

// ---- decisions ---------------------------------------------------------------

async function loadDecisions(more) {
  const q = more && S.decisionsNext ? `?before=${encodeURIComponent(S.decisionsNext)}` : "";
  const { data } = await call(`${API}/decisions${q}`);
  if (!data || !data.decisions) return;
  S.decisionsNext = data.next;
  $("decisions-more").hidden = !data.next;
  const rows = data.decisions.map((d) => ({ attrs: { "data-proposal": d.proposal_id }, cells: [
    when(d.ts_ns), d.symbol, d.side, d.steps.join(" → "), td(num(d.confidence), "num"),
    el("td", { class: "votes" }, ...d.votes.map((v) => el("div", {}, `${v.model}: ${num(v.direction, 2)} (conf ${num(v.confidence, 2)}, weight ${num(v.weight, 2)})`))),
    d.risk ? `${d.risk.allowed ? "allowed" : "refused"} · ${d.risk.rule} · ${d.risk.reason}` : "–",
    el("td", {}, ...d.orders.map((o) => el("div", {}, `${o.side} ${o.qty} ${o.type} ${o.state}`
      + (o.filled_qty ? ` · filled ${o.filled_qty} @ ${num(o.filled_avg_price)}` : "")
      + (o.fills.length ? ` (${o.fills.length} fill${o.fills.length > 1 ? "s" : ""})` : "")))),
  ] }));
  const tableNode = table(["Time", "Symbol", "Side", "Steps", "Confidence", "Votes (direction, weight)", "Risk verdict", "Orders and fills"], rows);
  if (more) $("decisions").append(tableNode); else put("decisions", tableNode);
}

// ---- alerts, equity, report, audit ----------------------------------------------

async function loadAlerts() {
  const { data } = await call(`${API}/alerts?limit=100`);
  if (!data || !data.alerts) return;
  put("alerts", table(["Time", "Level", "Key", "Text", "Source"],
    data.alerts.map((a) => ({ cells: [when(a.ts_ns), a.level, a.alert_key, a.text, a.source] }))));
}

function lineChart(points, key, color, height) {
  // Labels sit outside the SVG: its viewBox is stretched to the panel, which would distort text.
  const ns = "http://www.w3.org/2000/svg";
  if (points.length < 2) return el("p", { class: "muted" }, `${key}: not enough history yet`);
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 1000 ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const xs = points.map((p) => p.ts_ns), ys = points.map((p) => p[key]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => (x1 > x0 ? ((x - x0) / (x1 - x0)) * 980 + 10 : 500);
  const sy = (y) => (y1 > y0 ? height - 5 - ((y - y0) / (y1 - y0)) * (height - 10) : height / 2);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.map((p) => `${sx(p.ts_ns).toFixed(1)},${sy(p[key]).toFixed(1)}`).join(" "));
  line.setAttribute("stroke", color);
  line.setAttribute("vector-effect", "non-scaling-stroke");
  svg.append(line);
  const caption = `${key}: ${num(y0, 4)} … ${num(y1, 4)} · ${when(x0)} – ${when(x1)}`;
  return el("div", {}, el("div", { class: "muted" }, caption), svg);
}

async function loadEquity() {
  const { data } = await call(`${API}/equity?hours=24&points=500`);
  if (!data || !data.points) return;
  $("max-dd").textContent = `(max drawdown ${num(data.max_drawdown * 100, 2)}%)`;
  put("equity-chart", lineChart(data.points, "equity", "#1d4ed8", 260));
  put("drawdown-chart", lineChart(data.points, "drawdown", "#b3261e", 120));
}

function statsTable(rows, first) {
  const keys = [];
  for (const r of Object.values(rows)) for (const k of Object.keys(r)) if (!keys.includes(k)) keys.push(k);
  return table([first, ...keys], Object.entries(rows).map(([name, r]) => ({
    cells: [name, ...keys.map((k) => td(typeof r[k] === "number" ? num(r[k]) : (r[k] === null || r[k] === undefined ? "–" : String(r[k])), "num"))] })));
}

async function loadReport() {
  const { data } = await call(`${API}/report`);
  if (!data || !data.members) return;
  put("report-members", statsTable(data.members, "Member"));
  const pf = data.portfolio || {};
  const flat = {};
  for (const [k, v] of Object.entries(pf)) if (typeof v !== "object") flat[k] = v;
  put("report-portfolio", statsTable({ portfolio: flat }, ""));
}

async function loadAudit() {
  const { data } = await call(`${API}/audit?limit=20`);
  if (!Array.isArray(data)) return;
  put("audit", table(["Time", "Via", "Command", "Args", "Outcome"],
    data.map((a) => ({ cells: [when(a.ts_ns), a.via || `uid ${a.uid}`, a.cmd, a.args, a.ok ? "ok" : a.error] }))));
}

// ---- control -------------------------------------------------------------------

async function command(cmd, args) {
  const out = $("control-result");
  const { status, data } = await call(`${API}/control/${cmd}`, {
    method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": S.csrf }, body: JSON.stringify(args || {}),
  });
  out.textContent = data && data.ok ? `${cmd}: done` : `${cmd}: refused (${status}): ${data ? data.error : ""}`;
  out.className = "result " + (data && data.ok ? "pos" : "neg");
  if (S.page === "controls") loadAudit();
  return data;
}

function setupControls() {
  $("control-mode").textContent = S.control ? "Control enabled: every action is audited like a control-socket command."
    : "Read-only dashboard (dashboard.control = false): control actions are refused.";
  for (const b of document.querySelectorAll("button[data-cmd]")) {
    b.disabled = !S.control;
    b.addEventListener("click", () => command(b.dataset.cmd, { reason: $("reason").value || "dashboard" }));
  }
  $("btn-kill").disabled = !S.control;
  $("btn-kill").addEventListener("click", () => { $("kill-confirm").hidden = false; $("kill-text").value = ""; $("btn-kill-confirm").disabled = true; $("kill-text").focus(); });
  $("kill-text").addEventListener("input", () => { $("btn-kill-confirm").disabled = $("kill-text").value !== "KILL"; });
  $("btn-kill-cancel").addEventListener("click", () => { $("kill-confirm").hidden = true; });
  $("btn-kill-confirm").addEventListener("click", async () => {
    $("btn-kill-confirm").disabled = true;
    $("control-result").textContent = "kill: liquidating…";
    await command("kill", { confirm: "kill", reason: $("reason").value || "dashboard kill" });
    $("kill-confirm").hidden = true;
  });
}

// ---- pages and live updates --------------------------------------------------------

function show(page) {
  if (!document.getElementById("page-" + page)) page = "overview";
  S.page = page;
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== "page-" + page;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  if (page === "decisions") loadDecisions(false);
  else if (page === "alerts") loadAlerts();
  else if (page === "equity") loadEquity();
  else if (page === "report") loadReport();
  else if (page === "controls") loadAudit();
}

function applyLive(d) {
  renderOverview(d.overview);
  renderTree(d.tree);
  renderPending(d.pending);
  if (S.page === "decisions" && d.last_decision_ns !== S.lastDecision && !S.decisionsNext) loadDecisions(false);
  S.lastDecision = d.last_decision_ns;
  document.body.dataset.updated = String(Date.now());
}

function connect() {
  const source = new EventSource(`${API}/events`);
  const badge = $("live");
  source.addEventListener("open", () => { badge.textContent = "live"; badge.className = "badge on"; });
  source.addEventListener("update", (e) => applyLive(JSON.parse(e.data)));
  source.addEventListener("error", () => { badge.textContent = "reconnecting"; badge.className = "badge off"; });
  S.live = source;
}

async function start() {
  const { status, data } = await call(`${API}/session`);
  if (status !== 200) {
    document.querySelector("main").replaceChildren(el("p", {}, "Not logged in: open the login URL from the daemon's log."));
    return;
  }
  S.csrf = data.csrf;
  S.control = data.control;
  setupControls();
  $("decisions-more").addEventListener("click", () => loadDecisions(true));
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  show(location.hash.slice(1) || "overview");
  connect();
}

document.addEventListener("DOMContentLoaded", start);
