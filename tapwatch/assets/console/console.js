// tapwatch console: draws the page its path names from /api/history/… (no build step, no
// network beyond this server). Charts by uPlot (vendored, MIT).
"use strict";

const $ = id => document.getElementById(id);
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const num = n => Number(n).toLocaleString("en-US");
const iso = s => new Date(s * 1000).toISOString().replace("T", " ").replace(".000Z", "Z");
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
  "#9c755f", "#bab0ac", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#17becf"];
const SEVERITY_COLOUR = {critical: "#c00", warning: "#e08000", info: "#3a7"};

async function api(path) {
  const r = await fetch("/api/history/" + path);
  const body = await r.json();
  if (!r.ok) throw new Error(`${path}: ${r.status} ${body.error || ""}`);
  return body;
}

// The range: the chosen span ending at the newest stored window (a live run's: now).
const params = new URLSearchParams(location.search);
const SPANS = [900, 3600, 21600, 86400, 604800];
const WEEK = 604800;
let SPAN = params.get("range") === "all" ? "all" : Number(params.get("range")) || "all";
let RANGE = null;

// "all": everything stored, at most the last 7 days of it.
async function range() {
  const e = await api("extent");
  const end = e.last == null ? e.now : e.last + 1;
  if (SPAN !== "all" && !SPANS.includes(SPAN)) SPAN = "all";
  $("range").value = String(SPAN);
  const span = SPAN === "all" ? (e.last == null ? 3600 : Math.min(WEEK, end - e.first)) : SPAN;
  RANGE = {since: end - span, until: end};
  $("extent").textContent = e.last == null ? "no history stored yet" :
    `stored: ${iso(e.first)} – ${iso(e.last + 1)}; showing ${iso(RANGE.since)} – ${iso(RANGE.until)}`;
  return RANGE;
}
const rq = (extra) => `since=${RANGE.since}&until=${RANGE.until}` + (extra ? "&" + extra : "");
const withRange = href => href + (params.has("range") ? "?range=" + SPAN : "");

function utc(ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); }

// Vertical lines at alert detections, coloured by severity, on a time chart.
function alertMarkers(alerts) {
  return {
    hooks: {
      draw: u => {
        const ctx = u.ctx, top = u.bbox.top, h = u.bbox.height;
        ctx.save();
        ctx.lineWidth = 2 * devicePixelRatio;
        ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
        for (const a of alerts) {
          const x = Math.round(u.valToPos(a.first_ms / 1000, "x", true));
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          ctx.strokeStyle = SEVERITY_COLOUR[a.severity] || "#888";
          ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + h); ctx.stroke();
        }
        ctx.restore();
      },
    },
  };
}

// An axis label of a time in UTC: seconds on short ranges, the date on long ones.
function timeLabel(t, span) {
  const s = iso(t);
  return span > 2 * 86400 ? s.slice(5, 16) : span > 1800 ? s.slice(11, 16) : s.slice(11, 19);
}

// Log-axis labels at 1, 2 and 5 of each decade (the other grid lines unlabelled).
const logLabels = (u, splits) => splits.map(v => {
  const m = v / Math.pow(10, Math.floor(Math.log10(v) + 1e-9));
  return [1, 2, 5].some(k => Math.abs(m - k) < 1e-6) ? num(v) : "";
});

const width = () => Math.max(480, Math.min(1150, document.body.clientWidth - 60));

