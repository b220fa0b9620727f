// The reputation chart (deliverability/charts.py): fills each <div class="sp-chart" data-src=...> from its JSON
// (deliverability/chart_data.py) with uPlot (vendored, controlplane/static/vendor/uplot/). A module: it runs once a
// page however many charts include it.
//
// Two charts on one UTC time axis, their cursors in step: messages a minute per provider stream, then the bounce
// and complaint rates with the detector's ceilings. Pauses and resumes are bands, lines and numbered flags on both,
// listed below the charts with who acted and why (readable without hovering), and a table gives the numbers as text.

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const RANGE_NAMES = { "1h": "1 h", "24h": "24 h", "7d": "7 d", "30d": "30 d" };
const RANGE_TITLES = { "1h": "the last hour", "24h": "the last 24 hours", "7d": "the last 7 days", "30d": "the last 30 days" };
// Dark enough for 3:1 against white; the stream to every other receiver takes the page's quiet text colour.
const PROVIDER_COLOURS = { gmail: "#0a6fb0", microsoft: "#00875a", yahoo: "#8e44ad", apple: "#b35c00" };
const BOUNCE = "#c0392b";
const COMPLAINT = "#6b4c00";
const PAUSED_FILL = "rgba(192, 57, 43, 0.13)";
const RESUMED = "#00875a";
const FLAG_ROWS = 3;

let uplotLoading = null;
let chartCount = 0;

function loadUPlot(src) {
  if (window.uPlot) return Promise.resolve(window.uPlot);
  uplotLoading ??= new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = () => resolve(window.uPlot);
    script.onerror = () => reject(new Error("the chart library did not load"));
    document.head.appendChild(script);
  });
  return uplotLoading;
}

