// Attention Flows: the radial Attention Flow view (§4.3-4.4, Figs. 1(c), 4-8) as one Canvas 2D drawing.
//
// This file holds the constants and the view (render); radial.py appends, into one ES module, the label
// placement (radial_labels.js), the data and traces (radial_data.js), hit tests and the info box
// (radial_info.js), the SVG recorder and export (radial_svg.js) and the test hooks (radial_hooks.js).
//
// The ES module of attnflows_panel.views.radial.RadialFlow (a panel.custom.JSComponent). No imports, so
// it works offline in `panel serve`, in a notebook and in JupyterLab. Python sends what is drawn as typed
// arrays (model.data, one array per column, see radial.py) and the frozen highlight (model.frozen); the
// browser draws, hovers (traces from the ancestor bit streams, no round trip), zooms, pans, places the
// labels, brushes and exports. What Python must know goes back through model.pick.
//
// Coordinates: the data's are pixels at the layout's design size, y up (layout.py). The screen's are CSS
// px of the canvas: sx = cx + panX + x * S, sy = cy + panY - y * S, S = fit * zoom.

const PRE = 1, FINE = 2;
const FONT_PX = 11;       // the label font (CSS px); never below 10 (issue #24)
const FONT_FAMILY = "'DejaVu Sans', 'Helvetica Neue', Arial, sans-serif";
const LABEL_PAD = 3;      // free px kept around a label box
const RUN_FONT_PX = 10;   // a folded run's count, and the tokens of an opened run
const OPEN_MIN_PX = 8;    // below this many screen px of arc per token a folded run stays shut (no measuring)
const OPEN_MAX = 600;     // runs longer than this stay folded (their tokens are listed on hover)
const PATH_BATCH = 256;   // quads per filled path (a path of many thousands fills very slowly)
const EDGE_BUDGET = 48;   // traced edges drawn per layer at most (the strongest): no hairball
const MODEL_NAME = {1: "pre-trained only", 2: "fine-tuned only", 3: "both models"};
const MODEL_COLOR = {1: "#2bb3a4", 2: "#7b3fa0", 3: "#e07b00"};

// ------------------------------------------------------------------------------------- the view

