// The vsrtel live dashboard: loads the server's recent history from /api/metrics, then asks
// for the new points every second, and draws one SVG chart per metric. Everything from the
// server goes into the DOM through textContent or setAttribute: never parsed as HTML.
"use strict";

const POLL_MS = 1000;
const HEIGHT = 190, PAD_LEFT = 64, PAD_RIGHT = 10, PAD_TOP = 10, PAD_BOTTOM = 22;
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#ad494a"];
const DASHES = ["", "6 3", "2 3", "10 3 2 3"];
const OVERFLOW_STYLE = { colour: "#000", dash: "1 3" };
const SVG = "http://www.w3.org/2000/svg"; // an XML namespace name, never fetched
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800]; // seconds

const state = {
  end: 0, // ticks the page has, as the server counts them
  times: [], // ms since the epoch of each point
  points: 900,
  windowMs: 15 * 60 * 1000, // all the history the server keeps
  hover: null, // the instant under the pointer, on every chart
  hoverChart: null,
  quantiles: [0.5, 0.9, 0.99],
  charts: new Map(), // metric name -> chart
  groups: new Map(), // name prefix -> group element
  refreshMs: [], // time to merge and draw each poll's answer (the cost figure)
};
window.vsrtelDashboard = state; // for the browser test and the curious

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

// ------------------------------------------------------------------ units and numbers

// The unit a chart's values are in: {base, rate}; "seconds" reads as s, "bytes" as B.
function unitOf(chart) {
  const base = { seconds: "s", bytes: "B" }[chart.unit] ?? chart.unit;
  return { base, rate: chart.type === "counter" };
}

// The scale that makes `magnitude` readable: [factor, prefix]. Seconds go down to ms and µs
// (never up to ks); other units up to k, M, G.
function scaleFor(magnitude, base) {
  if (base === "s") {
    if (magnitude > 0 && magnitude < 1e-3) return [1e-6, "µ"];
    return magnitude > 0 && magnitude < 1 ? [1e-3, "m"] : [1, ""];
  }
  for (const [factor, prefix] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
    if (magnitude >= factor) return [factor, prefix];
  }
  return [1, ""];
}

function withUnit(text, prefix, unit) {
  const symbol = prefix + unit.base;
  return (unit.base ? `${text} ${symbol}` : text + symbol) + (unit.rate ? "/s" : "");
}

// A value in its readable scale, to `digits` significant digits (3 in legends and hover).
function fmtValue(v, unit, digits = 3) {
  if (v === null || v === undefined) return "–";
  const [factor, prefix] = v ? scaleFor(Math.abs(v), unit.base) : [1, ""];
  return withUnit(String(Number((v / factor).toPrecision(digits))), prefix, unit);
}

function niceStep(range, count) {
  const raw = range / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const n = raw / magnitude;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * magnitude;
}

// Round ticks over [lo, hi], each labelled in its readable scale: 500/s, 1k/s, 1.5k/s.
function yTicks(lo, hi, unit) {
  const step = niceStep(hi - lo, 4);
  const first = Math.floor(lo / step) * step, last = Math.ceil(hi / step) * step;
  const ticks = [];
  for (let i = 0; first + i * step <= last + step / 2; i++) {
    const v = Number((first + i * step).toPrecision(12)); // no 0.30000000000000004
    ticks.push({ v, text: fmtValue(v, unit, 6) });
  }
  return { lo: first, hi: last, ticks };
}

// A coordinate to a tenth of a pixel (far quicker than toFixed over 150,000 points).
const px = (v) => Math.round(v * 10) / 10;

function clock(t, seconds) {
  const d = new Date(t);
  const parts = [d.getHours(), d.getMinutes()].concat(seconds ? [d.getSeconds()] : []);
  return parts.map((n) => String(n).padStart(2, "0")).join(":");
}

// ------------------------------------------------------------------ series styles

function hash(text) {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
  return h >>> 0;
}