// A time chart of per-step values, one series per key, stacked or as lines.
function timeChart(el, {x, keys, values, stacked, unit, alerts}) {
  let data = values;
  if (stacked) {
    const acc = x.map(() => 0);
    data = values.map(v => v.map((y, i) => (acc[i] += y)));
  }
  const order = keys.map((_, i) => i);
  if (stacked) order.reverse(); // the highest band first, each lower one drawn over it
  const series = [{value: (u, t) => t == null ? "" : iso(t)}].concat(order.map(i => ({
    label: keys[i] === "" ? "(none)" : keys[i],
    stroke: PALETTE[i % PALETTE.length],
    fill: stacked ? PALETTE[i % PALETTE.length] + "cc" : undefined,
    width: stacked ? 1 : 1.5,
    points: {show: false},
    value: (u, v, si, di) => di == null ? "" : num(values[i][di]),
  })));
  const opts = {
    width: width(), height: 320, tzDate: utc,
    series,
    scales: {x: {time: true}},
    axes: [{values: (u, splits) => splits.map(v => timeLabel(v, u.scales.x.max - u.scales.x.min))}, {label: unit, size: 70, values: (u, vals) => vals.map(v => v >= 1e6 ? (v / 1e6) + "M" : v >= 1e3 ? (v / 1e3) + "k" : v)}],
    plugins: alerts && alerts.length ? [alertMarkers(alerts)] : [],
  };
  el.innerHTML = "";
  return new uPlot(opts, [x].concat(order.map(i => data[i])), el);
}

// A traffic answer as dense arrays over the range (a missing bucket is no traffic).
function dense(t, metric) {
  const x = [];
  for (let s = t.range.since; s < t.range.until; s += t.step_s) x.push(s);
  const at = new Map(x.map((s, i) => [s, i]));
  const col = metric === "bytes" ? 2 : 1;
  const values = t.series.map(s => {
    const v = x.map(() => 0);
    for (const p of s.points) if (at.has(p[0])) v[at.get(p[0])] = p[col];
    return v;
  });
  return {x, keys: t.series.map(s => s.key), values};
}

function trafficTotals(t) {
  return t.series.map((s, i) => ({key: s.key, colour: PALETTE[i % PALETTE.length],
    packets: s.points.reduce((a, p) => a + p[1], 0), bytes: s.points.reduce((a, p) => a + p[2], 0)}))
    .sort((a, b) => b.packets - a.packets || (a.key < b.key ? -1 : 1));
}

// The totals beneath a traffic chart; split by tenant, each key leads to its tenant page.
function totalsTable(rows, byTenant) {
  const name = r => esc(r.key === "" ? "(none)" : r.key);
  return `<table class="totals"><tr><th>key</th><th class="n">packets</th><th class="n">bytes</th></tr>` +
    rows.map(r => `<tr data-key="${esc(r.key)}" data-packets="${r.packets}" data-bytes="${r.bytes}">` +
      `<td><span class="swatch" style="background:${r.colour}"></span>${byTenant && r.key !== "" ?
        `<a href="${withRange("/console/tenants/" + encodeURIComponent(r.key))}">${name(r)}</a>` : name(r)}</td>` +
      `<td class="n">${num(r.packets)}</td><td class="n">${num(r.bytes)}</td></tr>`).join("") + "</table>";
}

// A traffic chart with its controls (split, metric, stacked/lines) and totals.
async function trafficPanel(el, {tenant, alerts, fixedBy}) {
  const by0 = fixedBy || params.get("by") || "protocol_type";
  el.innerHTML = `<div class="controls">
    ${fixedBy ? "" : `<label>split by <select class="by">
      <option value="protocol_type">protocol type</option><option value="size_class">size class</option><option value="tenant">tenant</option></select></label>`}
    <label>measure <select class="metric"><option value="packets">packets</option><option value="bytes">bytes</option></select></label>
    <label>draw <select class="mode"><option value="stacked">stacked</option><option value="lines">lines</option></select></label>
  </div><div class="chart"></div><p class="note step"></p><div class="totals-box"></div>`;
  const q = el.querySelector.bind(el);
  if (!fixedBy) q(".by").value = by0;
  let t = null;
  const draw = () => {
    const metric = q(".metric").value;
    const d = dense(t, metric);
    timeChart(q(".chart"), {...d, stacked: q(".mode").value === "stacked",
      unit: `${metric} per ${t.step_s} s`, alerts});
    q(".step").textContent = `${t.series.length} series, one point per ${t.step_s} s (from the ${t.table} table); ` +
      `dashed lines: alerts (red critical, orange warning).`;
    q(".totals-box").innerHTML = totalsTable(trafficTotals(t), el.dataset.by === "tenant");
  };
  const load = async () => {
    const by = fixedBy || q(".by").value;
    t = await api(`traffic?${rq("by=" + by + (tenant ? "&tenant=" + encodeURIComponent(tenant) : ""))}`);
    el.dataset.by = by;
    draw();
  };
  if (!fixedBy) q(".by").addEventListener("change", () => {
    params.set("by", q(".by").value);
    history.replaceState(null, "", "?" + params.toString());
    load().catch(fail);
  });
  q(".metric").addEventListener("change", draw);
  q(".mode").addEventListener("change", draw);
  await load();
}

