// Glass dashboard: plain JavaScript over the JSON API (docs/serve.md). Every value shown
// is set with textContent, never as HTML. What each chart was given is also written,
// as JSON, into <pre id="plotted"> so tests can compare it with the run's database.
"use strict";

const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "style") e.style.cssText = v;
    else e.setAttribute(k, v);
  }
  for (const kid of kids) {
    if (kid == null) continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}
async function api(path) {
  const r = await fetch(path);
  let j;
  try { j = await r.json(); } catch (_) { j = { error: r.status + " " + r.statusText }; }
  if (!r.ok) throw new Error(j.error || r.statusText);
  return j;
}
const plotted = {};
function record(key, value) {
  plotted[key] = value;
  const p = $("plotted");
  if (p) p.textContent = JSON.stringify(plotted);
}
function showError(e) {
  const box = $("error");
  if (box) box.textContent = String((e && e.message) || e);
}
const enc = encodeURIComponent;
const fmt = (v, d = 4) => (v == null || !isFinite(v) ? "-" : Number(v).toFixed(d));
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];
// Axis labels that stay readable for learning rates (1e-4) and token counts (1e9).
function tick(v) {
  if (v == null) return "";
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a < 1e-2 || a >= 1e7) return v.toExponential(1);
  return String(Number(v.toPrecision(4)));
}
function hue(s) {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0;
  return h % 360;
}

// ---------- index page: runs, branches under the checkpoint they came from ----------
async function indexPage() {
  const runs = await api("/api/runs");
  const kids = {};
  for (const r of runs) {
    const p = r.parent && r.parent.served_id;
    if (p) ((kids[p] ||= {})[r.parent.checkpoint] ||= []).push(r);
  }
  const item = (r) => {
    const li = el("li", {},
      el("a", { href: "/runs/" + enc(r.id) }, r.id), " ",
      el("span", { class: "note" }, r.dir),
      r.error ? el("span", { class: "error" }, " " + r.error) : null,
      r.run_id ? el("span", { class: "note" },
        ` run ${r.run_id}, ${r.checkpoints} checkpoints` +
        (r.last_checkpoint ? `, last at step ${r.last_checkpoint.step}` : "")) : null,
      r.parent && !r.parent.served_id ? el("span", { class: "note" },
        ` (branch of ${r.parent.run_dir} at checkpoint ${r.parent.checkpoint})`) : null);
    const byCk = kids[r.id];
    if (byCk) {
      const ul = el("ul", { class: "tree" });
      for (const ck of Object.keys(byCk).sort((a, b) => a - b)) {
        const sub = el("ul", { class: "tree" }, ...byCk[ck].map(item));
        const c = byCk[ck][0].parent;
        ul.append(el("li", {}, `checkpoint ${ck}` + (c.step != null ? ` (step ${c.step})` : "") + ":", sub));
      }
      li.append(ul);
    }
    return li;
  };
  const roots = runs.filter((r) => !(r.parent && r.parent.served_id));
  $("runs").replaceChildren(el("ul", { class: "tree" }, ...roots.map(item)));
}

// ---------- run page ----------
const RID = decodeURIComponent(location.pathname.split("/")[2] || "");
const BASE = "/api/runs/" + enc(RID);
const params = new URLSearchParams(location.search);
let summary = null;

async function runPage() {
  summary = await api(BASE);
  document.title = "Glass: " + RID;
  $("title").textContent = RID;
  const lin = $("lineage");
  const p = summary.run && summary.run.parent;
  if (p) {
    lin.append("branch (" + p.mode + ") of ");
    lin.append(p.served_id ? el("a", { href: "/runs/" + enc(p.served_id) }, p.served_id) : p.run_dir);
    lin.append(` at checkpoint ${p.checkpoint}` + (p.step != null ? ` (step ${p.step})` : ""));
  }
  if (summary.metrics_error) showError(summary.metrics_error);
  await showTab(params.get("tab") || "curves");
  if (params.get("live") !== "0") setInterval(() => poll(currentTab).catch(() => {}), 3000);
}

let currentTab = null;
const started = new Set();
async function showTab(tab) {
  const sec = $("tab-" + tab);
  if (!sec) return showError("no tab " + tab);
  currentTab = tab;
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.tab === tab);
  for (const s of document.querySelectorAll("main > section")) s.hidden = s !== sec;
  if (started.has(tab)) return;
  started.add(tab);
  const init = { curves: initCurves, evals: initEvals, checkpoints: initCheckpoints, data: initData, trace: initTrace, dynamics: initDynamics, inspect: initInspect }[tab];
  await init();
}

// Opens the data tab at `step` in place (a click on a curve's point).
async function openStep(step) {
  history.pushState(null, "", `/runs/${enc(RID)}?tab=data&step=${step}`);
  $("step").value = String(step);
  if (started.has("data")) {
    await showTab("data");
    await showData();
  } else {
    await showTab("data");
  }
}