// One style per tag set, the same on every chart: colour and dash follow the first tag's
// value (a small number picks its slot directly, so node_id=0, 1, 2 never collide), or with
// more tags the dash follows the others. Lines that lie on each other stay visible through
// the dash gaps; two series of one chart that would look alike get another dash.
function styleFor(chart, series) {
  if (series.overflow) return OVERFLOW_STYLE;
  const pairs = series.pairs;
  const first = pairs.length ? pairs[0][1] : "";
  const slot = /^\d{1,6}$/.test(first) ? Number(first) : hash(pairs.length ? pairs[0].join("=") : "");
  const colour = PALETTE[slot % PALETTE.length];
  let dash = (pairs.length > 1 ? hash(JSON.stringify(pairs.slice(1))) : slot) % DASHES.length;
  const taken = new Set([...chart.series.values()].filter((s) => s.style && s.style.colour === colour)
    .map((s) => s.style.dash));
  for (let i = 0; i < DASHES.length && taken.has(DASHES[dash]); i++) dash = (dash + 1) % DASHES.length;
  return { colour, dash: DASHES[dash] };
}

// ------------------------------------------------------------------ page structure

function groupFor(name) {
  const prefix = name.split("_").slice(0, 2).join("_");
  let group = state.groups.get(prefix);
  if (!group) {
    const details = el("details");
    details.open = true;
    details.dataset.group = prefix;
    const summary = el("summary", "", prefix);
    details.append(summary, el("div", "group"));
    const main = document.getElementById("charts");
    const after = [...main.children].find((g) => g.dataset.group > prefix);
    main.insertBefore(details, after || null);
    group = details;
    state.groups.set(prefix, group);
  }
  return group;
}

function makeChart(family) {
  const chart = { name: family.name, type: family.type, unit: family.unit, series: new Map(),
    stat: family.type === "histogram" ? state.quantiles.length - 1 : 0, width: 0 };
  chart.box = el("div", "chart");
  chart.box.chart = chart;
  onScreen.observe(chart.box);
  chart.box.dataset.metric = family.name;
  const head = el("div", "head");
  head.append(el("h3", "", family.help || family.name));
  if (family.type === "histogram") {
    const select = el("select", "stat");
    select.title = "quantile of the observations of each second";
    state.quantiles.forEach((q, i) => select.append(new Option(`p${Math.round(q * 100)}`, i)));
    select.value = String(chart.stat);
    select.addEventListener("change", () => { chart.stat = Number(select.value); draw(chart); });
    head.append(select);
  }
  const unit = unitOf(chart);
  const shown = { counter: "rate", gauge: "value", histogram: "p50/p90/p99" }[family.type];
  const unitText = withUnit("", "", unit).trim() || "no unit";
  chart.box.append(head, el("div", "name", `${family.name} · ${family.type}: ${shown}, ${unitText}`));
  chart.plot = el("div", "plot");
  chart.svg = svgEl("svg", { height: HEIGHT, role: "img" });
  chart.svg.chart = chart;
  resized.observe(chart.svg);
  chart.axes = svgEl("g", {});
  chart.lines = svgEl("g", { fill: "none", "stroke-width": 1.5, "stroke-linejoin": "round" });
  chart.marks = svgEl("g", {});
  chart.svg.append(chart.axes, chart.lines, chart.marks);
  chart.tip = el("div", "tip");
  chart.plot.append(chart.svg, chart.tip);
  chart.legend = el("ul");
  chart.note = el("div", "note");
  chart.box.append(chart.plot, chart.legend, chart.note);
  chart.svg.addEventListener("mousemove", (e) => hoverAt(chart, e.clientX));
  chart.svg.addEventListener("mouseleave", () => { state.hover = null; drawMarks(); });
  groupFor(family.name).querySelector(".group").append(chart.box);
  return chart;
}