function alertRows(list) {
  if (!list.length) return `<p class="note">no alerts in this range</p>`;
  return `<table class="alerts"><tr><th>first detected</th><th>kind</th><th>severity</th><th>state</th><th>tenant</th><th>subject</th><th class="n">events</th><th class="n">value</th><th class="n">threshold</th></tr>` +
    list.map(a => `<tr data-id="${esc(a.id)}">
      <td><a href="${withRange("/console/alerts/" + encodeURIComponent(a.id))}">${iso(a.first_ms / 1000)}</a></td>
      <td>${esc(a.kind)}</td><td class="${esc(a.severity)}">${esc(a.severity)}</td><td class="${esc(a.state)}">${esc(a.state)}</td>
      <td>${a.tenant ? `<a href="${withRange("/console/tenants/" + encodeURIComponent(a.tenant))}">${esc(a.tenant)}</a>` : ""}</td>
      <td>${esc(a.subject)}</td><td class="n">${a.events}</td><td class="n">${fmt(a.value)}</td><td class="n">${fmt(a.threshold)}</td></tr>`).join("") + "</table>";
}

function fmt(v) {
  if (typeof v === "string") return esc(v);
  if (typeof v !== "number") return esc(JSON.stringify(v));
  return Number.isInteger(v) ? num(v) : (Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(4));
}

function topTable(list, services) {
  if (!list.length) return `<p class="note">none</p>`;
  const proto = p => ({6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}[p] || p);
  return `<table class="top"><tr><th>${services ? "service" : "source"}</th><th>tenant</th><th class="n">packets</th><th class="n">bytes</th><th class="n">windows</th></tr>` +
    list.map(t => `<tr data-address="${esc(t.address)}" data-packets="${t.packets}"><td>${esc(t.address)}${services ? `:${t.port}/${proto(t.proto)}` : ""}</td>
      <td>${esc(t.tenant)}</td><td class="n">${num(t.packets)}</td><td class="n">${num(t.bytes)}</td><td class="n">${t.windows}</td></tr>`).join("") + "</table>";
}

// --- pages ---

async function overview(main) {
  main.innerHTML = `<h1>Overview</h1><h2>Traffic</h2><div id="traffic"></div>
    <div class="cols"><div><h2>Top talkers</h2><div id="talkers"></div></div><div><h2>Top services</h2><div id="services"></div></div></div>
    <p class="note">Tops: packets summed over the windows whose top 10 held the key (a lower bound when it was not always in them).</p>`;
  const alerts = await api(`alerts?${rq()}`);
  await trafficPanel($("traffic"), {alerts});
  $("traffic").dataset.markers = alerts.length;
  const [talkers, services] = await Promise.all([api(`top?${rq("of=talkers")}`), api(`top?${rq("of=services")}`)]);
  $("talkers").innerHTML = topTable(talkers, false);
  $("services").innerHTML = topTable(services, true);
}