async function poll(tab) {
  const s = await api(BASE);
  const key = (x) => JSON.stringify([x.steps, x.validated_checkpoints, x.eval_rows, x.memorization_checkpoints, x.run && x.run.checkpoints]);
  const changed = key(s) !== key(summary);
  summary = s;
  if (s.steps) $("live").textContent = `live: step ${s.steps.last} (${new Date().toLocaleTimeString()})`;
  if (!changed) return;
  if (tab === "curves") await drawCurves();
  if (tab === "evals") await initEvals();
  if (tab === "checkpoints") await initCheckpoints();
  if (tab === "dynamics") await loadDynamics();
}

// ---------- curves ----------
const CURVES = [
  ["loss", "training loss"], ["lr", "learning rate"], ["grad_norm", "gradient norm (pre-clip)"],
  ["tokens_per_s", "tokens/s"], ["val_loss", "validation loss"], ["val_bpb", "validation bits per byte"],
];
let charts = [];

// TensorBoard's smoothing: an exponential moving average, debiased for its start;
// non-finite points pass through unsmoothed.
function ema(ys, w) {
  const out = new Array(ys.length);
  const finite = ys.filter((v) => v != null && isFinite(v));
  if (finite.length && finite.every((v) => v === finite[0])) return ys.slice();
  let last = 0, n = 0;
  for (let i = 0; i < ys.length; i++) {
    const v = ys[i];
    if (v == null || !isFinite(v)) { out[i] = v; continue; }
    last = last * w + (1 - w) * v;
    n++;
    out[i] = w === 1 ? last : last / (1 - Math.pow(w, n));
  }
  return out;
}

function markerPlugin(marks) {
  return {
    hooks: {
      draw: [(u) => {
        const ctx = u.ctx, { left, top, width, height } = u.bbox;
        ctx.save();
        ctx.lineWidth = 1;
        for (const m of marks) {
          if (m.x == null) continue;
          const px = u.valToPos(m.x, "x", true);
          if (!(px >= left && px <= left + width)) continue;
          ctx.strokeStyle = m.color;
          ctx.setLineDash(m.dash ? [4, 4] : []);
          ctx.beginPath();
          ctx.moveTo(px, top);
          ctx.lineTo(px, top + height);
          ctx.stroke();
        }
        ctx.restore();
      }],
    },
  };
}

const EVENT_COLORS = { skip: "#d62728", rollback: "#d62728", resume: "#1f77b4", config_change: "#9467bd" };

async function initCurves() {
  const runs = await api("/api/runs");
  const ov = $("overlay");
  const want = (params.get("overlay") || "").split(",").filter(Boolean);
  for (const r of runs) {
    if (r.id === RID) continue;
    const o = el("option", { value: r.id }, r.id);
    if (want.includes(r.id)) o.selected = true;
    ov.append(o);
  }
  if (ov.options.length === 0) ov.parentElement.hidden = true;
  if (params.get("x")) $("xmode").value = params.get("x");
  if (params.get("scale")) $("xscale").value = params.get("scale");
  if (params.get("smooth")) $("smooth").value = params.get("smooth");
  $("smooth-val").textContent = Number($("smooth").value).toFixed(2);
  $("smooth").addEventListener("input", () => { $("smooth-val").textContent = Number($("smooth").value).toFixed(2); drawCurves(); });
  for (const id of ["xmode", "xscale", "overlay"]) $(id).addEventListener("change", () => drawCurves());
  await drawCurves();
}

let drawing = Promise.resolve();
function drawCurves() {
  drawing = drawing.then(drawCurvesNow).catch(showError);
  return drawing;
}

