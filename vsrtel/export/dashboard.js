// The vsrtel live dashboard: polls /api/metrics every second and draws one SVG chart per
// metric family. Everything from the server goes into the DOM through textContent or
// setAttribute with numbers: never parsed as HTML.
"use strict";

const POLL_MS = 1000;
const WINDOW = 120; // points kept per series
const MAX_SERIES = 10; // tag sets drawn per chart; the OTel overflow series comes on top
const WIDTH = 420, HEIGHT = 160, PAD_LEFT = 56, PAD_RIGHT = 6, PAD_Y = 8;
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const OVERFLOW_COLOUR = "#000";
const SVG = "http://www.w3.org/2000/svg"; // an XML namespace name, never fetched
const KINDS = new Set(["counter", "gauge", "histogram"]);

const charts = new Map(); // family name -> chart
const groups = new Map(); // name prefix -> section element

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function num(v) {
  if (typeof v === "number") return v;
  return v === "+Inf" ? Infinity : v === "-Inf" ? -Infinity : Number(v); // "NaN" too
}

function fmt(v) {
  if (v === null || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  return String(Math.round(v * 1000) / 1000);
}

// The labels that tell a tag set apart: not the scope's, not a bucket's bound.
function seriesOf(labels) {
  const keys = Object.keys(labels)
    .filter((k) => !k.startsWith("otel_scope_") && k !== "le" && k !== "otel_metric_overflow")
    .sort();
  const overflow = labels.otel_metric_overflow === "true";
  const key = (overflow ? "!" : "") + JSON.stringify(keys.map((k) => [k, labels[k]]));
  let label = keys.map((k) => `${k}=${labels[k]}`).join(", ") || "(no tags)";
  if (overflow) label = "overflow: tag sets past the cap";
  return { key, label, overflow };
}

function groupFor(name) {
  const prefix = name.split("_").slice(0, 2).join("_");
  let section = groups.get(prefix);
  if (!section) {
    const wrapper = el("section");
    wrapper.dataset.group = prefix;
    wrapper.append(el("h2", "", prefix));
    section = el("div", "group");
    wrapper.append(section);
    const main = document.getElementById("charts");
    const after = [...main.children].find((s) => s.dataset.group > prefix);
    main.insertBefore(wrapper, after || null);
    groups.set(prefix, section);
  }
  return section;
}

function makeChart(family) {
  const box = el("div", "chart");
  box.dataset.metric = family.name;
  const what = { counter: "rate per second", gauge: "value", histogram: "p50 and p99 (dashed)" };
  box.append(el("h3", "", family.help || family.name));
  const unit = family.unit ? `, ${family.unit}` : "";
  box.append(el("div", "name", `${family.name} (${family.type}: ${what[family.type]}${unit})`));
  const svg = svgEl("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img" });
  box.append(svg);
  const legend = el("ul");
  box.append(legend);
  const note = el("div", "note");
  box.append(note);
  groupFor(family.name).append(box);
  return { family: family.name, type: family.type, box, svg, legend, note, series: new Map() };
}

// Histogram quantile from cumulative buckets [[le, count]...], as Prometheus estimates it.
function quantile(q, buckets) {
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!(total > 0)) return null;
  const rank = q * total;
  let lower = 0, below = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (le === Infinity) return lower;
      if (count === below) return le;
      return lower + (le - lower) * ((rank - below) / (count - below));
    }
    lower = le;
    below = count;
  }
  return lower;
}

// The newest value of each tag set of a family, as the chart plots it.
function readings(chart, family, now) {
  const out = new Map(); // key -> {label, overflow, values: [v] or [p50, p99]}
  const raw = new Map();
  for (const s of family.samples) {
    const { key, label, overflow } = seriesOf(s.labels);
    if (!raw.has(key)) raw.set(key, { label, overflow, value: null, buckets: [] });
    const r = raw.get(key);
    if (chart.type === "counter" && s.name === family.name + "_total") r.value = num(s.value);
    if (chart.type === "gauge" && s.name === family.name) r.value = num(s.value);
    if (chart.type === "histogram" && s.name === family.name + "_bucket") {
      r.buckets.push([num(s.labels.le), num(s.value)]);
    }
  }
  for (const [key, r] of raw) {
    const prev = chart.series.get(key);
    let values;
    if (chart.type === "gauge") {
      if (r.value === null) continue;
      values = [r.value];
    } else if (chart.type === "counter") {
      if (r.value === null) continue;
      const last = prev && prev.last;
      const rate = last && r.value >= last.value && now > last.t
        ? (r.value - last.value) / ((now - last.t) / 1000) : null;
      values = [rate];
      r.last = { t: now, value: r.value };
    } else {
      if (!r.buckets.length) continue;
      r.buckets.sort((a, b) => a[0] - b[0]);
      // Quantiles of the observations since the previous poll (all of them at first).
      const before = prev && prev.last ? prev.last.buckets : null;
      const recent = r.buckets.map(([le, c], i) =>
        [le, before && before.length === r.buckets.length && c >= before[i][1]
          ? c - before[i][1] : c]);
      values = [quantile(0.5, recent), quantile(0.99, recent)];
      r.last = { t: now, buckets: r.buckets };
    }
    out.set(key, { label: r.label, overflow: r.overflow, values, last: r.last });
  }
  return out;
}