function makeSeries(chart, s, length) {
  const series = { key: s.key, label: s.label || "(no tags)", overflow: s.overflow,
    pairs: s.overflow ? [] : JSON.parse(s.key), values: s.values.map(() => Array(length).fill(null)),
    hidden: false };
  series.style = styleFor(chart, series);
  series.item = el("li");
  const swatch = svgEl("svg", { width: 22, height: 10, class: "swatch" });
  swatch.append(svgEl("line", { x1: 0, y1: 5, x2: 22, y2: 5, stroke: series.style.colour,
    "stroke-width": 2, "stroke-dasharray": series.style.dash || "none" }));
  series.valueEl = el("span", "value");
  series.item.append(swatch, series.valueEl, el("span", "label", series.label));
  series.item.title = "click: hide or show; double-click: show this one alone";
  series.item.addEventListener("click", () => { series.hidden = !series.hidden; draw(chart); });
  series.item.addEventListener("dblclick", () => {
    const alone = [...chart.series.values()].every((o) => o.hidden === (o !== series));
    for (const o of chart.series.values()) o.hidden = alone ? false : o !== series;
    draw(chart);
  });
  chart.legend.append(series.item);
  return series;
}

// ------------------------------------------------------------------ data

function merge(data) {
  if (data.start !== state.end) { // a gap (the server restarted, or the page slept): start over
    state.times = [];
    for (const chart of state.charts.values()) { chart.series.clear(); chart.legend.replaceChildren(); }
  }
  const before = state.times.length;
  state.points = data.points;
  state.maxSeries = data.max_series;
  state.quantiles = data.quantiles;
  state.times.push(...data.times);
  state.end = data.end;
  const seen = new Set();
  for (const family of data.families) {
    seen.add(family.name);
    let chart = state.charts.get(family.name);
    if (!chart) state.charts.set(family.name, chart = makeChart(family));
    chart.leftOut = family.hidden; // tag sets past the server's cap
    const keys = new Set();
    for (const s of family.series) {
      keys.add(s.key);
      let series = chart.series.get(s.key);
      if (!series) chart.series.set(s.key, series = makeSeries(chart, s, before));
      s.values.forEach((values, i) => series.values[i].push(...values));
    }
    for (const [key, series] of chart.series) {
      if (!keys.has(key)) { series.item.remove(); chart.series.delete(key); } // gone a whole window
    }
  }
  for (const [name, chart] of state.charts) {
    if (!seen.has(name)) {
      onScreen.unobserve(chart.box);
      resized.unobserve(chart.svg);
      chart.box.remove();
      state.charts.delete(name);
    }
  }
  const extra = state.times.length - state.points;
  if (extra > 0) {
    state.times.splice(0, extra);
    for (const chart of state.charts.values()) {
      for (const series of chart.series.values()) series.values.forEach((v) => v.splice(0, extra));
    }
  }
}

// The window on show: the latest `windowMs`, or all the history while it is shorter.
function visibleFrom() {
  const times = state.times;
  const end = times.length ? times[times.length - 1] : Date.now();
  const start = Math.max(end - state.windowMs, times.length ? times[0] : end - state.windowMs);
  let i = 0;
  while (i < times.length && times[i] < start) i++;
  return { i, start, end, span: Math.max(end - start, 1000) };
}

// ------------------------------------------------------------------ drawing

// Only the charts on screen (or nearly) are drawn; the others when they scroll into view.
// So a refresh costs what the window shows, however many charts the page holds.
function drawAll() {
  for (const chart of state.charts.values()) if (chart.visible) draw(chart);
}

const onScreen = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    const chart = entry.target.chart;
    chart.visible = entry.isIntersecting;
    if (chart.visible && chart.width) draw(chart);
  }
}, { rootMargin: "300px 0px" });

// Each chart's width as laid out, told after layout: drawing never waits for one.
const resized = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const chart = entry.target.chart;
    if (chart && Math.round(entry.contentRect.width) !== chart.width) {
      chart.width = Math.round(entry.contentRect.width);
      if (chart.width && chart.visible) draw(chart);
    }
  }
});