async function drawCurvesNow() {
  const ids = [RID, ...Array.from($("overlay").selectedOptions).map((o) => o.value)];
  const xmode = $("xmode").value, log = $("xscale").value === "log", w = Number($("smooth").value);
  const width = Math.max(320, Math.min(1600, ($("charts").clientWidth || 900) - 20));
  const [events, ckpts] = await Promise.all([
    api(BASE + "/events").catch(() => []),
    api(BASE + "/checkpoints").catch(() => []),
  ]);
  const xOf = (step, tokens) => (xmode === "tokens" ? tokens : step);
  const marks = [];
  for (const e of events) {
    if (e.step == null || !(e.kind in EVENT_COLORS)) continue;
    marks.push({ x: xOf(e.step, e.tokens), color: EVENT_COLORS[e.kind], kind: e.kind, step: e.step });
  }
  for (const c of ckpts) marks.push({ x: xOf(c.step, c.tokens), color: "#2ca02c", dash: true, kind: "checkpoint", step: c.step });
  const q = `?width=${width}&scale=${log ? "log" : "linear"}`;
  const all = await Promise.all(CURVES.map(([m]) => Promise.all(ids.map((id) =>
    api(`/api/runs/${enc(id)}/series/${m}` + q).catch((e) => ({ error: e.message }))))));
  for (const c of charts) c.destroy();
  charts = [];
  const box = $("charts");
  box.replaceChildren();
  const rec = { x: xmode, scale: log ? "log" : "linear", smoothing: w, runs: ids, marks, charts: {} };
  CURVES.forEach(([metric, label], ci) => {
    const got = all[ci];
    const tables = [], opts = [{ label: xmode }], stepAt = new Map();
    got.forEach((s, i) => {
      if (s.error || !s.steps || s.steps.length === 0) return;
      let xs = xOf(s.steps, s.tokens), ys = s.values;
      if (log) {
        const keep = xs.map((x) => x > 0);
        xs = xs.filter((_, j) => keep[j]);
        ys = ys.filter((_, j) => keep[j]);
      }
      if (i === 0) xs.forEach((x, j) => stepAt.set(x, s.steps[j + (s.steps.length - xs.length)]));
      tables.push([xs, ys, ema(ys, w)]);
      const color = COLORS[i % COLORS.length];
      opts.push({ label: ids[i] + " raw", stroke: color + "55", width: 1, points: { show: xs.length <= 300, size: 3, stroke: color + "88", fill: color + "88" } });
      opts.push({ label: ids[i] + (w > 0 ? " smoothed" : ""), stroke: color, width: 2, spanGaps: true, points: { show: false } });
    });
    if (tables.length === 0) return;
    const data = tables.length === 1 ? tables[0] : uPlot.join(tables);
    const head = el("h3", {}, label,
      el("a", { href: `${BASE}/series/${metric}?format=csv`, download: `${RID}-${metric}.csv` }, "CSV"),
      got[0].downsampled ? el("span", { class: "note" }, ` ${got[0].steps.length} of ${got[0].raw_points} points (min/max per pixel)`) : null);
    const div = el("div", { class: "chart", "data-metric": metric }, head);
    box.append(div);
    const u = new uPlot({
      width, height: 220,
      scales: { x: { time: false, distr: log ? 3 : 1 } },
      axes: [{ label: xmode }, { size: 64, values: (_, vals) => vals.map(tick) }],
      series: opts,
      plugins: [markerPlugin(marks)],
      cursor: { drag: { x: true, y: false } },
    }, data, div);
    u.over.addEventListener("click", () => {
      const i = u.cursor.idx;
      if (i == null) return;
      const x = u.data[0][i];
      const step = xmode === "step" ? x : stepAt.get(x);
      if (step != null) openStep(step).catch(showError);
    });
    charts.push(u);
    rec.charts[metric] = { x: Array.from(data[0]), series: data.slice(1).map((a) => Array.from(a)), labels: opts.slice(1).map((o) => o.label) };
  });
  record("curves", rec);
  document.body.dataset.chartsDrawn = String(charts.length);
  // Milliseconds from navigation to the charts drawn (read by `glass bench serve`).
  if (!document.body.dataset.firstChartMs) document.body.dataset.firstChartMs = performance.now().toFixed(1);
  // `?click=METRIC:STEP` clicks that point once, as a person would (used by the tests).
  const click = params.get("click");
  if (click && !drawCurvesNow.clicked) {
    drawCurvesNow.clicked = true;
    const [metric, step] = click.split(":");
    const u = charts.find((c) => c.root.parentElement.dataset.metric === metric);
    const i = u ? u.data[0].indexOf(Number(step)) : -1;
    // After the chart's first draw, when its scales are set.
    if (i >= 0) setTimeout(() => {
      const r = u.over.getBoundingClientRect();
      const at = { bubbles: true, button: 0, clientX: r.left + u.valToPos(u.data[0][i], "x"), clientY: r.top + u.valToPos(u.data[1][i], "y") };
      for (const kind of ["mousemove", "mousedown", "mouseup", "click"]) u.over.dispatchEvent(new MouseEvent(kind, at));
    }, 100);
  }
}

// ---------- evaluations and memorization ----------
// `glass data contamination`'s figure of a task: "13-gram overlap: 3/1,172 items".
const num = (n) => Number(n).toLocaleString("en-US");
function contamText(c, t) {
  return `${c.ngram}-gram overlap: ${num(t.contaminated)}/${num(t.items)} items` + (t.too_short ? ` (${num(t.too_short)} too short to check)` : "");
}