export function render({model, el}) {
  const root = document.createElement("div");
  root.className = "attnflows-radial";
  root.style.cssText = "position:relative;width:100%;height:100%;min-height:200px;overflow:hidden;" +
    "font-family:" + FONT_FAMILY + ";user-select:none;background:#fff";
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "position:absolute;left:0;top:0;touch-action:none";
  root.appendChild(canvas);
  const info = document.createElement("div");
  info.className = "attnflows-radial-info";
  info.style.cssText = "position:absolute;left:6px;top:4px;max-width:46%;font-size:12px;line-height:16px;" +
    "color:#333;background:rgba(255,255,255,0.86);padding:2px 5px;border-radius:3px;pointer-events:none";
  root.appendChild(info);
  const bar = document.createElement("div");
  bar.className = "attnflows-radial-toolbar";
  bar.style.cssText = "position:absolute;right:4px;top:4px;display:flex;gap:2px;font-size:11px";
  root.appendChild(bar);
  const tools = {};
  function button(name, text, title, onclick) {
    const b = document.createElement("button");
    b.textContent = text; b.title = title; b.className = `af-tool af-tool-${name}`;
    b.style.cssText = "font-size:11px;padding:1px 5px;border:1px solid #bbb;border-radius:3px;background:#fafafa;cursor:pointer";
    b.addEventListener("click", (ev) => { ev.stopPropagation(); onclick(); });
    bar.appendChild(b);
    tools[name] = b;
    return b;
  }
  // fill the host element Panel gives (a host sized by its page, as in tests/browser_support.py, keeps its size)
  if (!el.style.width) el.style.width = "100%";
  if (!el.style.height) el.style.height = "100%";
  el.appendChild(root);
  const ctx = canvas.getContext("2d");

  const V = {
    D: null, X: null, w: 0, h: 0, dpr: window.devicePixelRatio || 1, zoom: 1, panX: 0, panY: 0,
    tool: "pan", hover: null, shift: false, drag: null, widths: null, widthsFont: "", base: null,
    baseKey: "", frozenTrace: null, hoverTrace: null, lastDraw: 0, pending: false, sent: null,
  };

  function setTool(t) {
    V.tool = t;
    for (const k of ["pan", "box", "lasso"]) tools[k].style.background = k === t ? "#dde6f5" : "#fafafa";
    root.setAttribute("data-tool", t);
  }
  button("pan", "Pan", "Drag to pan, wheel to zoom", () => setTool("pan"));
  button("box", "Box", "Box brush: tokens within a ring (their intersection), or on two rings (the paths)", () => setTool("box"));
  button("lasso", "Lasso", "Lasso brush", () => setTool("lasso"));
  button("reset", "Reset", "Reset zoom and pan", () => { V.zoom = 1; V.panX = V.panY = 0; schedule(); });
  button("clear", "Clear", "Clear the selection", () => send([], [], "both"));
  button("svg", "SVG", "Export what is drawn as SVG (vector, with the legend and both sentences)", () => exportSvg());
  button("png", "PNG", "Export what is drawn as PNG (3x)", () => exportPng());
  setTool("pan");

  // --------------------------------------------------------------------------------- data

  function get(obj, k) { return obj instanceof Map ? obj.get(k) : obj[k]; }

  function loadData() {
    const raw = model.data;
    if (!raw || get(raw, "N") == null) { V.D = null; V.X = null; return; }
    const D = {};
    const keys = raw instanceof Map ? Array.from(raw.keys()) : Object.keys(raw);
    for (const k of keys) D[k] = get(raw, k);
    D.labels = String(D.label_text || "").split("\n");
    D.tokens = D.tokens || [];
    const t0 = performance.now();
    expand(D);
    const t1 = performance.now();
    V.D = D;
    V.X = prep(D);
    root.setAttribute("data-load-ms", `${(t1 - t0).toFixed(1)},${(performance.now() - t1).toFixed(1)}`);
    V.version = (V.version || 0) + 1;
    V.widths = null;
    V.hover = null;
    V.hoverTrace = null;
    loadFrozen();
  }

  function loadFrozen() {
    const f = model.frozen, D = V.D;
    V.frozenTrace = null;
    if (!D || !f) return;
    const nodes = get(f, "nodes");
    if (!nodes || nodes.length !== D.N || get(f, "edges").length !== D.E) return;
    let any = false;
    for (let i = 0; i < nodes.length; i++) if (nodes[i]) { any = true; break; }
    if (!any) return;
    V.frozenTrace = {codes: nodes, origin: get(f, "origin"), ecodes: get(f, "edges"), gon: get(f, "glyphs")};
  }

  // ----------------------------------------------------------------------------- geometry

  function fit() {
    const D = V.D;
    return D ? Math.min(V.w, V.h) / (2 * D.extent) : 1;
  }
  function scale() { return fit() * V.zoom; }
  function toScreen(x, y) {
    const S = scale();
    return [V.w / 2 + V.panX + x * S, V.h / 2 + V.panY - y * S];
  }
  function toData(sx, sy) {
    const S = scale();
    return [(sx - V.w / 2 - V.panX) / S, -(sy - V.h / 2 - V.panY) / S];
  }

  function placeInfo() {
    // the info box (help, hover details) beside the toolbar when 220 px remain, else below it
    const room = V.w - bar.offsetWidth - 20;
    if (room >= 220) { info.style.top = "4px"; info.style.maxWidth = `${room}px`; }
    else { info.style.top = `${bar.offsetHeight + 8}px`; info.style.maxWidth = `${Math.max(160, V.w - 16)}px`; }
  }

  function resize() {
    const r = root.getBoundingClientRect();
    const w = Math.max(50, Math.round(r.width)), h = Math.max(50, Math.round(r.height));
    if (w === V.w && h === V.h && V.dpr === (window.devicePixelRatio || 1)) return;
    V.w = w; V.h = h; V.dpr = window.devicePixelRatio || 1;
    placeInfo();
    canvas.width = Math.round(w * V.dpr); canvas.height = Math.round(h * V.dpr);
    canvas.style.width = `${w}px`; canvas.style.height = `${h}px`;
    V.base = null;
    schedule();
  }

  // ------------------------------------------------------------------------------ drawing

  function state(trace, u) {  // display state of node u (flow_data.py's table)
    const D = V.D;
    if (!trace) return 5 + D.n_base[u];
    if (trace.origin[u]) return 8 + Math.max(trace.codes[u], 1);
    return trace.codes[u] ? trace.codes[u] : 4;
  }

  function drawRings(g, S) {
    const D = V.D, [cx, cy] = toScreen(0, 0);
    const band = D.ch * S;
    for (let k = 0; k < D.L; k++) {
      const chosen = model.level != null && k === model.level;
      g.beginPath(); g.arc(cx, cy, D.radii[k] * S, 0, 2 * Math.PI);
      g.globalAlpha = chosen ? 1 : 0.55;
      g.strokeStyle = chosen ? D.band_fill : "#f3f3f3";
      g.lineWidth = band + (chosen ? 6 * S : 0.6 * S);
      g.stroke();
      if (chosen) {
        g.globalAlpha = 1; g.strokeStyle = D.band_line; g.lineWidth = 1.2;
        for (const r of [D.radii[k] - D.ch / 2 - 3, D.radii[k] + D.ch / 2 + 3]) {
          g.beginPath(); g.arc(cx, cy, r * S, 0, 2 * Math.PI); g.stroke();
        }
      }
    }
    g.globalAlpha = 1;
    // a decoder's roles (pack_roles): each ring cell's slot tinted in its token's role colour, so the
    // rings show where the system, user and assistant parts lie, as the sentence view's bands do
    if (D.n_role) {
      g.globalAlpha = 0.3;
      for (let r = 0; r < D.role_colors.length; r++) {
        g.fillStyle = D.role_colors[r]; g.beginPath();
        for (let u = 0; u < D.N; u++) {
          if (D.n_role[u] !== r) continue;
          const a = D.n_angle[u], h = D.n_half[u], r0 = D.n_rin[u] * S, r1 = D.n_rout[u] * S;
          g.moveTo(cx + r0 * Math.cos(a - h), cy - r0 * Math.sin(a - h));
          g.arc(cx, cy, r1, -(a - h), -(a + h), true);
          g.arc(cx, cy, r0, -(a + h), -(a - h), false);
          g.closePath();
        }
        g.fill();
      }
      g.globalAlpha = 1;
    }
    // the meeting ticks of sentences A and B, and the ring numbers (1-based levels)
    g.strokeStyle = "#111"; g.lineWidth = Math.max(1.5, 3.2 * Math.min(1, S)); g.lineCap = "round";
    g.beginPath();
    for (let i = 0; i < D.t_x0.length; i++) {
      const a = toScreen(D.t_x0[i], D.t_y0[i]), b = toScreen(D.t_x1[i], D.t_y1[i]);
      g.moveTo(a[0], a[1]); g.lineTo(b[0], b[1]);
    }
    g.stroke(); g.lineCap = "butt";
    // folded runs (R2's `runs`): an arc with a count, for tokens the graph does not reach at a level
    if (D.r_level && D.r_level.length) {
      g.strokeStyle = "#c9c9c9"; g.lineWidth = Math.max(2, 4 * S);
      for (let i = 0; i < D.r_level.length; i++) {
        const r = D.radii[D.r_level[i]] * S;
        g.beginPath(); g.arc(cx, cy, r, -D.r_a1[i], -D.r_a0[i]); g.stroke();
      }
    }
  }

  function edgePath(g, e, S) {
    const C = V.X.curve, o = e * 8, T = tf();
    const X = (i) => T.ox + C[o + i] * T.S, Y = (i) => T.oy - C[o + i + 1] * T.S;
    g.moveTo(X(0), Y(0)); g.bezierCurveTo(X(2), Y(2), X(4), Y(4), X(6), Y(6));
  }

  function drawRestEdges(g, S) {
    // at rest: only what can be followed (the `rest` edges: strongest per ring), grey by default,
    // model-coloured in the combined mode
    const D = V.D, X = V.X;
    const groups = {};
    for (let e = 0; e < X.E; e++) {
      if (!D.e_rest[e]) continue;
      const col = D.comparison && D.e_mem[e] !== 3 ? MODEL_COLOR[D.e_mem[e]] : "#7f7f7f";
      (groups[col] = groups[col] || []).push(e);
    }
    g.lineWidth = 0.9; g.globalAlpha = 0.45;
    clipDisc(g);
    for (const col in groups) {
      g.strokeStyle = col; g.beginPath();
      for (const e of groups[col]) edgePath(g, e, S);
      g.stroke();
    }
    g.restore();
    g.globalAlpha = 1;
  }

  function clipDisc(g) {
    // edges stay inside the drawing: clipped to the disc of the outermost cells (a curve between tokens
    // half a turn apart may bulge a little past its ends' radii)
    const T = tf();
    g.save(); g.beginPath(); g.arc(T.ox, T.oy, V.X.rmax * T.S, 0, 2 * Math.PI); g.clip();
  }

  function drawTraceEdges(g, S, tr, hovered) {
    // the trace's edges, per layer the strongest EDGE_BUDGET (those of the hovered/selected token
    // first), opacity by how many are drawn in the layer: never a hairball
    const D = V.D, X = V.X;
    const count = new Int32Array(X.L);
    for (let e = 0; e < X.E; e++) if (tr.ecodes[e]) count[X.layer[e]] += 1;
    const start = new Int32Array(X.L + 1);
    for (let k = 0; k < X.L; k++) start[k + 1] = start[k] + count[k];
    if (!X.keyBuf) X.keyBuf = new Float64Array(X.E);  // reused: a hover allocates no edge-sized array
    const keys = X.keyBuf.subarray(0, start[X.L]), fillp = start.slice(0, X.L);
    for (let e = 0; e < X.E; e++) {
      if (!tr.ecodes[e]) continue;
      const u = X.eu[e], v = X.ev[e];
      const must = tr.origin[u] || tr.origin[v] || u === hovered || v === hovered ? 1e6 : 0;
      // larger = drawn first; the edge id rides in the fraction-free low part of the key
      keys[fillp[X.layer[e]]++] = -((must + X.strength[e]) * 4194304 + (4194303 - e));
    }
    const groups = new Map();
    for (let k = 0; k < X.L; k++) {
      let part = keys.subarray(start[k], start[k + 1]);
      if (part.length > EDGE_BUDGET) { smallestFirst(part, EDGE_BUDGET); part = part.subarray(0, EDGE_BUDGET); }
      const alpha = Math.max(0.18, Math.min(0.85, 14 / Math.max(1, part.length)));
      for (let i = 0; i < part.length; i++) {
        const e = 4194303 - ((-part[i]) % 4194304);
        const key = `${tr.ecodes[e]}|${alpha.toFixed(2)}`;
        if (!groups.has(key)) groups.set(key, []);
        groups.get(key).push(e);
      }
    }
    g.lineWidth = 1.3;
    clipDisc(g);
    for (const [key, list] of groups) {
      const [code, a] = key.split("|");
      g.strokeStyle = D.comparison ? MODEL_COLOR[+code] : MODEL_COLOR[D.models];
      g.globalAlpha = +a;
      g.beginPath();
      for (const e of list) edgePath(g, e, S);
      g.stroke();
    }
    g.restore();
    g.globalAlpha = 1;
  }

  function tf() {  // the current transform: screen = (ox + x * S, oy - y * S)
    const S = scale();
    return {S, ox: V.w / 2 + V.panX, oy: V.h / 2 + V.panY};
  }

  function visible(T, x, y, m) {  // is data point (x, y) within m px of the canvas?
    const sx = T.ox + x * T.S, sy = T.oy - y * T.S;
    return sx > -m && sy > -m && sx < V.w + m && sy < V.h + m;
  }

  function cellPath(g, T, u) {  // the token's cell below its label: glyph block and sparkline row
    const D = V.D;
    quadT(g, T, D.n_hx[u], D.n_hy[u], D.cw + 2, D.ch + 2, D.n_ta[u]);
  }

  function drawCells(g, S, only, pixels) {
    // glyph blocks, head glyphs and sparklines of every visible node (or of the nodes with only[u] set);
    // below 1.2 px a glyph is not told apart: each block is drawn in its commonest glyph colour; pixels (a
    // canvas, not the SVG recorder): glyphs under GLYPH_PIXELS device px are written as pixels (glyphLayer)
    const D = V.D, X = V.X, T = tf();
    const margin = (D.cw + D.ch) * S;
    const show = new Uint8Array(X.N);
    for (let u = 0; u < X.N; u++) show[u] = (!only || only[u]) && visible(T, D.n_hx[u], D.n_hy[u], margin) ? 1 : 0;
    const detail = D.glyph * S >= 1.2;
    g.fillStyle = "#f4f4f4"; g.beginPath();
    for (let u = 0; u < X.N; u++) {
      if (show[u] && D.n_bw[u] > 0) quadT(g, T, D.n_bx[u], D.n_by[u], D.n_bw[u], D.n_bh[u], D.n_ta[u]);
      if ((u + 1) % PATH_BATCH === 0) { g.fill(); g.beginPath(); }
    }
    g.fill();
    if (pixels) root.setAttribute("data-glyph-pixels", detail && D.glyph * S * V.dpr < GLYPH_PIXELS ? "1" : "0");
    if (detail && pixels && D.glyph * S * V.dpr < GLYPH_PIXELS) {
      g.setTransform(1, 0, 0, 1, 0, 0);
      g.drawImage(glyphLayer(V.glyphCache || (V.glyphCache = {}), D, X, T, V.dpr, V.w, V.h, show), 0, 0);
      g.setTransform(V.dpr, 0, 0, V.dpr, 0, 0);
    } else if (detail) {
      for (const [gc, rows] of X.gcRows) {
        g.fillStyle = D.palette[gc]; g.beginPath();
        let k = 0;
        for (let i = 0; i < rows.length; i++) {
          const r = rows[i], u = D.g_node[r];
          if (!show[u]) continue;
          quadT(g, T, D.g_x[r], D.g_y[r], D.g_part[r] ? D.glyph / 2 : D.glyph, D.glyph, D.n_ta[u]);
          // filled in batches: one path of tens of thousands of turned quads takes Chromium seconds to fill
          if (++k % PATH_BATCH === 0) { g.fill(); g.beginPath(); }
        }
        g.fill();
      }
    } else {
      for (const [gc, nodes] of X.blockRows) {
        g.fillStyle = D.palette[gc]; g.beginPath();
        for (let i = 0; i < nodes.length; i++) {
          const u = nodes[i];
          if (show[u]) quadT(g, T, D.n_bx[u], D.n_by[u], D.n_bw[u], D.n_bh[u], D.n_ta[u]);
          if ((i + 1) % PATH_BATCH === 0) { g.fill(); g.beginPath(); }
        }
        g.fill();
      }
    }
    g.strokeStyle = "#b0b0b0"; g.lineWidth = 0.8; g.beginPath();
    for (let u = 0; u < X.N; u++) {
      if (!show[u] || X.lvl[u] === X.L) continue;
      g.moveTo(T.ox + D.n_sx0[u] * S, T.oy - D.n_sy0[u] * S); g.lineTo(T.ox + D.n_sx1[u] * S, T.oy - D.n_sy1[u] * S);
    }
    g.stroke();
    if (D.spark_h * S < 5) return;  // the bars would be too small to tell apart
    const sparkCol = D.comparison ? {1: MODEL_COLOR[1], 2: MODEL_COLOR[2]} : {1: "#555555", 2: "#555555"};
    const lw = Math.max(0.8, Math.min(1.4, 2.8 * S)), sparkPixels = X.nSpark > SPARK_PIXELS && lw * V.dpr < SPARK_WIDTH;
    if (pixels) root.setAttribute("data-spark-pixels", sparkPixels ? "1" : "0");
    if (pixels && sparkPixels) {  // many thin bars: written as pixels (radial_data.js, sparkLayer)
      g.setTransform(1, 0, 0, 1, 0, 0);
      g.drawImage(sparkLayer(V.sparkCache || (V.sparkCache = {}), X, T, V.dpr, V.w, V.h, show, sparkCol, lw), 0, 0);
      g.setTransform(V.dpr, 0, 0, V.dpr, 0, 0);
      return;
    }
    for (const c of [1, 2]) {
      g.strokeStyle = sparkCol[c]; g.lineWidth = lw; g.beginPath();
      const sp = X.spark;
      let k = 0;
      for (let i = 0; i < X.nSpark; i++) {
        const o = i * 6;
        if (sp[o + 1] !== c || !show[sp[o]]) continue;
        g.moveTo(T.ox + sp[o + 2] * S, T.oy - sp[o + 3] * S); g.lineTo(T.ox + sp[o + 4] * S, T.oy - sp[o + 5] * S);
        if (++k % PATH_BATCH === 0) { g.stroke(); g.beginPath(); }
      }
      g.stroke();
    }
  }

  function drawHalos(g, S, tr) {
    const D = V.D, X = V.X, T = tf();
    const groups = new Map();
    for (let u = 0; u < X.N; u++) {
      const st = state(tr, u);
      if (!(D.halo_alpha[st] > 0) || !visible(T, D.n_hx[u], D.n_hy[u], 20)) continue;
      if (!groups.has(st)) groups.set(st, []);
      groups.get(st).push(u);
    }
    for (const [st, nodes] of groups) {
      g.globalAlpha = D.halo_alpha[st]; g.fillStyle = D.state_colors[st]; g.beginPath();
      for (const u of nodes) {
        const sx = T.ox + D.n_hx[u] * T.S, sy = T.oy - D.n_hy[u] * T.S;
        const r = Math.max(1.2, Math.min(Math.max(3, D.n_hr[u] * T.S), 0.42 * X.slot[X.lvl[u]] * T.S));
        if (r < 4 && st < 9) { g.rect(sx - r, sy - r, 2 * r, 2 * r); continue; }  // tiny: a square is as good
        g.moveTo(sx + r, sy); g.arc(sx, sy, r, 0, 2 * Math.PI);
      }
      g.fill();
    }
    g.globalAlpha = 1;
  }

  function labelWidths(g) {
    const D = V.D, font = `${FONT_PX}px ${FONT_FAMILY}`;
    if (V.widths && V.widthsFont === font) return V.widths;
    g.font = font;
    const w = new Float32Array(D.N);
    const cache = new Map();
    for (let u = 0; u < D.N; u++) {
      const t = D.labels[u] || "";
      if (!t) continue;
      let m = cache.get(t);
      if (m == null) { m = g.measureText(t).width; cache.set(t, m); }
      w[u] = m;
    }
    V.widths = w; V.widthsFont = font;
    return w;
  }

  function labelBase(g, S) {
    // the labels that could show at this size, zoom and pan, in priority order (the root first, then by
    // priority, then by position) with their candidate places: computed once per view, not per hover
    const key = `${V.w}x${V.h}|${V.zoom}|${V.panX}|${V.panY}|${V.version}|${S}`;
    if (V.labelBase && V.labelBase.key === key && V.labelBase.widths === V.widths) return V.labelBase;
    const D = V.D, X = V.X, widths = labelWidths(g), h = FONT_PX + 2;
    const order = [], items = new Array(X.N);
    for (let u = 0; u < X.N; u++) {
      if (!widths[u]) continue;
      const [sx, sy] = toScreen(D.n_lx[u], D.n_ly[u]);
      if (sx < -60 || sy < -20 || sx > V.w + 60 || sy > V.h + 20) continue;
      order.push(u);
      // each label along its ring (the cell's reading direction, upright), on its cell's label row or one
      // line further out, into the gap before the next ring: which ring a label belongs to reads at a glance
      const [ox, oy] = toScreen(D.n_lx[u] + Math.cos(D.n_angle[u]) * (h + 1) / S,
                                D.n_ly[u] + Math.sin(D.n_angle[u]) * (h + 1) / S);
      items[u] = {w: widths[u] + 2, h, a: -D.n_ta[u], cands: [[sx, sy], [ox, oy]]};
    }
    const rank = (u) => D.n_prio[u] + (X.lvl[u] === X.L ? 4e6 : 0);
    order.sort((p, q) => rank(q) - rank(p) || p - q);
    V.labelBase = {key, widths: V.widths, order, items};
    return V.labelBase;
  }

  function placeAll(g, S, tr, forExport) {
    // which labels show at this zoom: the root, then the traced tokens (the selected ones first), then by
    // priority (labelBase's order, partitioned: no sort per hover); candidates: the label row of the cell,
    // then one line further out (into the gap between rings)
    const X = V.X, base = labelBase(g, S);
    let order = base.order;
    if (tr) {
      const top = [], origin = [], traced = [], rest = [];
      for (const u of order) {
        if (X.lvl[u] === X.L) top.push(u);
        else if (tr.origin[u]) origin.push(u);
        else if (tr.codes[u]) traced.push(u);
        else rest.push(u);
      }
      order = top.concat(origin, traced, rest);
    }
    // no more candidates than could fit in the canvas at one label per 34×13 px (traced ones come first)
    const cap = Math.max(200, Math.ceil(V.w * V.h / (34 * (FONT_PX + 2))));
    if (order.length > cap) order = order.slice(0, cap);
    else if (order === base.order) order = order.slice();
    const items = order.map((u) => base.items[u]);
    // the folded runs' counts, after every token: on the run's arc, along the ring
    const runs = runLabels(g, S);
    for (const r of runs) { order.push(r.id); items.push(r.item); }
    const boxes = placeLabels(items, {bounds: [0, 0, V.w, V.h], blocked: forExport ? [] : uiRects()});
    const placed = [];
    for (let i = 0; i < order.length; i++) if (boxes[i]) placed.push([order[i], boxes[i]]);
    return placed;
  }

  function uiRects() {  // the toolbar and the info box, in CSS px of the root: no label goes under them
    const out = [];
    for (const e of [bar, info]) {
      if (!e.offsetWidth || !e.textContent) continue;
      out.push([e.offsetLeft - 2, e.offsetTop - 2, e.offsetLeft + e.offsetWidth + 2, e.offsetTop + e.offsetHeight + 2]);
    }
    return out;
  }

  function runText(i) { return `+${V.D.r_count[i]}`; }

  function runLabels(g, S) {
    // label items for the folded runs (ids below 0, see labelKind): a run whose arc on screen holds all its
    // tokens' labels opens into its tokens (zooming in opens it), in the reading direction of its sentence
    // along the arc; any other run shows its count where the arc has room
    const D = V.D, out = [];
    V.opened = [];
    if (!D.r_level) return out;
    const R = D.r_level.length, h = RUN_FONT_PX + 2;
    g.font = `${RUN_FONT_PX}px ${FONT_FAMILY}`;
    const onScreen = (sx, sy) => sx >= 0 && sy >= 0 && sx <= V.w && sy <= V.h;
    const along = (a) => (Math.sin(a) >= -1e-9 ? a - Math.PI / 2 : a + Math.PI / 2);
    for (let i = 0; i < R; i++) {
      const rad = D.radii[D.r_level[i]], a0 = D.r_a0[i], span = D.r_a1[i] - a0, cnt = D.r_count[i];
      const len = Math.abs(span) * rad * S;
      if (cnt <= OPEN_MAX && len >= cnt * OPEN_MIN_PX) {
        // the run opens when its arc holds all its tokens' labels side by side, LABEL_PAD + 1 apart: the
        // arc left over is shared out evenly between them
        const ws = [];
        let total = 0;
        for (let k = 0; k < cnt; k++) { const w = tokenWidth(g, D.r_first[i] + k) + 2; ws.push(w); total += w; }
        if (len >= total + cnt * (LABEL_PAD + 1)) {
          const cw = D.segs[D.r_first[i]] === 0;  // sentence A (and a decoder's one sequence) runs clockwise
          const gap = (len - total) / cnt;
          let at = gap / 2;
          for (let k = 0; k < cnt; k++) {
            const f = (at + ws[k] / 2) / len;  // the label's centre, as a fraction of the arc
            at += ws[k] + gap;
            const a = a0 + span * (cw ? 1 - f : f), [sx, sy] = toScreen(rad * Math.cos(a), rad * Math.sin(a));
            if (!onScreen(sx, sy)) continue;
            out.push({id: -1 - R - V.opened.length, item: {w: ws[k], h, a: -along(a), cands: [[sx, sy]]}});
            V.opened.push([i, D.r_first[i] + k]);
          }
          continue;
        }
      }
      const w = g.measureText(runText(i)).width + 2;
      if (len < w + 2) continue;
      const mid = a0 + span / 2, [sx, sy] = toScreen(rad * Math.cos(mid), rad * Math.sin(mid));
      if (!onScreen(sx, sy)) continue;
      out.push({id: -1 - i, item: {w, h, a: -along(mid), cands: [[sx, sy]]}});
    }
    return out;
  }

  function tokenWidth(g, p) {  // a folded token's label width at the run font (cached per data)
    if (!V.tokW || V.tokW.D !== V.D) V.tokW = {D: V.D, w: new Float32Array(V.D.n).fill(-1)};
    let w = V.tokW.w[p];
    if (w < 0) { w = g.measureText(V.D.tokens[p]).width; V.tokW.w[p] = w; }
    return w;
  }

  function labelKind(u) {
    // a placed label's id: u >= 0 a token of the graph (node u); below 0, -1 - j: j < R the count of run j,
    // else the folded token V.opened[j - R] ([run, position]) of an opened run
    if (u >= 0) return {node: u};
    const j = -1 - u, R = V.D.r_level ? V.D.r_level.length : 0;
    if (j < R) return {run: j};
    const [run, pos] = V.opened[j - R];
    return {run, pos};
  }

  function drawLabels(g, S, tr, placed) {
    const D = V.D;
    g.textAlign = "center"; g.textBaseline = "middle";
    const focus = !!model.focus;
    for (const [u, b] of placed) {
      const cx = b[0] + b[2] / 2, cy = b[1] + b[3] / 2;
      if (u < 0) {  // a folded run's count, or a token of an opened run
        if (focus && tr) continue;
        const k = labelKind(u);
        g.font = `${RUN_FONT_PX}px ${FONT_FAMILY}`; g.fillStyle = "#8a8a8a"; g.globalAlpha = 1;
        textAt(g, k.pos == null ? runText(k.run) : D.tokens[k.pos], cx, cy, b[4]);
        continue;
      }
      const st = state(tr, u);
      if (focus && st === 4) continue;
      g.font = `${FONT_PX}px ${FONT_FAMILY}`;
      g.fillStyle = D.text_colors[st];
      g.globalAlpha = st === 4 ? 0.45 : 1;
      textAt(g, D.labels[u], cx, cy, b[4]);
    }
    g.globalAlpha = 1;
  }

  function textAt(g, t, x, y, a) {
    // text centred on (x, y), turned by a (radians, clockwise), over a white halo that keeps it legible
    // on the glyph blocks and edges it crosses
    if (g.textTurned) { g.textTurned(t, x, y + 0.5, a); return; }
    g.save(); g.translate(x, y); if (a) g.rotate(a);
    g.strokeStyle = "rgba(255,255,255,0.9)"; g.lineWidth = 3; g.lineJoin = "round";
    g.strokeText(t, 0, 0.5); g.fillText(t, 0, 0.5); g.restore();
  }

  function scratch() {  // a cleared off-screen canvas of the view's size
    if (!V.scratch || V.scratch.c.width !== Math.round(V.w * V.dpr) || V.scratch.c.height !== Math.round(V.h * V.dpr)) {
      const c = document.createElement("canvas");
      c.width = Math.round(V.w * V.dpr); c.height = Math.round(V.h * V.dpr);
      V.scratch = {c, g: c.getContext("2d")};
    }
    const {c, g} = V.scratch;
    g.setTransform(1, 0, 0, 1, 0, 0); g.clearRect(0, 0, c.width, c.height);
    g.setTransform(V.dpr, 0, 0, V.dpr, 0, 0);
    return V.scratch;
  }

  function ensureBase() {
    // the drawing at rest (rings, edges at rest, cells) and the cells alone, cached as bitmaps for the
    // current size, zoom, pan and level: a hover draws the cached base, dims it and lays the traced cells
    // over it from the cells bitmap (clipped to their cells), so its cost does not grow with the glyphs
    const key = `${V.w}x${V.h}@${V.dpr}|${V.zoom}|${V.panX}|${V.panY}|${model.level}|${V.version}`;
    if (V.baseKey === key && V.base) return;
    const make = () => {
      const c = document.createElement("canvas");
      c.width = Math.round(V.w * V.dpr); c.height = Math.round(V.h * V.dpr);
      const g = c.getContext("2d");
      g.setTransform(V.dpr, 0, 0, V.dpr, 0, 0);
      return [c, g];
    };
    const S = scale(), t0 = performance.now();
    const [cells, gc] = make();
    drawCells(gc, S, null, true);
    const t1 = performance.now();
    const [base, gb] = make();
    gb.fillStyle = "#ffffff"; gb.fillRect(0, 0, V.w, V.h);
    drawRings(gb, S);
    const t2 = performance.now();
    drawRestEdges(gb, S);
    const t3 = performance.now();
    gb.setTransform(1, 0, 0, 1, 0, 0);
    gb.drawImage(cells, 0, 0);
    V.base = base; V.cells = cells; V.baseKey = key;
    const t4 = performance.now();
    root.setAttribute("data-base-ms", (t4 - t0).toFixed(1));
    root.setAttribute("data-base-parts", [t1 - t0, t2 - t1, t3 - t2, t4 - t3].map((t) => t.toFixed(1)).join(","));
  }

  function paint(g, forExport) {
    // the whole drawing onto a Canvas 2D context (or the SVG recorder); returns the placed labels
    const D = V.D, S = scale();
    const tr = V.hoverTrace || V.frozenTrace;
    g.fillStyle = "#ffffff"; g.fillRect(0, 0, V.w, V.h);
    if (!D) return [];
    const T = tf();
    if (forExport) {
      drawRings(g, S);
      drawRestEdges(g, S);
      if (!(tr && model.focus)) drawCells(g, S, null);
    } else {
      ensureBase();
      g.drawImage(V.base, 0, 0, V.w, V.h);
    }
    const ph = [performance.now()];
    if (tr) {
      // dim what is not traced (focus: hide it), then the trace at full strength over it
      g.globalAlpha = model.focus ? 1 : 0.78; g.fillStyle = "#ffffff"; g.fillRect(0, 0, V.w, V.h);
      g.globalAlpha = 1;
      drawTraceEdges(g, S, tr, V.hover ? V.hover.node : -1);
      ph.push(performance.now());
      const only = V.X.onlyBuf || (V.X.onlyBuf = new Uint8Array(V.X.N));
      for (let u = 0; u < V.X.N; u++) only[u] = tr.codes[u] || tr.origin[u] ? 1 : 0;
      if (forExport) {
        drawCells(g, S, only);
      } else {
        // the traced cells at full strength, from the cached cells bitmap (far cheaper than filling thousands
        // of small paths again): drawn once through a clip of the traced cells' boxes (one drawImage per box
        // cost more, and darkened anti-aliased pixels where boxes overlap)
        const hw = (D.cw + 2) / 2, hh = (D.ch + 2) / 2, cs = V.X.cosTa, sn = V.X.sinTa;
        g.save(); g.beginPath();
        for (let u = 0; u < V.X.N; u++) {
          if (!only[u]) continue;
          const c = Math.abs(cs[u]), s = Math.abs(sn[u]);
          const bw = (hw * c + hh * s) * S, bh = (hw * s + hh * c) * S;
          const x0 = Math.max(0, Math.floor(T.ox + D.n_hx[u] * S - bw)), y0 = Math.max(0, Math.floor(T.oy - D.n_hy[u] * S - bh));
          const x1 = Math.min(V.w, Math.ceil(T.ox + D.n_hx[u] * S + bw)), y1 = Math.min(V.h, Math.ceil(T.oy - D.n_hy[u] * S + bh));
          if (x1 > x0 && y1 > y0) g.rect(x0, y0, x1 - x0, y1 - y0);
        }
        g.clip();
        g.drawImage(V.cells, 0, 0, V.w, V.h);
        g.restore();
      }
      ph.push(performance.now());
      drawGlyphHighlights(g, S, tr);
      ph.push(performance.now());
    }
    drawHalos(g, S, tr);
    ph.push(performance.now());
    const placed = placeAll(g, S, tr, forExport);
    ph.push(performance.now());
    drawLabels(g, S, tr, placed);
    ph.push(performance.now());
    if (!forExport) root.setAttribute("data-phase-ms", ph.slice(1).map((t, i) => (t - ph[i]).toFixed(1)).join(","));
    return placed;
  }

  function drawGlyphHighlights(g, S, tr) {
    // a head glyph that carries the trace's attention gets a dark outline (when glyphs are told apart)
    const D = V.D, T = tf();
    if (D.glyph * S < 2 || !tr.gon) return;
    g.strokeStyle = "#222"; g.lineWidth = 0.8; g.beginPath();
    let k = 0;
    for (let r = 0; r < V.X.G && k < 4000; r++) {
      if (!tr.gon[r] || !visible(T, D.g_x[r], D.g_y[r], 4)) continue;
      k += 1;
      quadT(g, T, D.g_x[r], D.g_y[r], D.g_part[r] ? D.glyph / 2 : D.glyph, D.glyph, D.n_ta[D.g_node[r]]);
    }
    g.stroke();
  }

  function draw() {
    V.pending = false;
    resize();
    const t0 = performance.now();
    ctx.setTransform(V.dpr, 0, 0, V.dpr, 0, 0);
    const placed = paint(ctx, false);
    const ms = performance.now() - t0;
    publish(placed, ms);
    return ms;
  }

  function schedule() {
    if (V.pending) return;
    V.pending = true;
    requestAnimationFrame(draw);
  }

  function publish(placed, ms) {
    // the test hook (radial.py's docstring): label boxes in CSS px of the root, trace coverage, timing
    const D = V.D;
    const boxes = placed.map(([u, b]) => {
      const k = labelKind(u);
      return [Math.round(b[0] * 10) / 10, Math.round(b[1] * 10) / 10, Math.round(b[2] * 10) / 10,
        Math.round(b[3] * 10) / 10, k.node != null ? D.n_pos[u] : k.pos != null ? k.pos : -1,
        k.node != null ? D.n_level[u] : D.r_level[k.run], Math.round(b[4] * 1e4) / 1e4, k.pos != null ? 1 : 0];
    });
    root.setAttribute("data-label-boxes", JSON.stringify(boxes));
    const tr = V.hoverTrace || V.frozenTrace;
    let total = 0, lab = 0;
    if (tr) {
      const on = new Uint8Array(D.N);
      for (const [u] of placed) if (u >= 0) on[u] = 1;
      for (let u = 0; u < D.N; u++) {
        if (!(tr.codes[u] || tr.origin[u]) || !D.labels[u]) continue;
        total += 1;
        if (on[u]) lab += 1;
      }
    }
    root.setAttribute("data-trace-total", String(total));
    root.setAttribute("data-trace-labelled", String(lab));
    root.setAttribute("data-draw-ms", ms.toFixed(2));
    root.setAttribute("data-zoom", V.zoom.toFixed(3));
    root.setAttribute("data-trace", tr ? (V.hoverTrace ? "hover" : "frozen") : "");
    root.setAttribute("data-nodes", String(D ? D.N : 0));
    root.setAttribute("data-ready", D ? "1" : "0");
  }

  // ------------------------------------------------------------------------------- hovering

  function hit(sx, sy) {  // what lies under the pointer (radial_info.js's hitTest)
    if (!V.D) return null;
    const [x, y] = toData(sx, sy);
    return hitTest(V.D, V.X, x, y, scale());
  }

  function describe(h) { info.innerHTML = infoHtml(V.D, h); }

  function setHover(h) {
    const key = !h ? "" : h.kind === "run" ? `run:${h.i}` :
      `${h.kind}:${h.kind === "glyph" ? h.row : h.id}:${h.kind === "glyph" && V.shift ? 1 : 0}`;
    const old = V.hover ? V.hover.key : "";
    if (key === old) return;
    const t0 = performance.now();
    if (h && h.kind === "run") {  // a folded run: its tokens in the info box, no trace
      h.key = key; V.hover = h; V.hoverTrace = null;
    } else if (h) {
      h.key = key;
      V.hoverTrace = traceOf(V.D, V.X, h, V.shift);
      V.hover = h; V.hover.node = V.hoverTrace.node;
    } else {
      V.hover = null; V.hoverTrace = null;
    }
    const t1 = performance.now();
    describe(h);
    root.setAttribute("data-hover", h ? key : "");
    draw();  // at once: the hover redraw is measured (data-draw-ms)
    root.setAttribute("data-trace-ms", (t1 - t0).toFixed(2));
    root.setAttribute("data-hover-ms", (performance.now() - t0).toFixed(2));  // traversal + redraw
  }

  // -------------------------------------------------------------------------------- picking

  function send(selection, head, headModel) {
    const seq = ((model.pick && get(model.pick, "seq")) || 0) + 1;
    model.pick = {selection, head, head_model: headModel, seq};
    V.sent = selection.map((p) => [p[0], p[1]]);  // until the server's frozen answer arrives
  }

  function currentSelection() {
    // the last pick sent, while its frozen answer is on its way (a quick shift-click adds to it), else
    // the frozen selection the server drew
    if (V.sent) return V.sent.map((p) => [p[0], p[1]]);
    const s = model.frozen ? get(model.frozen, "selection") : null;
    return s ? Array.from(s, (p) => [p[0], p[1]]) : [];
  }

  function clickAt(sx, sy, shift) {
    const D = V.D, h = hit(sx, sy);
    if (!h) { send([], [], "both"); return; }
    if (h.kind === "run") return;  // a folded run holds no token of the graph
    if (h.kind === "glyph") {
      const u = D.g_node[h.row], lv = D.n_level[u];
      if (lv === 0) return;
      const hm = D.models !== 3 ? "both" : (shift ? "both" : (D.g_model[h.row] === 1 ? "pretrained" : "finetuned"));
      send([[lv, D.n_pos[u]]], [lv - 1, D.g_head[h.row]], hm);
      return;
    }
    const item = [D.n_level[h.id], D.n_pos[h.id]];
    let sel = shift ? currentSelection() : [];
    const at = sel.findIndex((p) => p[0] === item[0] && p[1] === item[1]);
    if (at >= 0 && shift) sel.splice(at, 1); else sel.push(item);
    send(sel, [], "both");
  }

  function brush(poly) {
    // the tokens whose hit centre lies inside the polygon (screen px)
    const D = V.D, sel = [];
    for (let u = 0; u < D.N; u++) {
      const [sx, sy] = toScreen(D.n_hx[u], D.n_hy[u]);
      if (inside(poly, sx, sy)) sel.push([D.n_level[u], D.n_pos[u]]);
    }
    root.setAttribute("data-brushed", String(sel.length));
    if (sel.length) send(sel, [], "both");
  }

  // --------------------------------------------------------------------------------- events

  function local(ev) {
    const r = root.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  }

  canvas.addEventListener("pointerdown", (ev) => {
    const [x, y] = local(ev);
    V.drag = {x0: x, y0: y, x, y, panX: V.panX, panY: V.panY, moved: false, pts: [[x, y]], shift: ev.shiftKey};
    canvas.setPointerCapture(ev.pointerId);
  });
  canvas.addEventListener("pointermove", (ev) => {
    const [x, y] = local(ev);
    V.shift = ev.shiftKey;
    const d = V.drag;
    if (d) {
      d.x = x; d.y = y;
      if (Math.hypot(x - d.x0, y - d.y0) > 3) d.moved = true;
      if (!d.moved) return;
      if (V.tool === "pan") { V.panX = d.panX + x - d.x0; V.panY = d.panY + y - d.y0; schedule(); }
      else { d.pts.push([x, y]); drawBrush(d); }
      return;
    }
    setHover(hit(x, y));
  });
  canvas.addEventListener("pointerup", (ev) => {
    const d = V.drag;
    V.drag = null;
    if (!d) return;
    if (!d.moved) { clickAt(d.x0, d.y0, ev.shiftKey || d.shift); return; }
    if (V.tool === "box") brush([[d.x0, d.y0], [d.x, d.y0], [d.x, d.y], [d.x0, d.y]]);
    else if (V.tool === "lasso" && d.pts.length > 2) brush(d.pts);
    draw();
  });
  canvas.addEventListener("pointerleave", () => { if (!V.drag) setHover(null); });
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const [x, y] = local(ev);
    const f = Math.exp(-ev.deltaY * 0.0015);
    const z = Math.max(1, Math.min(40, V.zoom * f));
    const k = z / V.zoom;
    // keep the point under the pointer where it is
    V.panX = (x - V.w / 2) - k * (x - V.w / 2 - V.panX);
    V.panY = (y - V.h / 2) - k * (y - V.h / 2 - V.panY);
    V.zoom = z;
    if (z === 1) { V.panX = V.panY = 0; }
    schedule();
  }, {passive: false});
  const onkey = (ev) => {
    if (!!ev.shiftKey !== V.shift) {
      V.shift = !!ev.shiftKey;
      if (V.hover && V.hover.kind === "glyph") { const h = {kind: "glyph", row: V.hover.row}; V.hover = null; setHover(h); }
    }
  };
  window.addEventListener("keydown", onkey, true);
  window.addEventListener("keyup", onkey, true);

  function drawBrush(d) {
    draw();
    ctx.save();
    ctx.setTransform(V.dpr, 0, 0, V.dpr, 0, 0);
    ctx.strokeStyle = "#5b6f95"; ctx.fillStyle = "rgba(91,111,149,0.12)"; ctx.lineWidth = 1;
    ctx.beginPath();
    if (V.tool === "box") ctx.rect(Math.min(d.x0, d.x), Math.min(d.y0, d.y), Math.abs(d.x - d.x0), Math.abs(d.y - d.y0));
    else { ctx.moveTo(d.pts[0][0], d.pts[0][1]); for (const p of d.pts) ctx.lineTo(p[0], p[1]); ctx.closePath(); }
    ctx.fill(); ctx.stroke();
    ctx.restore();
  }

  // --------------------------------------------------------------------------------- export

  const {svgString, exportSvg, exportPng} = exporter(V, model, root, paint);
  installHooks(root, {V, draw, state, tf, toScreen, scale, svgString});

  // ------------------------------------------------------------------------------ wiring

  model.on("data", () => { V.sent = null; loadData(); V.base = null; describe(null); draw(); });
  model.on("frozen", () => { V.sent = null; loadFrozen(); draw(); });
  model.on("level", () => draw());
  model.on("focus", () => draw());
  model.on("legend", () => {});
  model.on("title", () => {});
  model.on("sentences", () => {});
  model.on("pick", () => {});
  model.on("shown", () => {});
  // once laid out in a page (its root view indexed by then), say so: a notebook's view holds its pushes
  // until this arrives, since Panel's comm manager drops messages that reach a view not yet indexed
  model.on("after_layout", () => { if (!model.shown) setTimeout(() => { model.shown = true; }, 0); });
  model.on("export", () => {
    const what = model.export || "";
    if (what.startsWith("svg")) exportSvg(); else if (what.startsWith("png")) exportPng();
  });
  const ro = new ResizeObserver(() => resize());
  ro.observe(root);
  model.on("remove", () => {
    ro.disconnect();
    window.removeEventListener("keydown", onkey, true);
    window.removeEventListener("keyup", onkey, true);
  });
  loadData();
  describe(null);
  requestAnimationFrame(() => { resize(); draw(); });
}

export default {render};
