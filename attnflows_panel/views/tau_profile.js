// Attention Flows: the tau profile (issue 27) as one small Canvas 2D chart.
//
// The ES module of attnflows_panel.views.tau_profile.TauProfile (a panel.custom.JSComponent). No imports.
// model.data holds, per model code c (1 pre-trained, 2 fine-tuned), "w<c>": each level's node widths
// sorted ascending (float32, level-major, L levels of n). A token of level k is in the graph at tau iff
// its width > tau (the paper's strict "above tau"), so the count of a level at tau is n minus the number
// of widths <= tau: a binary search. The chart draws the total below the root per model as a step
// curve over tau, the current tau (model.tau) as a line, and the breakpoints (the distinct widths) as
// ticks; hovering reads off each level's count; a click or a drag sets model.tau.

const FONT = "11px 'DejaVu Sans', 'Helvetica Neue', Arial, sans-serif";
const PAD = {l: 34, r: 8, t: 18, b: 26};

function get(obj, k) { return obj instanceof Map ? obj.get(k) : (obj ? obj[k] : undefined); }

// number of values <= t in the sorted slice a[lo, hi)
function countAtMost(a, lo, hi, t) {
  let l = lo, h = hi;
  while (l < h) {
    const m = (l + h) >> 1;
    if (a[m] <= t) l = m + 1; else h = m;
  }
  return l - lo;
}

export function levelCounts(w, L, n, tau) {
  const t = Math.fround(tau);  // the widths are float32: compare in their precision, as Python does
  const out = new Array(L);
  for (let k = 0; k < L; k++) out[k] = n - countAtMost(w, k * n, (k + 1) * n, t);
  return out;
}