function geometry(chart, from) {
  const width = Math.max(chart.width, 200);
  const plotW = width - PAD_LEFT - PAD_RIGHT;
  return { width, x: (t) => PAD_LEFT + plotW * (t - from.start) / from.span };
}

function draw(chart) {
  const from = visibleFrom();
  const unit = unitOf(chart);
  const stat = chart.stat;
  const shown = [...chart.series.values()].filter((s) => !s.hidden);
  let lo = Infinity, hi = -Infinity;
  for (const s of shown) {
    const values = s.values[stat] || s.values[0];
    for (let i = from.i; i < values.length; i++) {
      const v = values[i];
      if (v !== null) { if (v < lo) lo = v; if (v > hi) hi = v; }
    }
  }
  if (lo === Infinity) { lo = 0; hi = 1; }
  if (chart.type !== "gauge" && lo > 0) lo = 0; // rates and durations read from zero
  if (hi === lo) { hi += Math.abs(hi) / 10 || 1; lo -= chart.type === "gauge" ? Math.abs(lo) / 10 : 0; }
  const axis = yTicks(lo, hi, unit);
  const { width, x } = geometry(chart, from);
  const plotH = HEIGHT - PAD_TOP - PAD_BOTTOM;
  const y = (v) => PAD_TOP + plotH * (1 - (v - axis.lo) / (axis.hi - axis.lo));
  chart.y = y;
  chart.svg.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);

  const axes = [];
  for (const tick of axis.ticks) {
    const at = px(y(tick.v));
    axes.push(svgEl("line", { x1: PAD_LEFT, x2: width - PAD_RIGHT, y1: at, y2: at,
      stroke: tick.v === axis.lo ? "#999" : "#eee" }));
    const label = svgEl("text", { x: PAD_LEFT - 5, y: Number(at) + 4, class: "y-tick",
      "text-anchor": "end" });
    label.textContent = tick.text;
    axes.push(label);
  }
  const pxPerLabel = 70;
  const step = 1000 * (TIME_STEPS.find((s) => from.span / (s * 1000) <= (width - PAD_LEFT) / pxPerLabel)
    || TIME_STEPS[TIME_STEPS.length - 1]);
  for (let t = Math.ceil(from.start / step) * step; t <= from.end; t += step) {
    const at = px(x(t));
    axes.push(svgEl("line", { x1: at, x2: at, y1: PAD_TOP, y2: HEIGHT - PAD_BOTTOM, stroke: "#f0f0f0" }));
    // A label centred near the right edge would be cut off: end it at the tick instead.
    const anchor = Number(at) + 28 > width ? "end" : "middle";
    const label = svgEl("text", { x: at, y: HEIGHT - 6, class: "x-tick", "text-anchor": anchor });
    label.textContent = clock(t, step < 60000);
    axes.push(label);
  }
  chart.axes.replaceChildren(...axes);

  const lines = [];
  for (const s of shown) {
    const values = s.values[stat] || s.values[0];
    let d = "", pen = "M";
    for (let i = from.i; i < values.length; i++) {
      const v = values[i];
      if (v === null) { pen = "M"; continue; }
      d += pen + px(x(state.times[i])) + " " + px(y(v));
      pen = "L";
    }
    if (d) {
      lines.push(svgEl("path", { d, stroke: s.style.colour, "stroke-dasharray": s.style.dash || "none",
        "data-series": s.label }));
    }
  }
  chart.lines.replaceChildren(...lines);
  chart.note.textContent = chart.leftOut
    ? `${chart.leftOut} more tag set(s) not drawn (at most ${state.maxSeries} per chart)` : "";
  drawMarks(chart);
}