async function alertsPage(main) {
  const f = ["kind", "tenant", "severity", "state"];
  main.innerHTML = `<h1>Alerts</h1><div class="controls">
    <label>kind <select id="f-kind"><option value="">any</option></select></label>
    <label>tenant <select id="f-tenant"><option value="">any</option></select></label>
    <label>severity <select id="f-severity"><option value="">any</option><option>critical</option><option>warning</option><option>info</option></select></label>
    <label>state <select id="f-state"><option value="">any</option><option>firing</option><option>resolved</option></select></label>
  </div><div id="list"></div><p class="note">Every alert with an event in the range or still open at its start; state: at the end of the range.</p>`;
  const all = await api(`alerts?${rq()}`);
  const fill = (id, values) => { for (const v of [...new Set(values)].sort()) $(id).insertAdjacentHTML("beforeend", `<option>${esc(v)}</option>`); };
  fill("f-kind", all.map(a => a.kind));
  fill("f-tenant", all.map(a => a.tenant).filter(t => t));
  for (const k of f) if (params.get(k)) $("f-" + k).value = params.get(k);
  const load = async () => {
    const q = f.filter(k => $("f-" + k).value).map(k => `${k}=${encodeURIComponent($("f-" + k).value)}`).join("&");
    const list = await api(`alerts?${rq(q)}`);
    $("list").innerHTML = alertRows(list);
    $("list").dataset.count = list.length;
  };
  for (const k of f) $("f-" + k).addEventListener("change", () => load().catch(fail));
  await load();
}

// Setups against nodes on log-log axes, with the fitted line `setups = c·nodes^b`
// through the points' median residual (the Theil–Sen intercept).
function growthChart(el, points, b, title) {
  const pts = points.filter(p => p[0] > 0 && p[1] > 0).sort((p, q) => p[0] - q[0] || p[1] - q[1]);
  if (pts.length < 2) { el.innerHTML = `<p class="note">too few points to draw</p>`; return; }
  const res = pts.map(p => Math.log10(p[1]) - b * Math.log10(p[0])).sort((a, c) => a - c);
  const c = res[res.length >> 1];
  const xs = pts.map(p => p[0]);
  const fit = xs.map(n => Math.pow(10, c + b * Math.log10(n)));
  el.innerHTML = `<p class="fit" data-exponent="${b.toFixed(2)}">${esc(title)}: setups ~ nodes^${b.toFixed(2)}</p><div></div>`;
  new uPlot({
    width: Math.min(560, width()), height: 360,
    scales: {x: {time: false, distr: 3, log: 10}, y: {distr: 3, log: 10}},
    axes: [{label: "active nodes", values: logLabels, filter: (u, splits) => splits, space: 10},
      {label: "setups per point", size: 70, values: logLabels, filter: (u, splits) => splits, space: 10}],
    series: [{label: "nodes"},
      {label: "points", stroke: "#36c", width: 0, paths: () => null, points: {show: true, size: 7, fill: "#36c"}},
      {label: `fit, exponent ${b.toFixed(2)}`, stroke: "#c33", width: 2, points: {show: false}}],
  }, [xs, pts.map(p => p[1]), fit], el.querySelector("div"));
}

function evidenceTable(ev) {
  const rows = Object.entries(ev || {}).filter(([k]) => k !== "history" && k !== "advice");
  return `<table class="evidence">` + rows.map(([k, v]) =>
    `<tr><th>${esc(k.replace(/_/g, " "))}</th><td data-field="${esc(k)}">${
      Array.isArray(v) && v.every(x => typeof x === "number") ? v.map(fmt).join(" – ") :
      Array.isArray(v) && v.every(x => x && x.flow != null && x.us != null) ?
        v.map(x => `${esc(x.flow)}: ${(x.us / 1000).toFixed(1)} ms`).join("<br>") :
      (v !== null && typeof v === "object") ? `<code>${esc(JSON.stringify(v))}</code>` :
      (/_ns$/.test(k) && v > 1e17) ? `${iso(Math.floor(v / 1e6) / 1000)}` : fmt(v)}</td></tr>`).join("") + "</table>";
}