async function initEvals() {
  const [ev, contam] = await Promise.all([api(BASE + "/evals"), api(BASE + "/contamination").catch((e) => ({ error: e.message }))]);
  const cbox = $("contamination");
  cbox.replaceChildren();
  const byTask = new Map();
  if (contam.error) cbox.append(el("p", { class: "error" }, "contamination report: " + contam.error));
  else if (contam.present) {
    for (const t of contam.tasks) byTask.set(t.task, t);
    cbox.append(el("h3", {}, `Contamination (${contam.file}: items sharing a ${contam.ngram}-token window with a training row, ${num(contam.steps)} steps checked)`),
      el("table", { class: "contam-table" }, el("tr", {}, ...["task", "items", "contaminated", "too short"].map((h) => el("th", { class: "l" }, h))),
        ...contam.tasks.map((t) => el("tr", { "data-task": t.task }, el("td", { class: "l" }, t.task), el("td", {}, num(t.items)), el("td", {}, num(t.contaminated)), el("td", {}, num(t.too_short))))));
  }
  const shown = {};
  const stepOf = new Map(ev.checkpoints.map((c) => [c.checkpoint, c.step]));
  const groups = new Map();
  for (const r of ev.rows) {
    const k = r.task + " / " + r.metric;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(r);
  }
  const box = $("evals");
  box.replaceChildren();
  const rec = {};
  if (groups.size === 0) box.append(el("p", {}, "No evaluations yet: glass eval " + (summary ? summary.dir : "RUN")));
  for (const [k, rows] of groups) {
    rows.sort((a, b) => a.checkpoint - b.checkpoint);
    const x = rows.map((r) => stepOf.get(r.checkpoint) ?? r.checkpoint);
    const y = rows.map((r) => r.value);
    const hi = rows.map((r) => (r.stderr == null ? r.value : r.value + r.stderr));
    const lo = rows.map((r) => (r.stderr == null ? r.value : r.value - r.stderr));
    const ct = byTask.get(rows[0].task);
    if (ct) shown[k] = contamText(contam, ct);
    const div = el("div", { class: "chart", "data-eval": k }, el("h3", {}, k + " per checkpoint (band: ± stderr)",
      ct ? el("span", { class: "contam", "data-task": ct.task }, contamText(contam, ct)) : null));
    box.append(div);
    new uPlot({
      width: 600, height: 200, scales: { x: { time: false } }, axes: [{ label: "step" }, { size: 64, values: (_, vals) => vals.map(tick) }],
      series: [{ label: "step" }, { label: k, stroke: "#1f77b4", width: 2, points: { show: true, size: 5 } },
        { label: "+stderr", stroke: "#1f77b433" }, { label: "-stderr", stroke: "#1f77b433" }],
      bands: [{ series: [2, 3], fill: "#1f77b422" }],
    }, [x, y, hi, lo], div);
    rec[k] = { x, y, lo, hi };
  }
  record("evals", rec);
  record("contamination", { report: contam.present ? contam : null, shown });
  const memo = await api(BASE + "/memorization");
  renderMemo(memo.rows);
}

function renderMemo(rows) {
  const box = $("memo");
  box.replaceChildren();
  if (!rows.length) {
    box.append(el("p", {}, "No memorization matrix: glass analyze memorization " + (summary ? summary.dir : "RUN")));
    return;
  }
  const cks = [...new Map(rows.map((r) => [r.checkpoint, r.step])).entries()].sort((a, b) => a[0] - b[0]);
  const chunks = [...new Set(rows.map((r) => r.chunk))].sort((a, b) => a - b);
  for (const [field, title] of [["full_match", "full_match (fraction of rows reproduced exactly)"], ["token_match", "token_match (mean fraction of positions reproduced)"]]) {
    const t = el("table", { class: "heat", "data-field": field },
      el("tr", {}, el("th", { class: "l" }, "checkpoint (step) \\ chunk"), ...chunks.map((c) => el("th", {}, "c" + c))));
    for (const [k, s] of cks) {
      const tr = el("tr", {}, el("th", { class: "l" }, `${k} (${s})`));
      for (const c of chunks) {
        const r = rows.find((x) => x.checkpoint === k && x.chunk === c);
        const v = r ? r[field] : null;
        tr.append(el("td", v == null ? {} : { style: `background: hsl(210, 80%, ${Math.round(97 - 55 * v)}%)`, title: `n ${r.n}` }, fmt(v, 3)));
      }
      t.append(tr);
    }
    box.append(el("h3", {}, title), t);
  }
  record("memorization", rows);
}

// ---------- checkpoints ----------
async function initCheckpoints() {
  const cks = await api(BASE + "/checkpoints");
  const box = $("ckpts");
  if (!cks.length) { box.replaceChildren(el("p", {}, "No checkpoint published yet.")); return; }
  const t = el("table", {}, el("tr", {}, ...["ckpt", "step", "tokens", "val loss", "val bpb", "evals", "sha256", "verification", "commands", "branches"].map((h) => el("th", { class: "l" }, h))));
  for (const c of cks) {
    const status = el("span", {}, c.state_ok ? "state.json matches " : c.state, " ");
    const btn = el("button", { onclick: async () => {
      btn.disabled = true;
      status.textContent = "re-hashing… ";
      try {
        const v = await api(`${BASE}/checkpoints/${c.index}/verify`);
        status.textContent = v.ok ? `all ${v.files} files match (${(v.bytes / 1e6).toFixed(1)} MB, ${v.seconds.toFixed(2)} s) ` : "MISMATCH: " + v.problem + " ";
      } catch (e) { status.textContent = "error: " + e.message; }
    } }, "re-hash files");
    t.append(el("tr", { "data-checkpoint": c.index },
      el("td", {}, c.index), el("td", {}, c.step), el("td", {}, c.tokens), el("td", {}, fmt(c.val_loss)), el("td", {}, fmt(c.val_bpb)),
      el("td", { class: "l" }, ...c.evals.map((e) => el("div", {}, `${e.task}/${e.metric} ${fmt(e.value)}` + (e.stderr != null ? ` ± ${fmt(e.stderr)}` : "")))),
      el("td", { class: "l" }, el("code", {}, c.sha256)),
      el("td", { class: "l" }, status, btn),
      el("td", { class: "l" }, ...["export", "replay", "branch"].map((k) => el("div", {}, k + ": ", el("code", {}, c.commands[k])))),
      el("td", { class: "l" }, ...c.branches.map((b) => el("div", {}, el("a", { href: "/runs/" + enc(b) }, b))))));
  }
  box.replaceChildren(t);
  record("checkpoints", cks);
}