export function render({model, el}) {
  const root = document.createElement("div");
  root.className = "attnflows-tau-profile";
  root.style.cssText = "position:relative;width:100%;height:100%;min-height:90px;cursor:crosshair;background:#fff";
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "position:absolute;left:0;top:0";
  root.appendChild(canvas);
  el.style.width = "100%";
  el.style.height = "100%";
  el.appendChild(root);
  const ctx = canvas.getContext("2d");
  const V = {w: 0, h: 0, dpr: 1, hover: null, drag: false};

  function data() {
    const raw = model.data;
    const L = get(raw, "L"), n = get(raw, "n");
    if (!raw || L == null || n == null) return null;
    const series = [];
    for (const c of (get(raw, "models") || [])) {
      const w = get(raw, "w" + c);
      if (w && w.length === L * n) series.push({code: c, w});
    }
    return series.length ? {L, n, series} : null;
  }

  function color(c) { return get(model.colors, String(c)) || "#555"; }

  function resize() {
    const r = root.getBoundingClientRect();
    V.w = Math.max(120, Math.round(r.width)); V.h = Math.max(90, Math.round(r.height));
    V.dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(V.w * V.dpr); canvas.height = Math.round(V.h * V.dpr);
    canvas.style.width = `${V.w}px`; canvas.style.height = `${V.h}px`;
  }

  const x0 = () => PAD.l, x1 = () => V.w - PAD.r, y0 = () => V.h - PAD.b, y1 = () => PAD.t;
  function xOf(t) { return x0() + (x1() - x0()) * t / model.tau_max; }
  function tOf(x) { return Math.min(1, Math.max(0, (x - x0()) / (x1() - x0()) * model.tau_max)); }

  function total(s, D, t) { return levelCounts(s.w, D.L, D.n, t).reduce((a, b) => a + b, 0); }

  function draw() {
    ctx.setTransform(V.dpr, 0, 0, V.dpr, 0, 0);
    ctx.clearRect(0, 0, V.w, V.h);
    const D = data();
    if (!D) { root.setAttribute("data-ready", "0"); return; }
    const ymax = Math.max(1, D.L * D.n > 0 ? Math.max(...D.series.map((s) => total(s, D, 0))) : 1);
    const yOf = (v) => y0() - (y0() - y1()) * v / ymax;
    ctx.font = FONT;
    ctx.fillStyle = "#555"; ctx.strokeStyle = "#bbb"; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(x0(), y1()); ctx.lineTo(x0(), y0()); ctx.lineTo(x1(), y0()); ctx.stroke();
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    ctx.fillText(String(ymax), x0() - 4, yOf(ymax)); ctx.fillText("0", x0() - 4, y0());
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (let t = 0; t <= model.tau_max + 1e-9; t += 0.1) ctx.fillText(t.toFixed(1), xOf(t), y0() + 9);
    ctx.textAlign = "right"; ctx.textBaseline = "top";
    ctx.fillText("tokens in the graph vs τ", x1(), 1);
    const px = Math.max(1, Math.floor(x1() - x0()));
    for (const s of D.series) {
      // the breakpoints: ticks under the axis where this model's graph changes
      ctx.strokeStyle = color(s.code); ctx.globalAlpha = 0.6;
      ctx.beginPath();
      const tickY = y0() + (s.code === 1 ? 1 : 5);
      for (let i = 0; i < s.w.length; i++) {
        const t = s.w[i];
        if (t > 0 && t <= model.tau_max && (i === 0 || s.w[i - 1] !== t)) {
          const x = xOf(t); ctx.moveTo(x, tickY); ctx.lineTo(x, tickY + 3);
        }
      }
      ctx.stroke(); ctx.globalAlpha = 1;
      // the step curve, one sample per pixel column
      ctx.strokeStyle = color(s.code); ctx.lineWidth = 1.6;
      ctx.beginPath();
      for (let i = 0; i <= px; i++) {
        const x = x0() + i, v = total(s, D, tOf(x));
        if (i === 0) ctx.moveTo(x, yOf(v)); else ctx.lineTo(x, yOf(v));
      }
      ctx.stroke(); ctx.lineWidth = 1;
    }
    // the current tau
    const tau = model.tau;
    ctx.strokeStyle = "#222"; ctx.setLineDash([3, 2]);
    ctx.beginPath(); ctx.moveTo(xOf(tau), y1()); ctx.lineTo(xOf(tau), y0()); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = "#222"; ctx.textAlign = xOf(tau) > (x0() + x1()) / 2 ? "right" : "left";
    ctx.textBaseline = "top";
    const label = `τ ${tau.toFixed(2)}: ` + D.series.map((s) => total(s, D, tau)).join(" / ");
    ctx.fillText(label, xOf(tau) + (ctx.textAlign === "left" ? 3 : -3), y1() + 12);
    const counts = {}, names = {1: "pre", 2: "fine"};
    for (const s of D.series) counts[names[s.code] || String(s.code)] = levelCounts(s.w, D.L, D.n, tau);
    root.setAttribute("data-tau", String(tau));
    root.setAttribute("data-counts", JSON.stringify(counts));
    if (V.hover != null) {
      const t = V.hover, hc = {};
      for (const s of D.series) hc[names[s.code] || String(s.code)] = levelCounts(s.w, D.L, D.n, t);
      ctx.strokeStyle = "#999";
      ctx.beginPath(); ctx.moveTo(xOf(t), y1()); ctx.lineTo(xOf(t), y0()); ctx.stroke();
      root.title = `τ ${t.toFixed(3)} — tokens per level (1 = input … ${D.L}):\n` +
        D.series.map((s) => `${s.code === 1 ? "pre-trained" : "fine-tuned"}: ` +
          levelCounts(s.w, D.L, D.n, t).join(" · ")).join("\n") + "\nclick to set τ";
      root.setAttribute("data-hover-tau", String(t));
      root.setAttribute("data-hover-counts", JSON.stringify(hc));
    }
    root.setAttribute("data-ready", "1");
  }

  let pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(); });
  }
  function local(ev) { const r = root.getBoundingClientRect(); return ev.clientX - r.left; }
  function setTau(x) { model.tau = Math.round(tOf(x) * 1000) / 1000; }
  root.addEventListener("pointermove", (ev) => {
    V.hover = tOf(local(ev));
    if (V.drag) setTau(local(ev));
    schedule();
  });
  root.addEventListener("pointerleave", () => { V.hover = null; V.drag = false; root.removeAttribute("title"); schedule(); });
  root.addEventListener("pointerdown", (ev) => { V.drag = true; setTau(local(ev)); });
  root.addEventListener("pointerup", () => { V.drag = false; });
  for (const name of ["data", "tau", "tau_max", "colors"]) model.on(name, schedule);
  const ro = new ResizeObserver(() => { resize(); draw(); });
  ro.observe(root);
  model.on("remove", () => ro.disconnect());
  resize();
  draw();
}

export default {render};