function latencyBars(ev) {
  const rows = [["median", ev.baseline_p50_us, ev.p50_us], ["p99", ev.baseline_p99_us, ev.p99_us]]
    .filter(r => r[1] != null && r[2] != null);
  if (!rows.length) return "";
  const max = Math.max(...rows.flatMap(r => [r[1], r[2]]), 1);
  const bar = (v, cls) => `<span class="bar ${cls}" style="width:${Math.max(2, 300 * v / max)}px"></span> ${(v / 1000).toFixed(1)} ms`;
  return `<h2>Latency before and after (${esc(ev.measure)})</h2><table class="latency">` + rows.map(r =>
    `<tr><th>${r[0]}</th><td>baseline</td><td>${bar(r[1], "")}</td></tr><tr><th></th><td>window</td><td>${bar(r[2], "after")}</td></tr>`).join("") + "</table>";
}

function heartbeatGap(ev, events) {
  const resolved = events.find(e => e.state === "resolved");
  const period = ev.period_s;
  if (period == null) return "";
  const gap = resolved && resolved.evidence.gap_s != null ? resolved.evidence.gap_s : null;
  const scale = 400 / Math.max(gap || 0, 3 * period, period);
  return `<h2>The heartbeat's gap</h2><table class="gap">
    <tr><th>period</th><td><span class="bar" style="width:${period * scale}px"></span> ${fmt(period)} s (σ ${fmt(ev.spread_s ?? 0)} s)</td></tr>
    <tr><th>allowed silence</th><td><span class="bar" style="width:${events[0].threshold * scale}px"></span> ${fmt(events[0].threshold)} s</td></tr>
    ${gap == null ? "" : `<tr><th>silent for</th><td><span class="bar after" style="width:${gap * scale}px"></span> <span class="gap-s">${fmt(gap)}</span> s (${(gap / period).toFixed(1)} periods)</td></tr>`}
  </table>`;
}

async function alertPage(main, id) {
  const d = await api("alerts/" + encodeURIComponent(id));
  const a = d.alert, first = d.events[0], ev = first.evidence || {};
  const pcap = d.events.some(e => e.evidence && e.evidence.evidence_pcap);
  main.innerHTML = `<h1>${esc(a.kind)}: ${esc(a.subject)}</h1>
    <p><span class="${esc(a.severity)}">${esc(a.severity)}</span>, <span class="${esc(a.state)}">${esc(a.state)}</span>
      ${a.tenant ? ` — tenant <a href="${withRange("/console/tenants/" + encodeURIComponent(a.tenant))}">${esc(a.tenant)}</a>` : ""}
      — started ${iso(a.started_ms / 1000)}, id <code>${esc(a.id)}</code></p>
    ${ev.advice ? `<p class="advice">${esc(ev.advice)}</p>` : ""}
    <p id="pcap">${pcap ? `<a href="/api/alerts/${encodeURIComponent(a.id)}/pcap" download>Evidence capture (pcap, headers only)</a>` : `<span class="note">no evidence capture for this alert</span>`}</p>
    <h2>Timeline</h2><table id="timeline"><tr><th>detected</th><th>state</th><th>severity</th><th class="n">value</th><th class="n">threshold</th><th>agent</th></tr>
    ${d.events.map(e => `<tr data-state="${esc(e.state)}"><td>${iso(e.detected_ms / 1000)}</td><td class="${esc(e.state)}">${esc(e.state)}</td>
      <td class="${esc(e.severity)}">${esc(e.severity)}</td><td class="n">${fmt(e.value)}</td><td class="n">${fmt(e.threshold)}</td><td>${esc(e.agent)}</td></tr>`).join("")}</table>
    <div id="special"></div>
    <h2>Evidence</h2>${d.events.map(e => `<h3>${esc(e.state)} at ${iso(e.detected_ms / 1000)}</h3>${evidenceTable(e.evidence)}`).join("")}`;
  const sp = $("special");
  if (Array.isArray(ev.history) && ev.exponent != null) {
    sp.innerHTML = `<h2>Setups against nodes (log-log)</h2><div id="growth"></div>`;
    growthChart($("growth"), ev.history.map(h => [h[1], h[2]]), ev.exponent,
      `${a.tenant || a.subject}, ${ev.points} points of ${ev.point_s} s, R² ${fmt(ev.r2)}`);
  } else if (a.kind === "missed_heartbeat") {
    sp.innerHTML = heartbeatGap(ev, d.events);
  } else if (ev.baseline_p50_us != null) {
    sp.innerHTML = latencyBars(ev);
  }
}