// ---------- data: the rows of a step ----------
async function initData() {
  const f = $("data-form");
  if (params.get("step") && params.get("tab") === "data") $("step").value = params.get("step");
  if (params.get("rank")) $("rank").value = params.get("rank");
  if (params.get("world_size")) $("world").value = params.get("world_size");
  f.addEventListener("submit", (e) => {
    e.preventDefault();
    const u = new URL(location.href);
    u.searchParams.set("step", $("step").value);
    u.searchParams.set("rank", $("rank").value);
    u.searchParams.set("world_size", $("world").value);
    history.replaceState(null, "", u);
    showData().catch(showError);
  });
  await showData();
}

async function showData() {
  const d = await api(`${BASE}/data?step=${enc($("step").value)}&rank=${enc($("rank").value)}&world_size=${enc($("world").value)}`);
  const b = d.batch;
  const box = $("data");
  box.replaceChildren(el("p", {}, `step ${b.step} of ${d.n_steps} (stage ${b.stage}), rank ${b.rank}/${b.world_size}: ${b.rows.length} rows. Hover a piece for its document; colours follow documents.`));
  b.rows.forEach((r, i) => {
    const text = el("div", { class: "rowtext" });
    r.segments.forEach((s, j) => {
      const tip = `${s.source} doc ${s.doc} ${s.doc_id} tokens ${s.doc_tok}..${s.doc_tok + s.len} (epoch ${s.epoch}) at row position ${s.pos}`;
      if (s.kind === "text") {
        text.append(el("span", { class: "seg", title: tip, style: `background: hsl(${hue(s.source + ":" + s.doc)}, 70%, 88%)` }, d.segment_text[i][j]));
      } else if (s.kind.startsWith("fim_")) {
        text.append(el("span", { class: "seg special fim", title: tip }, `<${s.kind}>`));
      } else {
        text.append(el("span", { class: "seg special", title: tip }, `<${s.kind}>`));
      }
    });
    const segs = el("table", {}, el("tr", {}, ...["pos", "len", "kind", "source", "doc", "doc id", "doc tokens", "epoch", "meta"].map((h) => el("th", { class: "l" }, h))),
      ...r.segments.map((s) => el("tr", { class: s.kind.startsWith("fim_") ? "fim" : "" },
        el("td", {}, s.pos), el("td", {}, s.len), el("td", { class: "l" }, s.kind), el("td", { class: "l" }, s.source), el("td", {}, s.doc),
        el("td", { class: "l doc-id" }, s.doc_id), el("td", {}, `${s.doc_tok}..${s.doc_tok + s.len}`), el("td", {}, s.epoch),
        el("td", { class: "l" }, s.meta == null ? "" : JSON.stringify(s.meta)))));
    box.append(el("div", { class: "row", "data-row": r.row },
      el("h4", {}, `row ${r.row} (slot ${r.slot}) source ${r.source}: ${r.tokens} tokens, ${r.doc_tokens} document tokens, ${r.docs} documents`),
      text, el("details", {}, el("summary", {}, "segments"), segs)));
  });
  record("data", b);
  document.body.dataset.dataShown = String(b.step);
}

// ---------- trace ----------
async function initTrace() {
  const out = $("trace");
  if (summary && !summary.has_index) out.append(el("p", { class: "note" }, "This run has no index yet: glass index " + summary.dir));
  $("trace-form").addEventListener("submit", (e) => {
    e.preventDefault();
    runTrace().catch((err) => { out.replaceChildren(el("p", { class: "error" }, err.message)); });
  });
  if (params.get("text")) {
    $("trace-text").value = params.get("text");
    await runTrace().catch((err) => out.replaceChildren(el("p", { class: "error" }, err.message)));
  }
}