const pad = (n) => String(n).padStart(2, "0");
const hhmm = (d) => `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
const dayMonth = (d) => `${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]}`;
const pct = (v, digits = 2) => (v == null ? "–" : `${(v * 100).toFixed(digits)}%`);

function bucketText(t, step) {
  const from = new Date(t * 1000);
  if (step === 1) return `${dayMonth(from)} ${hhmm(from)} UTC`;
  return `${dayMonth(from)} ${hhmm(from)}–${hhmm(new Date((t + step * 60) * 1000))} UTC`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "text") node.textContent = value;
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children);
  return node;
}

function cssVar(node, name, fallback) {
  return getComputedStyle(node).getPropertyValue(name).trim() || fallback;
}

// --- one chart -------------------------------------------------------------------------------------------------

class ReputationChart {
  constructor(root) {
    this.root = root;
    this.id = `sp-chart-${++chartCount}`;
    this.compact = root.classList.contains("sp-chart-compact");
    this.range = root.dataset.range || "24h";
    this.providerRates = false;
    this.plots = [];
    this.data = null;
    this.build();
  }

  build() {
    const domain = this.root.dataset.domain;
    this.status = el("p", { class: "sp-chart-status", role: "status", text: "Loading the chart…" });
    const head = el("div", { class: "sp-chart-head" });
    if (!this.compact) {
      this.rangeButtons = Object.entries(RANGE_NAMES).map(([key, name]) => {
        const button = el("button", { type: "button", "data-range": key, "aria-pressed": String(key === this.range), text: name });
        button.addEventListener("click", () => this.show(key));
        return button;
      });
      head.append(el("div", { class: "sp-chart-ranges", role: "group", "aria-label": `Time range of ${domain}'s chart` }, ...this.rangeButtons));
      this.toggle = el("button", { type: "button", class: "sp-chart-toggle", "aria-pressed": "false", text: "Bounce rate per provider" });
      this.toggle.addEventListener("click", () => {
        this.providerRates = !this.providerRates;
        this.toggle.setAttribute("aria-pressed", String(this.providerRates));
        this.draw();
      });
      head.append(this.toggle);
    }
    head.append(this.status);
    this.volume = el("div", { class: "sp-chart-volume" });
    this.rates = el("div", { class: "sp-chart-rates" });
    this.key = el("p", { class: "sp-chart-key" });
    this.marksTitle = el("p", { class: "sp-chart-marks-title", id: `${this.id}-marks` });
    this.marks = el("ol", { class: "sp-chart-marks", "aria-labelledby": `${this.id}-marks` });
    this.table = el("details", { class: "sp-chart-table", open: !this.compact });
    this.root.replaceChildren(head, el("div", { class: "sp-chart-plots" }, this.volume, this.rates), this.key, this.marksTitle, this.marks, this.table);
    new ResizeObserver(() => this.resize()).observe(this.root);
  }

  async show(range) {
    this.range = range;
    for (const button of this.rangeButtons || []) button.setAttribute("aria-pressed", String(button.dataset.range === range));
    this.status.textContent = `Loading ${RANGE_TITLES[range] || range}…`;
    this.root.setAttribute("aria-busy", "true");
    try {
      const url = new URL(this.root.dataset.src, window.location.href);
      url.searchParams.set("range", range);
      const [uPlot, response] = await Promise.all([
        loadUPlot(this.root.dataset.uplot),
        fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }),
      ]);
      if (!response.ok) throw new Error(`the server answered ${response.status}`);
      const data = await response.json();
      if (data.range !== this.range) return; // a later click won
      this.uPlot = uPlot;
      this.data = data;
      this.draw();
    } catch (error) {
      this.status.textContent = `The chart could not load: ${error.message}.`;
    } finally {
      this.root.removeAttribute("aria-busy");
    }
  }

  draw() {
    const data = this.data;
    if (!data) return;
    for (const plot of this.plots) plot.destroy();
    const width = this.width();
    const sync = `${this.id}-cursor`;
    this.root.dataset.start = new Date(data.start * 1000).toISOString();
    this.root.dataset.end = new Date(data.end * 1000).toISOString();
    this.root.dataset.shownRange = data.range;
    this.plots = [
      new this.uPlot(this.volumeOptions(width, sync), this.volumeData(), this.volume),
      new this.uPlot(this.rateOptions(width, sync), this.rateData(), this.rates),
    ];
    const per = data.step_minutes === 1 ? "minute by minute" : data.step_minutes === 60 ? "hour by hour" : `in ${data.step_minutes}-minute steps`;
    const sent = data.totals.sent;
    this.status.textContent = `${data.domain}, ${RANGE_TITLES[data.range]} to ${hhmm(new Date(data.now * 1000))} UTC, ${per}: ` +
      (sent ? `${sent.toLocaleString("en")} sent, bounce rate ${pct(data.totals.bounce_rate)}, complaint rate ${pct(data.totals.complaint_rate)}.` : "no mail sent.");
    this.drawKey();
    this.drawMarks();
    this.drawTable();
  }

  width() {
    return Math.max(280, Math.min(this.root.clientWidth || 720, 1100));
  }

  resize() {
    if (!this.plots.length) return;
    const width = this.width();
    if (Math.abs(width - this.plots[0].width) < 4) return;
    for (const plot of this.plots) plot.setSize({ width, height: plot.height });
  }

  // --- series and axes -----------------------------------------------------------------------------------------

  colour(key) {
    return PROVIDER_COLOURS[key] || cssVar(this.root, "--body-quiet-color", "#555");
  }

  volumeData() {
    const d = this.data;
    return [d.t, ...(d.providers.length > 1 ? [d.sent_per_minute] : []), ...d.providers.map((p) => p.sent_per_minute)];
  }

  rateData() {
    const d = this.data;
    return [d.t, d.bounce_rate, d.complaint_rate, ...(this.providerRates ? d.providers.map((p) => p.bounce_rate) : [])];
  }

  // What both charts share: the time scale (the whole window, traffic or not), the cursor in step, the marks.
  base(width, height, sync) {
    const data = this.data;
    return {
      width,
      height,
      tzDate: (ts) => this.uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      cursor: { sync: { key: sync }, drag: { x: false, y: false }, points: { size: 6 } },
      legend: { live: true },
      scales: { x: { time: true, range: () => [data.start, data.end] } },
      hooks: {
        drawClear: [(u) => this.drawBands(u)],
        draw: [(u) => this.drawLines(u), (u) => this.placeOverlays(u)],
      },
    };
  }

  timeSeries() {
    return { label: "Time", value: (u, t) => (t == null ? "–" : bucketText(t, this.data.step_minutes)) };
  }

  axis(extra) {
    const grid = cssVar(this.root, "--hairline-color", "#e8e8e8");
    return {
      stroke: cssVar(this.root, "--body-fg", "#333"), grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1, size: 4 },
      font: "11px sans-serif", labelFont: "bold 11px sans-serif", ...extra,
    };
  }

  xAxis() {
    return this.axis({ scale: "x", space: 70, size: 34, values: (u, splits, i, space, incr) => this.tickLabels(u, splits, incr) });
  }

  volumeOptions(width, sync) {
    const d = this.data;
    const base = this.base(width, this.compact ? 130 : 200, sync);
    const perMinute = { value: (u, v) => (v == null ? "–" : `${v.toFixed(1)}/min`), points: { show: false }, width: 1.5, spanGaps: false };
    const series = [this.timeSeries()];
    if (d.providers.length > 1) series.push({ ...perMinute, label: "all providers", stroke: cssVar(this.root, "--body-fg", "#333"), width: 1 });
    for (const p of d.providers) series.push({ ...perMinute, label: p.key, stroke: this.colour(p.key), dash: p.key === "other" ? [6, 2, 1, 2] : undefined });
    return {
      ...base,
      scales: { ...base.scales, n: { range: (u, min, max) => [0, Math.max(1, (max || 0) * 1.15)] } },
      series: series.map((s, i) => (i ? { scale: "n", ...s } : s)),
      axes: [
        this.xAxis(),
        this.axis({ scale: "n", label: "messages / min", size: 52, values: (u, vals) => vals.map((v) => (v >= 1000 ? `${(v / 1000).toFixed(1)}k` : String(+v.toFixed(1)))) }),
        // As wide as the rates' right axis: both plots span the same pixels, so their times line up.
        this.axis({ scale: "n", side: 1, size: 52, label: "", values: (u, vals) => vals.map(() => ""), grid: { show: false }, ticks: { show: false } }),
      ],
    };
  }

  rateOptions(width, sync) {
    const d = this.data;
    const base = this.base(width, this.compact ? 110 : 170, sync);
    const ceiling = Object.fromEntries(d.thresholds.map((t) => [t.key, t.value]));
    const rate = { value: (u, v) => pct(v), points: { show: false }, spanGaps: false };
    // Headroom over each ceiling, unequal so that the two dotted lines do not lie on one another.
    const upTo = (limit, room) => (u, min, max) => [0, Math.max((max || 0) * 1.1, limit * room)];
    const series = [
      this.timeSeries(),
      { ...rate, label: "bounce rate", scale: "bounce", stroke: BOUNCE, width: 2 },
      { ...rate, label: "complaint rate", scale: "complaint", stroke: COMPLAINT, width: 1.5, dash: [5, 3] },
    ];
    if (this.providerRates) {
      for (const p of d.providers) series.push({ ...rate, label: `${p.key} bounce rate`, scale: "bounce", stroke: this.colour(p.key), width: 1 });
    }
    const percent = (u, vals, axis, space, incr) => vals.map((v) => `${(v * 100).toFixed(Math.max(0, Math.ceil(-Math.log10(incr * 100))))}%`);
    return {
      ...base,
      scales: { ...base.scales, bounce: { range: upTo(ceiling.bounce_rate, 1.25) }, complaint: { range: upTo(ceiling.complaint_rate, 2) } },
      series,
      axes: [
        this.xAxis(),
        this.axis({ scale: "bounce", label: "bounce rate", size: 52, values: percent, stroke: BOUNCE }),
        this.axis({ scale: "complaint", label: "complaint rate", side: 1, size: 52, values: percent, stroke: COMPLAINT, grid: { show: false } }),
      ],
    };
  }

  // The x axis' labels are HTML under the plot (uPlot keeps the ticks): text a reader selects, tests read, axe checks.
  tickLabels(u, splits, incr) {
    u.spTicks = splits.map((t, i) => {
      const date = new Date(t * 1000);
      if (incr >= 86400) return [t, dayMonth(date)];
      const newDay = i === 0 || new Date(splits[i - 1] * 1000).getUTCDate() !== date.getUTCDate();
      return [t, newDay ? `${hhmm(date)}\n${dayMonth(date)}` : hhmm(date)];
    });
    return splits.map(() => "");
  }

  // --- pauses, resumes and ceilings ----------------------------------------------------------------------------

  // Each scope's (the domain, a stream, all sending) paused stretches: a pause opens one, a resume closes it.
  bands() {
    const { start, end, marks } = this.data;
    const open = new Map();
    const bands = [];
    const scopeOf = (m) => (m.scope === "stream" ? `stream:${m.provider}` : m.scope);
    for (const mark of marks) {
      const scope = scopeOf(mark);
      if (mark.kind === "pause" && !open.has(scope)) open.set(scope, { from: Math.max(mark.at, start), mark });
      if (mark.kind === "resume") {
        const from = open.has(scope) ? open.get(scope).from : start; // paused before the window
        bands.push({ from, to: mark.at, mark: open.get(scope)?.mark || mark });
        open.delete(scope);
      }
    }
    for (const { from, mark } of open.values()) bands.push({ from, to: end, mark });
    return bands;
  }

  drawBands(u) {
    const { ctx, bbox } = u;
    ctx.save();
    for (const band of this.bands()) {
      const x0 = u.valToPos(band.from, "x", true);
      const x1 = u.valToPos(band.to, "x", true);
      if (band.mark.scope === "stream") {
        ctx.fillStyle = this.colour(band.mark.provider);
        ctx.globalAlpha = 0.5;
        ctx.fillRect(x0, bbox.top + bbox.height - 6 * this.uPlot.pxRatio, Math.max(x1 - x0, 2), 6 * this.uPlot.pxRatio);
        ctx.globalAlpha = 1;
      } else {
        ctx.fillStyle = PAUSED_FILL;
        ctx.fillRect(x0, bbox.top, Math.max(x1 - x0, 2), bbox.height);
      }
    }
    ctx.restore();
  }

  drawLines(u) {
    const { ctx, bbox } = u;
    const ratio = this.uPlot.pxRatio;
    ctx.save();
    ctx.lineWidth = 2 * ratio;
    for (const mark of this.data.marks) {
      if (mark.at < this.data.start) continue;
      const x = Math.round(u.valToPos(mark.at, "x", true));
      ctx.strokeStyle = mark.kind === "pause" ? (mark.scope === "stream" ? this.colour(mark.provider) : BOUNCE) : RESUMED;
      ctx.setLineDash(mark.kind === "pause" ? [] : [5 * ratio, 3 * ratio]);
      ctx.beginPath();
      ctx.moveTo(x, bbox.top);
      ctx.lineTo(x, bbox.top + bbox.height);
      ctx.stroke();
    }
    if (u.series.some((s) => s.scale === "bounce")) {
      ctx.font = `${11 * ratio}px sans-serif`;
      ctx.lineWidth = 1 * ratio;
      ctx.setLineDash([2 * ratio, 3 * ratio]);
      for (const threshold of this.data.thresholds) {
        const scale = threshold.key === "bounce_rate" ? "bounce" : "complaint";
        const y = Math.round(u.valToPos(threshold.value, scale, true));
        ctx.strokeStyle = ctx.fillStyle = scale === "bounce" ? BOUNCE : COMPLAINT;
        ctx.beginPath();
        ctx.moveTo(bbox.left, y);
        ctx.lineTo(bbox.left + bbox.width, y);
        ctx.stroke();
        // The label on the page's background, over the lines: readable however busy the data under it.
        const text = `${threshold.label} ${pct(threshold.value, 1)}`;
        const textWidth = ctx.measureText(text).width;
        const x = scale === "bounce" ? bbox.left + 4 * ratio : bbox.left + bbox.width - 4 * ratio - textWidth;
        ctx.fillStyle = cssVar(this.root, "--body-bg", "#fff");
        ctx.fillRect(x - 2 * ratio, y - 14 * ratio, textWidth + 4 * ratio, 12 * ratio);
        ctx.fillStyle = scale === "bounce" ? BOUNCE : COMPLAINT;
        ctx.textAlign = "left";
        ctx.fillText(text, x, y - 4 * ratio);
      }
    }
    ctx.restore();
  }

  // HTML over the canvas: the x axis' labels and, on the volume chart, a numbered flag at each mark.
  placeOverlays(u) {
    const wrap = u.root.querySelector(".u-wrap");
    wrap.setAttribute("role", "img");
    wrap.setAttribute("aria-label", u.root.parentElement === this.rates ?
      `Bounce and complaint rates of ${this.data.domain}; the numbers are in the table below` :
      `Messages a minute to each provider from ${this.data.domain}; the numbers are in the table below`);
    const ratio = this.uPlot.pxRatio;
    const left = u.bbox.left / ratio;
    const plotWidth = u.bbox.width / ratio;
    let ticks = wrap.querySelector(".sp-ticks");
    if (!ticks) wrap.append((ticks = el("div", { class: "sp-ticks" })));
    ticks.style.top = `${(u.bbox.top + u.bbox.height) / ratio + 6}px`;
    ticks.replaceChildren(...(u.spTicks || []).map(([t, label]) => {
      const x = u.valToPos(t, "x");
      if (x < -1 || x > plotWidth + 1) return "";
      return el("span", { class: "sp-tick", style: `left:${left + x}px`, text: label });
    }));
    if (u.root.parentElement !== this.volume) return;
    let flags = wrap.querySelector(".sp-flags");
    if (!flags) wrap.append((flags = el("div", { class: "sp-flags" })));
    flags.style.left = `${left}px`;
    flags.style.top = `${u.bbox.top / ratio}px`;
    flags.style.width = `${plotWidth}px`;
    flags.replaceChildren(...this.data.marks.map((mark, i) => {
      const x = Math.max(0, u.valToPos(Math.max(mark.at, this.data.start), "x"));
      const flag = el("span", {
        class: `sp-flag sp-flag-${mark.kind}`,
        style: `top:${(i % FLAG_ROWS) * 19}px;${x > plotWidth - 140 ? `right:${plotWidth - x}px` : `left:${x}px`}`,
        text: `${i + 1} ${mark.kind === "pause" ? "paused" : "resumed"}${mark.scope === "stream" ? ` ${mark.provider}` : mark.scope === "all" ? " all" : ""} · ${mark.actor}`,
      });
      return flag;
    }));
  }

  drawKey() {
    const thresholds = this.data.thresholds.map((t) => `${t.label.replace(" ceiling", " rate")} over ${pct(t.value, 1)}`).join(" or a ");
    this.key.textContent = `Rates are over the trailing ${this.data.rate_minutes} minutes at each point. ` +
      `Dotted lines: the detector's ceilings (it pauses at a ${thresholds}). ` +
      "Red bands: the domain (or all sending) paused; coloured strips at the bottom: a provider stream paused; " +
      "solid lines: pauses, dashed green lines: resumes, numbered as in the list below. Times in UTC.";
  }

  drawMarks() {
    const marks = this.data.marks;
    this.marksTitle.textContent = marks.length ? `Pauses and resumes in ${RANGE_TITLES[this.data.range]}` : `No pause or resume in ${RANGE_TITLES[this.data.range]}.`;
    this.marks.replaceChildren(...marks.map((mark) => el("li", { class: `sp-mark sp-mark-${mark.kind}`, text: mark.text })));
  }

  drawTable() {
    const d = this.data;
    const rows = [...d.providers.map((p) => [p.key, p.totals, p.sent_per_minute]), ["all providers", d.totals, d.sent_per_minute]];
    const peak = (series) => Math.max(0, ...series).toFixed(1);
    const head = ["stream", "sent", "bounced", "bounce rate", "complained", "complaint rate", "peak / min"];
    const table = el("table", {},
      el("caption", { text: `${d.domain}, ${RANGE_TITLES[d.range]} to ${hhmm(new Date(d.now * 1000))} UTC` }),
      el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, ...rows.map(([name, t, series]) => el("tr", {},
        el("th", { scope: "row", text: name }),
        ...[t.sent, t.bounced, pct(t.bounce_rate), t.complained, pct(t.complaint_rate), peak(series)].map((v) => el("td", { text: String(v) })),
      ))),
    );
    this.table.replaceChildren(el("summary", { text: "The chart's numbers as a table" }), table);
  }
}

// --- start every chart on the page (the cockpit's compact ones when scrolled to) ------------------------------------

function start(root) {
  if (root.spChart) return;
  root.spChart = new ReputationChart(root);
  root.spChart.show(root.spChart.range);
}

const roots = document.querySelectorAll(".sp-chart[data-src]");
const lazy = "IntersectionObserver" in window ? new IntersectionObserver((entries, observer) => {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    observer.unobserve(entry.target);
    start(entry.target);
  }
}, { rootMargin: "200px" }) : null;
for (const root of roots) {
  if (lazy && root.classList.contains("sp-chart-compact")) lazy.observe(root);
  else start(root);
}