async function tenantsPage(main) {
  const list = await api(`tenants?${rq()}`);
  main.innerHTML = `<h1>Tenants</h1>` + (list.length ? `<table id="tenants"><tr><th>tenant</th><th class="n">packets</th><th class="n">bytes</th><th class="n">alerts</th></tr>` +
    list.map(t => `<tr data-tenant="${esc(t.tenant)}" data-packets="${t.packets}"><td><a href="${withRange("/console/tenants/" + encodeURIComponent(t.tenant))}">${esc(t.tenant || "(none)")}</a></td>
      <td class="n">${num(t.packets)}</td><td class="n">${num(t.bytes)}</td><td class="n">${t.alerts}</td></tr>`).join("") + "</table>" : `<p class="note">no tenants in this range</p>`);
}

// The level to draw: the finest with a fit, else the one with most points.
function growthLevel(points) {
  const levels = [...new Set(points.map(p => p.point_s))].sort((a, b) => a - b);
  const fitted = levels.find(l => points.some(p => p.point_s === l && p.fit_points > 0));
  if (fitted != null) return fitted;
  return levels.sort((a, b) => points.filter(p => p.point_s === b).length - points.filter(p => p.point_s === a).length)[0];
}

async function tenantPage(main, name) {
  main.innerHTML = `<h1>Tenant ${esc(name)}</h1><div id="advice"></div>
    <h2>Traffic by protocol type</h2><div id="traffic"></div>
    <h2>Connection setups against active nodes</h2><div id="growth"></div>
    <h2>Handshake latency</h2><div id="latency"></div>
    <h2>Heartbeats</h2><div id="heartbeats"></div>
    <h2>Heartbeat gaps</h2><div id="gaps"></div>
    <h2>Alerts</h2><div id="alerts"></div>`;
  const t = encodeURIComponent(name);
  const alerts = await api(`alerts?${rq("tenant=" + t)}`);
  $("alerts").innerHTML = alertRows(alerts);
  await trafficPanel($("traffic"), {tenant: name, alerts, fixedBy: "protocol_type"});
  // Isolation advice: the text of each advice alert's first event.
  const advice = alerts.filter(a => a.kind === "isolation_advice");
  const texts = await Promise.all(advice.map(a => api("alerts/" + encodeURIComponent(a.id))));
  $("advice").innerHTML = texts.map(d => `<p class="advice">${esc(d.events[0].evidence.advice || "")}
    <span class="note">(${esc(d.alert.state)}, <a href="${withRange("/console/alerts/" + encodeURIComponent(d.alert.id))}">alert</a>)</span></p>`).join("");
  const g = await api(`growth?${rq("tenant=" + t)}`);
  if (!g.length) $("growth").innerHTML = `<p class="note">no growth points in this range</p>`;
  else {
    const level = growthLevel(g);
    const pts = g.filter(p => p.point_s === level);
    const last = pts.filter(p => p.fit_points > 0).pop();
    const b = last ? last.exponent : 1;
    growthChart($("growth"), pts.map(p => [p.nodes, p.setups]), b,
      `${name}, ${pts.length} points of ${level} s` + (last ? `, fitted over ${last.fit_points} points (95 %: ${last.exponent_low.toFixed(2)}–${last.exponent_high.toFixed(2)}, R² ${last.r2.toFixed(3)})` : ", not fitted yet (slope 1 drawn)"));
  }
  const l = await api(`latency?${rq("tenant=" + t)}`);
  if (!l.series.length) $("latency").innerHTML = `<p class="note">no handshake latency in this range</p>`;
  else {
    const xs = [...new Set(l.series.flatMap(s => s.points.map(p => p[0])))].sort((a, b) => a - b);
    const keys = [], values = [];
    for (const s of l.series) {
      const at = new Map(s.points.map(p => [p[0], p]));
      keys.push(`${s.stage} p50`, `${s.stage} p99`);
      values.push(xs.map(x => at.has(x) ? at.get(x)[2] / 1000 : null), xs.map(x => at.has(x) ? at.get(x)[3] / 1000 : null));
    }
    timeChart($("latency"), {x: xs, keys, values, stacked: false, unit: `ms (per ${l.step_s} s)`, alerts});
  }
  const beats = await api(`heartbeats?${rq("tenant=" + t)}`);
  $("heartbeats").innerHTML = beats.length ? `<table><tr><th>flow</th><th class="n">period (s)</th><th class="n">longest silence beyond its period (s)</th><th class="n">late snapshots</th><th>seen</th></tr>` +
    beats.map(h => `<tr data-flow="${esc(h.flow)}" data-period-ms="${h.period_ms}"><td>${esc(h.flow)}${h.bfd ? " (BFD)" : ""}</td>
      <td class="n">${(h.period_ms / 1000).toFixed(2)}</td><td class="n">${h.max_gap_ms > 0 ? (h.max_gap_ms / 1000).toFixed(2) : "none"}</td>
      <td class="n ${h.late ? "critical" : ""}">${h.late} of ${h.snapshots}</td><td>${iso(h.first_ts)} – ${iso(h.last_ts)}</td></tr>`).join("") + "</table>"
    : `<p class="note">no periodic flows learned in this range</p>`;
  const gaps = await api(`gaps?${rq("tenant=" + t)}`);
  $("gaps").innerHTML = gaps.length ? `<table><tr><th>detected</th><th>flow</th><th>state</th><th class="n">period (s)</th><th class="n">gap (s)</th><th>alert</th></tr>` +
    gaps.map(x => `<tr data-gap-ms="${x.gap_ms}"><td>${iso(x.ts)}</td><td>${esc(x.flow)}${x.bfd ? " (BFD)" : ""}</td><td class="${esc(x.state)}">${esc(x.state)}</td>
      <td class="n">${(x.period_ms / 1000).toFixed(2)}</td><td class="n">${(x.gap_ms / 1000).toFixed(2)}</td>
      <td>${x.alert_id ? `<a href="${withRange("/console/alerts/" + encodeURIComponent(x.alert_id))}">${esc(x.alert_id)}</a>` : ""}</td></tr>`).join("") + "</table>"
    : `<p class="note">no heartbeat gaps in this range</p>`;
}