async function runTrace() {
  const out = $("trace");
  out.replaceChildren(el("p", { class: "note" }, "tracing…"));
  let q = `?text=${enc($("trace-text").value)}&min_tokens=${enc($("trace-min").value)}`;
  if ($("trace-ck").value) q += `&checkpoint=${enc($("trace-ck").value)}`;
  const r = await api(BASE + "/trace" + q);
  out.replaceChildren(el("p", {}, `${r.tokens.length} tokens, ${r.spans.length} spans of at least ${r.min_tokens} tokens found in training`));
  for (const s of r.spans) {
    out.append(el("div", { class: "row" },
      el("h4", {}, `"${s.text}" tokens ${s.start}..${s.end}: ${s.count} times in training` +
        (s.count_before_checkpoint != null ? ` (${s.count_before_checkpoint} before checkpoint ${r.checkpoint})` : "") +
        `, ${s.validation_count} in validation; steps ${s.first_step}..${s.last_step}`),
      el("ul", {}, ...s.occurrences.map((o) => el("li", {},
        el("a", { href: `/runs/${enc(RID)}?tab=data&step=${o.step}` }, `step ${o.step}`),
        ` row ${o.row} @${o.offset} ${o.source} ${o.doc_id} bytes ${o.doc_bytes[0]}..${o.doc_bytes[1]}: …${o.before}`,
        el("b", {}, o.text), `${o.after}…`)))));
  }
  record("trace", r);
}

// ---------- dynamics: per-source losses, head scores over checkpoints ----------
let dyn = null;
let sourceCharts = [];
async function initDynamics() {
  if (params.get("threshold")) $("threshold").value = params.get("threshold");
  if (params.get("score")) $("score").value = params.get("score");
  if (params.get("dscale")) $("dscale").value = params.get("dscale");
  $("threshold").addEventListener("input", () => renderHeads());
  $("score").addEventListener("change", () => renderHeads());
  $("dscale").addEventListener("change", () => renderSources());
  await loadDynamics();
}

async function loadDynamics() {
  dyn = await api(BASE + "/dynamics");
  renderSources();
  renderHeads();
  document.body.dataset.dynamicsShown = String(dyn.rows.length);
}

// The step of each checkpoint (its index when the manifest does not list it).
function stepOfCheckpoint() {
  const m = new Map(dyn.checkpoints.map((c) => [c.checkpoint, c.step]));
  return (k) => (m.has(k) ? m.get(k) : k);
}

const LINE_TITLES = {
  source_nats_per_token: "held-out loss per source (nats/token)", source_bits_per_byte: "held-out bits per byte per source",
  weight_norm: "weight norm ‖W‖ per parameter group", update_norm: "update norm ‖W_k − W_k−1‖ per parameter group",
  update_cosine: "cos(W_k, W_k−1) per parameter group",
};
const WEIGHT_KINDS = ["weight_norm", "update_norm", "update_cosine"];

function renderSources() {
  for (const c of sourceCharts) c.destroy();
  sourceCharts = [];
  const log = $("dscale").value === "log";
  const src = Object.keys(dyn.kinds).filter((k) => k.startsWith("source_")).sort();
  const rec = lineCharts($("sources"), src, log, "sources");
  if (!src.length) $("sources").append(el("p", { class: "note" }, "No per-source losses stored (kinds source_*): glass analyze dynamics " + (summary ? summary.dir : "RUN")));
  record("sources", { scale: log ? "log" : "linear", kinds: rec });
  const wk = WEIGHT_KINDS.filter((k) => k in dyn.kinds);
  record("weights", { scale: log ? "log" : "linear", kinds: lineCharts($("weights"), wk, log, "groups") });
}

// One chart per kind, one line per name, x: the checkpoint's step.
function lineCharts(box, kinds, log, what) {
  box.replaceChildren();
  const stepOf = stepOfCheckpoint();
  const rec = {};
  const width = Math.max(320, Math.min(1200, (box.clientWidth || 900) - 20));
  for (const kind of kinds) {
    const rows = dyn.rows.filter((r) => r.kind === kind);
    const names = [...new Set(rows.map((r) => r.name))].sort();
    let xs = [...new Set(rows.map((r) => stepOf(r.checkpoint)))].sort((a, b) => a - b);
    if (log) xs = xs.filter((x) => x > 0);
    const at = new Map(rows.map((r) => [r.name + "\u0000" + stepOf(r.checkpoint), r.value]));
    const series = names.map((n) => xs.map((x) => (at.has(n + "\u0000" + x) ? at.get(n + "\u0000" + x) : null)));
    const div = el("div", { class: "chart", "data-kind": kind }, el("h3", {}, (LINE_TITLES[kind] || kind) + ` (${names.length} ${what})`));
    box.append(div);
    rec[kind] = { x: xs, names, series };
    if (!xs.length) continue;
    sourceCharts.push(new uPlot({
      width, height: 260,
      scales: { x: { time: false, distr: log ? 3 : 1 } },
      axes: [{ label: "step" }, { size: 64, values: (_, vals) => vals.map(tick) }],
      series: [{ label: "step" }, ...names.map((n, i) => ({ label: n, stroke: i < COLORS.length ? COLORS[i] : `hsl(${hue(n)}, 65%, 45%)`, width: 2, spanGaps: true, points: { show: true, size: 5 } }))],
    }, [xs, ...series], div));
  }
  return rec;
}

