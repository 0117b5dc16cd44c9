// leo-emu live map: polls /api/state, fetches /api/frame/K when the slice changes, redraws the SVG.
// Plain DOM + SVG, no external script: the page works offline.
"use strict";

const NS = "http://www.w3.org/2000/svg";
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];
const POLL_MS = 400;
let meta = null, shownSlice = null, busy = false;
const shown = [];

function $(id) { return document.getElementById(id); }

function el(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function clear(id) { const g = $(id); while (g.firstChild) g.removeChild(g.firstChild); return g; }

// a great-circle link drawn straight in lon/lat; one crossing the antimeridian is drawn twice, shifted by 360
function seg(parent, a, b, attrs) {
  const [la1, lo1] = a, [la2, lo2] = b;
  const line = (x1, x2) => el("line", {x1: x1, y1: la1, x2: x2, y2: la2, ...attrs}, parent);
  if (Math.abs(lo2 - lo1) > 180) {
    const s = lo2 > lo1 ? -360 : 360;
    line(lo1, lo2 + s); line(lo1 - s, lo2);
  } else {
    line(lo1, lo2);
  }
}

async function getJSON(url) {
  const r = await fetch(url, {cache: "no-store"});
  if (!r.ok) throw new Error(url + ": HTTP " + r.status);
  return r.json();
}

function drawStatic() {
  $("scenario").textContent = "leo-emu: " + meta.scenario;
  const polar = clear("polar");
  for (const s of [1, -1]) {
    el("line", {x1: -180, x2: 180, y1: s * meta.polar_lat_deg, y2: s * meta.polar_lat_deg, class: "polar"}, polar);
  }
  const g = clear("ground"), labels = clear("labels");
  for (const n of meta.ground) {
    if (n.kind === "gs") {
      el("path", {d: `M${n.lon},${n.lat + 2} l1.8,-3.2 l-3.6,0 z`, class: "gs"}, g);
    } else {
      el("rect", {x: n.lon - 1.2, y: n.lat - 1.2, width: 2.4, height: 2.4, class: "ut"}, g);
    }
    const t = el("text", {x: n.lon + 1.8, y: -n.lat - 1.2, class: "label"}, labels);
    t.textContent = n.name;
  }
  const legend = $("legend");
  const item = (colour, text, dash) => {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = dash ? `repeating-linear-gradient(90deg, ${colour} 0 5px, transparent 5px 8px)` : colour;
    li.appendChild(sw);
    li.appendChild(document.createTextNode(text));
    legend.appendChild(li);
  };
  meta.groups.forEach((name, i) => item(COLOURS[i % COLOURS.length], "satellites " + name));
  for (const c of meta.link_classes) item(meta.link_style[c][0], "ISL " + c, meta.link_style[c][1] !== "");
  item("#2ca02c", "serving link");
  item("#d62728", "ring: no E or W ISL (seam/polar)", true);
  item("#ff1493", "path of a chosen pair");
  item("#d62728", `polar limit ±${meta.polar_lat_deg}°`, true);
}

async function drawCoast() {
  const rings = await getJSON("/api/coast");
  const g = clear("coast");
  for (const r of rings) el("polygon", {points: r.map(p => p[0] + "," + p[1]).join(" "), class: "land"}, g);
}

function drawFrame(fr) {
  const links = clear("links");
  for (const [a, b, c] of fr.links) {
    const [colour, dash, w] = meta.link_style[meta.link_classes[c]];
    seg(links, fr.sats[a], fr.sats[b], {stroke: colour, "stroke-width": w, "stroke-dasharray": dash});
  }
  const serving = clear("serving");
  for (const [gi, s] of fr.serving) {
    const n = meta.ground[gi];
    seg(serving, [n.lat, n.lon], fr.sats[s], {class: "serving"});
  }
  const sats = clear("sats");
  fr.sats.forEach(([lat, lon], i) => {
    const c = el("circle", {cx: lon, cy: lat, r: 1.3, class: "sat", fill: COLOURS[meta.sat_group[i] % COLOURS.length]}, sats);
    el("title", {}, c).textContent = meta.satellites[i];
  });
  for (const i of fr.ew_off) {
    const [lat, lon] = fr.sats[i];
    el("circle", {cx: lon, cy: lat, r: 2.4, class: "ew-off"}, sats);
  }
  const paths = clear("paths");
  const list = $("path-list");
  list.textContent = "";
  for (const p of fr.paths) {
    const pts = p.hops.filter(h => h.lat !== null);
    for (let i = 0; i + 1 < pts.length; i++) seg(paths, [pts[i].lat, pts[i].lon], [pts[i + 1].lat, pts[i + 1].lon], {class: "path"});
    const li = document.createElement("li");
    li.className = "path-item";
    li.textContent = p.reachable
      ? `${p.src} → ${p.dst}: ${p.one_way_ms.toFixed(1)} ms one way: ` +
        p.hops.map(h => h.node + (h.egress ? ` —${h.egress}→` : "")).join(" ")
      : `${p.src} → ${p.dst}: unreachable (${p.reason})`;
    list.appendChild(li);
  }
  $("slice").textContent = String(fr.slice);
  $("time").textContent = `${fr.time_s.toFixed(0)} s`;
  $("sat-count").textContent = String(fr.sats.length);
  $("link-count").textContent = String(fr.links.length);
  $("serving-count").textContent = String(fr.serving.length);
  document.body.dataset.slice = String(fr.slice);
  shownSlice = fr.slice;
  shown.push(fr.slice);
  if (shown.length > 50) shown.shift();
  $("shown-list").textContent = shown.join(" ");
}

// measured RTTs (a results file a probe appends to): the last value and a sparkline of the recent ones
function drawMeasured(m) {
  $("measured-box").hidden = !m;
  if (!m) return;
  const list = $("measured");
  list.textContent = "";
  for (const [pair, pts] of Object.entries(m.pairs)) {
    const li = document.createElement("li");
    li.className = "measured-item";
    const [t, rtt] = pts[pts.length - 1];
    li.textContent = `${pair.replace(">", " → ")}: ${rtt.toFixed(1)} ms at t = ${t.toFixed(0)} s (${pts.length} samples) `;
    const ys = pts.map(p => p[1]), lo = Math.min(...ys), hi = Math.max(...ys);
    const svg = el("svg", {width: 120, height: 24, viewBox: "0 0 120 24", class: "spark"}, null);
    el("polyline", {points: pts.map((p, i) => `${(i / Math.max(1, pts.length - 1)) * 118 + 1},` +
      `${22 - (hi > lo ? (p[1] - lo) / (hi - lo) : 0.5) * 20}`).join(" ")}, svg);
    li.appendChild(svg);
    list.appendChild(li);
  }
  $("measured-note").textContent = m.file + (m.error ? ` (${m.error})` : "");
}

function drawState(st) {
  $("mode").textContent = st.mode === "run" ? `run ${st.run}` : "plan replay";
  $("state").textContent = st.state;
  const tb = $("applied").tBodies[0];
  tb.textContent = "";
  for (const a of (st.applied || []).slice(-12).reverse()) {
    const tr = document.createElement("tr");
    for (const v of [a.slice, a.apply_ms, a.prep_ms]) {
      const td = document.createElement("td");
      td.textContent = v === undefined || v === null ? "" : String(v);
      tr.appendChild(td);
    }
    tb.appendChild(tr);
  }
  $("apply-summary").textContent = st.mode === "run"
    ? (st.apply_p50_ms != null ? `apply p50 ${st.apply_p50_ms} ms, p99 ${st.apply_p99_ms} ms, max ${st.apply_max_ms} ms` : "no boundary applied yet")
    : "replaying the plan: no data plane, no apply times";
  $("error").textContent = st.error ? "error: " + st.error : "";
  drawMeasured(st.measured);
}

async function poll() {
  if (busy) return;
  busy = true;
  try {
    const st = await getJSON("/api/state");
    drawState(st);
    if (st.slice !== null && st.slice !== shownSlice) drawFrame(await getJSON("/api/frame/" + st.slice));
  } catch (e) {
    $("error").textContent = String(e);
  } finally {
    busy = false;
  }
}

async function main() {
  meta = await getJSON("/api/meta");
  drawStatic();
  drawCoast().catch(e => { $("error").textContent = String(e); });
  await poll();
  setInterval(poll, POLL_MS);
}

main();