function update(chart, family, now) {
  let shown = 0, hidden = 0;
  for (const [key, reading] of readings(chart, family, now)) {
    let series = chart.series.get(key);
    if (!series) {
      if (!reading.overflow && shown >= MAX_SERIES) { hidden++; continue; }
      series = { label: reading.label, overflow: reading.overflow, points: [], last: null };
      series.colour = reading.overflow ? OVERFLOW_COLOUR : COLOURS[chart.series.size % 10];
      chart.series.set(key, series);
    }
    if (!series.overflow) shown++;
    series.last = reading.last;
    series.points.push({ t: now, values: reading.values });
    if (series.points.length > WINDOW) series.points.shift();
  }
  for (const [key, series] of chart.series) {
    if (series.points.length && now - series.points[series.points.length - 1].t >
        WINDOW * POLL_MS) chart.series.delete(key);
  }
  chart.note.textContent = hidden ? `${hidden} more tag set(s) not drawn (cap ${MAX_SERIES})` : "";
  draw(chart, now);
}

function draw(chart, now) {
  const svg = chart.svg;
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  let lo = Infinity, hi = -Infinity;
  for (const s of chart.series.values()) {
    for (const p of s.points) {
      for (const v of p.values) {
        if (v !== null && Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      }
    }
  }
  if (lo === Infinity) { lo = 0; hi = 1; }
  if (lo > 0) lo = 0;
  if (hi === lo) hi = lo + 1;
  const span = WINDOW * POLL_MS;
  const x = (t) => PAD_LEFT + (WIDTH - PAD_LEFT - PAD_RIGHT) * (1 - (now - t) / span);
  const y = (v) => HEIGHT - PAD_Y - (HEIGHT - 2 * PAD_Y) * ((v - lo) / (hi - lo));
  svg.append(svgEl("line", { x1: PAD_LEFT, y1: PAD_Y, x2: PAD_LEFT, y2: HEIGHT - PAD_Y,
    stroke: "#999" }));
  svg.append(svgEl("line", { x1: PAD_LEFT, y1: y(lo), x2: WIDTH - PAD_RIGHT, y2: y(lo),
    stroke: "#999" }));
  for (const [v, at] of [[hi, PAD_Y + 10], [lo, HEIGHT - PAD_Y]]) {
    const label = svgEl("text", { x: PAD_LEFT - 4, y: at, "text-anchor": "end",
      "font-size": 11, fill: "#555" });
    label.textContent = fmt(v);
    svg.append(label);
  }
  chart.legend.replaceChildren();
  for (const s of chart.series.values()) {
    const lines = s.points[0] ? s.points[0].values.length : 1;
    for (let i = 0; i < lines; i++) {
      const path = [];
      for (const p of s.points) {
        const v = p.values[i];
        if (v !== null && Number.isFinite(v)) path.push(`${x(p.t).toFixed(1)},${y(v).toFixed(1)}`);
      }
      if (!path.length) continue;
      svg.append(svgEl("polyline", { points: path.join(" "), fill: "none", stroke: s.colour,
        "stroke-width": 1.5, "stroke-dasharray": i ? "4 3" : "none" }));
    }
    const latest = s.points.length ? s.points[s.points.length - 1].values : [];
    const item = el("li");
    const swatch = el("span", "swatch");
    swatch.style.background = s.colour;
    item.append(swatch, el("span", "value", latest.map(fmt).join(" / ")),
      el("span", "label", s.label));
    chart.legend.append(item);
  }
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("/api/metrics", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    const now = Date.now();
    for (const family of data.families) {
      if (!KINDS.has(family.type)) continue;
      let chart = charts.get(family.name);
      if (!chart) {
        chart = makeChart(family);
        charts.set(family.name, chart);
      }
      update(chart, family, now);
    }
    status.className = "";
    status.textContent = `updated ${new Date(now).toLocaleTimeString()}, ${charts.size} metrics`;
  } catch (err) {
    status.className = "error";
    status.textContent = `cannot read /api/metrics: ${err}`;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