// `L3.H7` → [3, 7] (other names sort after, by name).
function headOrder(a, b) {
  const p = (s) => { const m = /^L(\d+)\.H(\d+)$/.exec(s); return m ? [Number(m[1]), Number(m[2])] : [Infinity, Infinity]; };
  const [x, y] = [p(a), p(b)];
  return x[0] - y[0] || x[1] - y[1] || (a < b ? -1 : a > b ? 1 : 0);
}

function renderHeads() {
  const box = $("heads");
  const kind = $("score").value;
  const thr = Number($("threshold").value);
  const stepOf = stepOfCheckpoint();
  const rows = dyn.rows.filter((r) => r.kind === kind);
  box.replaceChildren();
  if (!rows.length) {
    box.append(el("p", { class: "note" }, `No ${kind} scores stored: glass analyze dynamics ` + (summary ? summary.dir : "RUN")));
    record("heads", { kind, threshold: thr, checkpoints: [], heads: [] });
    return;
  }
  const cks = [...new Set(rows.map((r) => r.checkpoint))].sort((a, b) => a - b);
  const names = [...new Set(rows.map((r) => r.name))].sort(headOrder);
  const at = new Map(rows.map((r) => [r.name + "\u0000" + r.checkpoint, r.value]));
  const t = el("table", { class: "heat", "data-score": kind },
    el("tr", {}, el("th", { class: "l" }, "head \\ checkpoint (step)"), ...cks.map((k) => el("th", { title: `step ${stepOf(k)}` }, `${k} (${stepOf(k)})`)),
      el("th", { class: "l" }, `first > ${thr}`)));
  const heads = [];
  for (const n of names) {
    const values = cks.map((k) => (at.has(n + "\u0000" + k) ? at.get(n + "\u0000" + k) : null));
    const first = values.findIndex((v) => v != null && v > thr);
    const tr = el("tr", { "data-head": n }, el("th", { class: "l" }, n));
    values.forEach((v, i) => {
      const attrs = v == null ? {} : { style: `background: hsl(20, 85%, ${Math.round(97 - 55 * Math.max(0, Math.min(1, v)))}%)`, title: `${n} at checkpoint ${cks[i]} (step ${stepOf(cks[i])}): ${v}` };
      if (i === first) { attrs.class = "first"; attrs.title += ` — first above ${thr}`; }
      tr.append(el("td", attrs, fmt(v, 3)));
    });
    tr.append(el("td", { class: "l first-step" }, first < 0 ? "—" : `step ${stepOf(cks[first])} (checkpoint ${cks[first]})`));
    t.append(tr);
    heads.push({ name: n, values, first_checkpoint: first < 0 ? null : cks[first], first_step: first < 0 ? null : stepOf(cks[first]) });
  }
  box.append(el("div", { class: "scroll" }, t));
  record("heads", { kind, threshold: thr, checkpoints: cks.map((k) => ({ checkpoint: k, step: stepOf(k) })), heads });
}

// ---------- inspect: logit lens and attention of a prompt at a checkpoint ----------
async function initInspect() {
  for (const [p, id] of [["prompt", "inspect-prompt"], ["checkpoint", "inspect-ck"], ["layer", "inspect-layer"], ["head", "inspect-head"]]) {
    if (params.get(p) != null) $(id).value = params.get(p);
  }
  const out = $("inspect");
  const go = () => runInspect().catch((err) => out.replaceChildren(el("p", { class: "error" }, err.message)));
  $("inspect-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const u = new URL(location.href);
    u.searchParams.set("prompt", $("inspect-prompt").value);
    u.searchParams.set("checkpoint", $("inspect-ck").value);
    u.searchParams.set("layer", $("inspect-layer").value);
    u.searchParams.set("head", $("inspect-head").value);
    history.replaceState(null, "", u);
    go();
  });
  if (params.get("prompt")) await go();
}

