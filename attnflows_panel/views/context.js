// Attention Flows: the Sentence Context view (§4.3.1, Fig. 1(b)) as one Canvas 2D drawing.
//
// The ES module of attnflows_panel.views.context.ContextView (a panel.custom.JSComponent). No imports, so it
// works offline in `panel serve`, in a notebook and in JupyterLab. Python sends the geometry (model.data: per
// node its level and position, per position its angle, per level its ring's radii, see context.py) and the
// nodes' display states (model.states); the browser draws one ring per level with a wedge per node, the
// level band (model.level), the meeting tick, and a tooltip on hover.
//
// Coordinates: the data's are px at the design radius, y up, angles counter-clockwise; the screen's are
// CSS px of the canvas: sx = w/2 + x * S, sy = h/2 - y * S.

const FONT_FAMILY = "'DejaVu Sans', 'Helvetica Neue', Arial, sans-serif";
const TWO_PI = 2 * Math.PI;

function get(obj, k) { return obj instanceof Map ? obj.get(k) : (obj ? obj[k] : undefined); }

export function render({model, el}) {
  const root = document.createElement("div");
  root.className = "attnflows-context";
  root.style.cssText = "position:relative;width:100%;height:100%;overflow:hidden;background:#fff;" +
    "font-family:" + FONT_FAMILY;
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "position:absolute;left:0;top:0";
  root.appendChild(canvas);
  const tip = document.createElement("div");
  tip.className = "attnflows-context-tip";
  tip.style.cssText = "position:absolute;display:none;pointer-events:none;font-size:12px;line-height:16px;" +
    "background:rgba(255,255,255,0.95);border:1px solid #bbb;border-radius:3px;padding:1px 5px;color:#222;" +
    "white-space:nowrap;z-index:2";
  root.appendChild(tip);
  el.style.width = "100%";
  el.style.height = "100%";
  el.appendChild(root);
  const ctx = canvas.getContext("2d");

  const V = {D: null, st: null, w: 0, h: 0, dpr: window.devicePixelRatio || 1, index: null};

  function load() {
    const raw = model.data;
    if (!raw || get(raw, "N") == null) { V.D = null; return; }
    const D = {};
    const keys = raw instanceof Map ? Array.from(raw.keys()) : Object.keys(raw);
    for (const k of keys) D[k] = get(raw, k);
    D.tok = String(D.tokens || "").split("\n");
    V.D = D;
    const index = new Int32Array((D.L + 1) * D.n).fill(-1);  // (level, pos) -> node
    for (let u = 0; u < D.N; u++) index[D.n_level[u] * D.n + D.n_pos[u]] = u;
    V.index = index;
    loadStates();
  }

  function loadStates() {
    const D = V.D, s = get(model.states, "st");
    V.st = D && s && s.length === D.N ? s : null;
  }

  function scale() { return V.D ? Math.min(V.w, V.h) / (2 * V.D.extent) : 1; }

  function resize() {
    const r = root.getBoundingClientRect();
    const w = Math.max(40, Math.round(r.width)), h = Math.max(40, Math.round(r.height));
    if (w === V.w && h === V.h && V.dpr === (window.devicePixelRatio || 1)) return false;
    V.w = w; V.h = h; V.dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(w * V.dpr); canvas.height = Math.round(h * V.dpr);
    canvas.style.width = `${w}px`; canvas.style.height = `${h}px`;
    return true;
  }

  function draw() {
    const D = V.D;
    ctx.setTransform(V.dpr, 0, 0, V.dpr, 0, 0);
    ctx.clearRect(0, 0, V.w, V.h);
    if (!D) { root.setAttribute("data-ready", "0"); return; }
    const S = scale(), cx = V.w / 2, cy = V.h / 2;
    const level = model.level;
    // the rings (levels 0 .. L-1; the root is the disc in the centre), the chosen one outlined
    for (let k = 0; k < D.L; k++) {
      const r0 = D.inner[k] * S, r1 = D.outer[k] * S;
      ctx.beginPath();
      ctx.arc(cx, cy, r1, 0, TWO_PI);
      ctx.arc(cx, cy, r0, TWO_PI, 0, true);
      ctx.fillStyle = D.ring_fill;
      ctx.globalAlpha = 1;
      ctx.fill("evenodd");
      if (level != null && level === k) {
        ctx.strokeStyle = D.band_line;
        ctx.lineWidth = 1;
        ctx.beginPath(); ctx.arc(cx, cy, r1, 0, TWO_PI); ctx.stroke();
        ctx.beginPath(); ctx.arc(cx, cy, r0, 0, TWO_PI); ctx.stroke();
      }
    }
    // one wedge per node: at its position's angle on its level's ring (data angles are counter-clockwise
    // with y up; on screen, y down, they flip sign)
    for (let u = 0; u < D.N; u++) {
      const k = D.n_level[u], s = V.st ? V.st[u] : 5;
      const a = D.alpha[s];
      if (a <= 0) continue;
      ctx.globalAlpha = a;
      ctx.fillStyle = D.palette[s];
      ctx.beginPath();
      if (k === D.L) {
        ctx.arc(cx, cy, D.outer[k] * S, 0, TWO_PI);
      } else {
        const ang = D.angles[D.n_pos[u]], r0 = D.inner[k] * S, r1 = D.outer[k] * S;
        ctx.arc(cx, cy, r1, -(ang + D.half), -(ang - D.half));
        ctx.arc(cx, cy, r0, -(ang - D.half), -(ang + D.half), true);
        ctx.closePath();
      }
      ctx.fill();
    }
    ctx.globalAlpha = 1;
    const t = D.tick;
    ctx.strokeStyle = "#111111";
    ctx.lineWidth = 2.5;
    ctx.beginPath();
    ctx.moveTo(cx + t[0] * S, cy - t[1] * S);
    ctx.lineTo(cx + t[2] * S, cy - t[3] * S);
    ctx.stroke();
    root.setAttribute("data-wedges", String(D.N));
    root.setAttribute("data-level", level == null ? "" : String(level));
    root.setAttribute("data-ready", "1");
  }

  // the node under canvas point (mx, my), or -1
  function nodeAt(mx, my) {
    const D = V.D;
    if (!D) return -1;
    const S = scale(), x = (mx - V.w / 2) / S, y = -(my - V.h / 2) / S;
    const r = Math.hypot(x, y);
    let k = -1;
    for (let j = 0; j <= D.L; j++) if (r >= D.inner[j] && r <= D.outer[j]) { k = j; break; }
    if (k < 0) return -1;
    if (k === D.L) return V.index[k * D.n + 0] >= 0 ? V.index[k * D.n] : -1;
    let a = Math.atan2(y, x);
    if (a < 0) a += TWO_PI;
    let best = -1, bd = D.half;
    for (let p = 0; p < D.n; p++) {
      let d = Math.abs(a - D.angles[p]);
      if (d > Math.PI) d = TWO_PI - d;
      if (d <= bd) { bd = d; best = p; }
    }
    return best < 0 ? -1 : V.index[k * D.n + best];
  }

  canvas.addEventListener("mousemove", (ev) => {
    const b = canvas.getBoundingClientRect();
    const mx = ev.clientX - b.left, my = ev.clientY - b.top;
    const u = nodeAt(mx, my), D = V.D;
    if (u < 0) { tip.style.display = "none"; root.setAttribute("data-hover", ""); return; }
    const k = D.n_level[u], p = D.n_pos[u];
    root.setAttribute("data-hover", `${k}:${p}`);
    tip.textContent = "";
    const b0 = document.createElement("b");
    b0.textContent = D.tok[p];
    tip.appendChild(b0);
    tip.appendChild(document.createTextNode(` · token ${p + 1} of the input · level ${k + 1}`));
    tip.style.display = "block";
    tip.style.left = `${Math.max(0, Math.min(mx + 10, V.w - tip.offsetWidth - 2))}px`;
    tip.style.top = `${Math.min(my + 14, V.h - 20)}px`;
  });
  canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; root.setAttribute("data-hover", ""); });

  // test hook: every wedge's middle in page coordinates, its state and colour
  root.attnflowsWedges = () => {
    const D = V.D;
    if (!D) return [];
    const b = canvas.getBoundingClientRect(), S = scale(), out = [];
    for (let u = 0; u < D.N; u++) {
      const k = D.n_level[u], p = D.n_pos[u], s = V.st ? V.st[u] : 5;
      let x = 0, y = 0;
      if (k < D.L) {
        const rm = (D.inner[k] + D.outer[k]) / 2, a = D.angles[p];
        x = rm * Math.cos(a); y = rm * Math.sin(a);
      }
      out.push({level: k, pos: p, x: b.left + V.w / 2 + x * S, y: b.top + V.h / 2 - y * S, state: s,
                color: D.palette[s]});
    }
    return out;
  };

  model.on("data", () => { load(); draw(); });
  model.on("states", () => { loadStates(); draw(); });
  model.on("level", () => draw());
  const ro = new ResizeObserver(() => { if (resize()) draw(); });
  ro.observe(root);
  model.on("remove", () => ro.disconnect());
  load();
  resize();
  draw();
}

export default {render};