function fail(e) {
  window.__errors.push(String(e && e.message || e));
  showErrors();
}

function showErrors() {
  const el = $("errors");
  el.dataset.count = window.__errors.length;
  el.textContent = window.__errors.join("\n");
  el.hidden = window.__errors.length === 0;
}

async function main() {
  const sel = $("range");
  sel.addEventListener("change", () => { params.set("range", sel.value); location.search = params.toString(); });
  const path = decodeURIComponent(location.pathname.replace(/^\/console\/?/, ""));
  const [page, arg] = path.includes("/") ? [path.slice(0, path.indexOf("/")), path.slice(path.indexOf("/") + 1)] : [path, ""];
  const here = page === "" ? "overview" : page;
  for (const a of document.querySelectorAll("nav a[data-nav]")) {
    a.classList.toggle("here", a.dataset.nav === here);
  }
  const m = $("main");
  await range();
  for (const a of document.querySelectorAll("nav a[data-nav]")) a.href = withRange(a.getAttribute("href"));
  if (page === "") await overview(m);
  else if (page === "alerts" && arg) await alertPage(m, arg);
  else if (page === "alerts") await alertsPage(m);
  else if (page === "tenants" && arg) await tenantPage(m, arg);
  else if (page === "tenants") await tenantsPage(m);
  else m.innerHTML = `<h1>Not found</h1><p>No console page ${esc(location.pathname)}.</p>`;
  document.title = `tapwatch — ${m.querySelector("h1") ? m.querySelector("h1").textContent : "console"}`;
}

main().catch(fail).finally(() => {
  showErrors();
  document.body.dataset.ready = "1";
});