function hoverAt(chart, clientX) {
  const from = visibleFrom();
  const box = chart.svg.getBoundingClientRect();
  const { width } = geometry(chart, from);
  const t = from.start + from.span * (clientX - box.left - PAD_LEFT) / (width - PAD_LEFT - PAD_RIGHT);
  let best = null;
  for (let i = from.i; i < state.times.length; i++) {
    if (best === null || Math.abs(state.times[i] - t) < Math.abs(state.times[best] - t)) best = i;
  }
  state.hover = best === null ? null : state.times[best];
  state.hoverChart = chart;
  drawMarks();
}

// The hovered instant on every chart (or only `one`), with the values there in the legends
// and, on the hovered chart, beside the pointer.
function drawMarks(one) {
  const from = visibleFrom();
  const index = state.hover === null ? -1 : state.times.lastIndexOf(state.hover);
  for (const chart of one ? [one] : state.charts.values()) {
    if (!chart.visible) continue;
    const latest = index < from.i;
    const marks = [];
    const tip = [];
    if (index >= from.i && chart.y) {
      const at = px(geometry(chart, from).x(state.hover));
      marks.push(svgEl("line", { x1: at, x2: at, y1: PAD_TOP, y2: HEIGHT - PAD_BOTTOM,
        stroke: "#555", "stroke-dasharray": "3 2", class: "rule" }));
      tip.push(el("div", "when", clock(state.hover, true)));
    }
    for (const s of chart.series.values()) {
      const values = s.values[chart.stat] || s.values[0];
      let i = latest ? values.length - 1 : index; // the latest point, or the hovered one
      while (latest && i > from.i && values[i] === null) i--;
      const v = i >= 0 ? values[i] : null;
      s.valueEl.textContent = fmtValue(v, unitOf(chart));
      s.item.classList.toggle("off", s.hidden);
      if (!tip.length || s.hidden) continue;
      if (v !== null) {
        const at = geometry(chart, from).x(state.hover);
        marks.push(svgEl("circle", { cx: px(at), cy: px(chart.y(v)), r: 3,
          fill: s.style.colour }));
      }
      const line = el("div", "", `${s.label}: ${fmtValue(v, unitOf(chart))}`);
      line.style.borderLeftColor = s.style.colour;
      tip.push(line);
    }
    chart.marks.replaceChildren(...marks);
    const showTip = tip.length && state.hoverChart === chart;
    chart.tip.replaceChildren(...(showTip ? tip : []));
    chart.tip.hidden = !showTip;
    if (showTip) {
      const x = geometry(chart, from).x(state.hover);
      const left = x > chart.width / 2;
      chart.tip.style.left = left ? "" : `${x + 12}px`;
      chart.tip.style.right = left ? `${chart.width - x + 12}px` : "";
    }
  }
}

// ------------------------------------------------------------------ polling

async function poll() {
  const status = document.getElementById("status");
  try {
    const response = await fetch(`/api/metrics?since=${state.end}`, { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}: ${(await response.text()).trim()}`);
    const data = await response.json();
    const started = performance.now();
    merge(data);
    drawAll();
    // The cost of a refresh: merging and drawing, then the browser's layout and paint.
    requestAnimationFrame(() => setTimeout(() => {
      state.refreshMs.push(performance.now() - started);
      if (state.refreshMs.length > 60) state.refreshMs.shift();
    }));
    const times = state.times;
    const took = state.refreshMs.length ? state.refreshMs[state.refreshMs.length - 1] : 0;
    status.className = data.error ? "error" : "";
    status.textContent = data.error || (times.length
      ? `${state.charts.size} metrics · ${clock(times[0], true)} to ${clock(times[times.length - 1], true)}`
        + ` · drawn in ${Math.round(took)} ms`
      : "waiting for the first point…");
  } catch (err) {
    status.className = "error";
    status.textContent = `cannot read /api/metrics: ${err}`;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

document.getElementById("window").addEventListener("change", (e) => {
  state.windowMs = Number(e.target.value) * 1000;
  drawAll();
});
poll();