// A token's text for a cell: escaped (\n, \t…), at most 12 characters (as glass inspect prints it).
function tokText(s) {
  const e = JSON.stringify(String(s)).slice(1, -1).replace(/\\"/g, '"');
  return [...e].length > 12 ? [...e].slice(0, 11).join("") + "…" : e;
}

// Attention probability → colour, white (0) to blue (1), whole RGB values so a pixel
// read back gives the value within 1/224.
const ATTN_RGB = [31, 119, 180];
const attnColor = (p) => ATTN_RGB.map((c) => Math.round(255 - Math.max(0, Math.min(1, p)) * (255 - c)));

// Token texts down the left (queries) and along the top (keys) of the attention map.
function labelAxes(ctx, texts, margin, cell) {
  ctx.fillStyle = "#222";
  ctx.font = `${Math.min(12, cell - 2)}px ui-monospace, monospace`;
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  texts.forEach((t, i) => ctx.fillText(t, margin - 4, margin + i * cell + cell / 2));
  texts.forEach((t, j) => {
    ctx.save();
    ctx.translate(margin + j * cell + cell / 2, margin - 4);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "left";
    ctx.fillText(t, 0, 0);
    ctx.restore();
  });
}

async function runInspect() {
  const out = $("inspect");
  out.replaceChildren(el("p", { class: "note" }, "inspecting…"));
  const q = `?prompt=${enc($("inspect-prompt").value)}&checkpoint=${enc($("inspect-ck").value || "latest")}` +
    `&layer=${enc($("inspect-layer").value)}&head=${enc($("inspect-head").value)}`;
  const r = await api(BASE + "/inspect" + q);
  const name = (t) => tokText(t in r.strings ? r.strings[t] : "#" + t);
  const n = r.tokens.length;
  out.replaceChildren(el("p", {}, `checkpoint ${r.checkpoint} (step ${r.step}): ${n} tokens, ${r.layers} layers × ${r.heads} heads, context ${r.max_seq_len}`));

  // Attention: query rows × key columns, drawn on a canvas and read back.
  const map = r.attention[0];
  const cell = Math.max(6, Math.min(28, Math.floor(560 / n)));
  const margin = 96;
  const cv = el("canvas", { class: "attn", width: String(margin + n * cell), height: String(margin + n * cell) });
  const ctx = cv.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, cv.width, cv.height);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      const [R, G, B] = attnColor(map.probs[i][j]);
      ctx.fillStyle = `rgb(${R}, ${G}, ${B})`;
      ctx.fillRect(margin + j * cell, margin + i * cell, cell, cell);
    }
  }
  // Read back once: each cell's centre pixel, as drawn.
  const img = ctx.getImageData(0, 0, cv.width, cv.height).data;
  const drawn = [];
  for (let i = 0; i < n; i++) {
    const row = [];
    const y = margin + i * cell + (cell >> 1);
    for (let j = 0; j < n; j++) {
      const x = margin + j * cell + (cell >> 1);
      row.push(j <= i ? (255 - img[4 * (y * cv.width + x)]) / (255 - ATTN_RGB[0]) : null);
    }
    drawn.push(row);
  }
  // Labels where they fit (the pointer names every cell).
  if (cell >= 8) labelAxes(ctx, r.tokens.map(name), margin, cell);

  const tip = el("div", { id: "attn-tip" });
  cv.addEventListener("mousemove", (e) => {
    const b = cv.getBoundingClientRect();
    const j = Math.floor((e.clientX - b.left - margin) / cell), i = Math.floor((e.clientY - b.top - margin) / cell);
    tip.textContent = i >= 0 && j >= 0 && i < n && j <= i ? `query ${i} "${name(r.tokens[i])}" → key ${j} "${name(r.tokens[j])}": ${fmt(map.probs[i][j], 4)}` : "";
  });
  out.append(el("h3", {}, `Attention, layer ${map.layer} head ${map.head} (rows: query positions; columns: the keys they attend to)`), el("div", { class: "scroll" }, cv), tip);

  // Lens: one row per residual stream, one column per position.
  const t = el("table", { class: "lens" },
    el("tr", {}, el("th", { class: "l" }, "stream \\ position"), ...r.tokens.map((tk, p) => el("th", { class: "l", title: `position ${p}` }, `${p} ${name(tk)}`))),
    el("tr", {}, el("th", { class: "l" }, "next token"), ...r.tokens.map((_, p) => el("th", { class: "l" }, p + 1 < n ? name(r.tokens[p + 1]) : "—"))));
  r.lens.forEach((row, l) => {
    const label = l === 0 ? "embedding" : l === r.layers ? `output (${l})` : `after block ${l - 1} (${l})`;
    t.append(el("tr", { "data-stream": l }, el("th", { class: "l" }, label), ...row.map((c, p) => {
      const top = c.top[0];
      const pr = c.next_prob == null ? 0 : c.next_prob;
      return el("td", { "data-cell": `${l}.${p}`, style: `background: hsl(120, 55%, ${Math.round(97 - 45 * pr)}%)`,
        title: c.top.map((x) => `${name(x.token)} ${fmt(x.prob, 4)}`).join("\n") + (c.next != null ? `\nnext ${name(c.next)}: rank ${c.next_rank}, p ${fmt(c.next_prob, 4)}` : "") },
        top ? name(top.token) : "", " ", el("small", {}, top ? fmt(top.prob, 2) : ""), c.next_rank != null ? el("small", {}, ` #${c.next_rank}`) : null);
    })));
  });
  out.append(el("h3", {}, "Logit lens: each residual stream through the final norm and the unembedding — top-1 token, its probability, #rank of the actual next token (green: that token's probability; hover for the top candidates)"), el("div", { class: "scroll" }, t));
  record("inspect", { checkpoint: r.checkpoint, step: r.step, layer: map.layer, head: map.head, tokens: r.tokens, lens: r.lens, drawn });
  document.body.dataset.inspectShown = String(r.checkpoint);
}

window.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  const go = page === "index" ? indexPage : runPage;
  go().catch(showError);
});
