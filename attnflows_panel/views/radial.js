// Attention Flows: the radial Attention Flow view (§4.3-4.4, Figs. 1(c), 4-8) as one Canvas 2D drawing.
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
const RUN_FONT_PX = 10;   // a folded run's count
const EDGE_BUDGET = 48;   // traced edges drawn per layer at most (the strongest): no hairball
const MODEL_NAME = {1: "pre-trained only", 2: "fine-tuned only", 3: "both models"};
const MODEL_COLOR = {1: "#2bb3a4", 2: "#7b3fa0", 3: "#e07b00"};

// ------------------------------------------------------------------------------------------- labels

// Greedy label placement (exported for the property test): `items` in priority order, each
// {w, h, a, cands: [[cx, cy], ...]}: a w×h box turned by `a` radians (clockwise on screen, 0 or absent:
// upright) about its centre, and the centres to try, in order. A label takes the first candidate whose
// turned box, padded by `pad` on every side, overlaps no placed box (separating-axis test on the turned
// boxes) and whose corners lie inside `bounds` [x0, y0, x1, y1] (if given). Returns, per item, the placed
// box [x, y, w, h, a] (x, y, w, h: the box before turning, centred where it was placed) or null. A uniform
// grid of the boxes' bounding boxes keeps it linear in practice. `blocked`: rectangles no label may touch.
export function placeLabels(items, opts = {}) {
  const pad = opts.pad == null ? LABEL_PAD : opts.pad;
  const bounds = opts.bounds || null;
  const cell = opts.cell || 48;
  const grid = new Map();
  const placed = [];
  const out = new Array(items.length).fill(null);
  const key = (i, j) => i * 100003 + j;
  function insert(q) {
    const b = placed.length;
    placed.push(q);
    for (let i = Math.floor(q.x0 / cell); i <= Math.floor(q.x1 / cell); i++) {
      for (let j = Math.floor(q.y0 / cell); j <= Math.floor(q.y1 / cell); j++) {
        const k = key(i, j);
        let list = grid.get(k);
        if (!list) { list = []; grid.set(k, list); }
        list.push(b);
      }
    }
  }
  // areas no label may cover (the toolbar, the info box): [x0, y0, x1, y1] each
  for (const r of opts.blocked || []) insert(turned((r[0] + r[2]) / 2, (r[1] + r[3]) / 2, r[2] - r[0], r[3] - r[1], 0));
  function collides(q) {
    const i0 = Math.floor(q.x0 / cell), i1 = Math.floor(q.x1 / cell);
    const j0 = Math.floor(q.y0 / cell), j1 = Math.floor(q.y1 / cell);
    for (let i = i0; i <= i1; i++) {
      for (let j = j0; j <= j1; j++) {
        const list = grid.get(key(i, j));
        if (!list) continue;
        for (const b of list) if (boxesOverlap(q, placed[b])) return true;
      }
    }
    return false;
  }
  for (let t = 0; t < items.length; t++) {
    const it = items[t];
    if (!it || !(it.w > 0)) continue;
    const a = it.a || 0, ca = Math.abs(Math.cos(a)), sa = Math.abs(Math.sin(a));
    const ex = ca * it.w / 2 + sa * it.h / 2, ey = sa * it.w / 2 + ca * it.h / 2;  // the turned box's half extents
    for (const c of it.cands) {
      if (bounds && (c[0] - ex < bounds[0] || c[1] - ey < bounds[1] || c[0] + ex > bounds[2] || c[1] + ey > bounds[3])) continue;
      // padded by pad/2 on every side: two placed boxes are at least `pad` apart
      const q = turned(c[0], c[1], it.w + pad, it.h + pad, a);
      if (collides(q)) continue;
      insert(q);
      out[t] = [c[0] - it.w / 2, c[1] - it.h / 2, it.w, it.h, a];
      break;
    }
  }
  return out;
}

// A w×h box centred on (cx, cy), turned by a: its half sizes, axes and bounding box.
function turned(cx, cy, w, h, a) {
  const c = Math.cos(a), s = Math.sin(a), hw = w / 2, hh = h / 2;
  const ex = Math.abs(c) * hw + Math.abs(s) * hh, ey = Math.abs(s) * hw + Math.abs(c) * hh;
  return {cx, cy, hw, hh, c, s, x0: cx - ex, y0: cy - ey, x1: cx + ex, y1: cy + ey};
}

// Do two turned boxes overlap (share interior)? The separating-axis test over the four edge normals.
function boxesOverlap(p, q) {
  if (p.x1 <= q.x0 || q.x1 <= p.x0 || p.y1 <= q.y0 || q.y1 <= p.y0) return false;
  const dx = q.cx - p.cx, dy = q.cy - p.cy;
  for (const [ax, ay] of [[p.c, p.s], [-p.s, p.c], [q.c, q.s], [-q.s, q.c]]) {
    const rp = p.hw * Math.abs(p.c * ax + p.s * ay) + p.hh * Math.abs(-p.s * ax + p.c * ay);
    const rq = q.hw * Math.abs(q.c * ax + q.s * ay) + q.hh * Math.abs(-q.s * ax + q.c * ay);
    if (Math.abs(dx * ax + dy * ay) >= rp + rq - 1e-9) return false;
  }
  return true;
}

// True when two of the boxes [x, y, w, h, a?] (turned by a about their centre, as placeLabels returns
// them) overlap (for tests).
export function anyOverlap(boxes) {
  const t = boxes.map((b) => turned(b[0] + b[2] / 2, b[1] + b[3] / 2, b[2], b[3], b[4] || 0));
  for (let a = 0; a < t.length; a++) for (let b = a + 1; b < t.length; b++) if (boxesOverlap(t[a], t[b])) return true;
  return false;
}

// ------------------------------------------------------------------------------------ SVG recorder

// A recorder with the part of the Canvas 2D API that the drawing uses; it writes SVG elements, so the
// export is exactly what is drawn (zoom included).
class SvgRecorder {
  constructor(w, h) {
    this.w = w; this.h = h; this.out = []; this.d = "";
    this.fillStyle = "#000"; this.strokeStyle = "#000"; this.globalAlpha = 1; this.lineWidth = 1;
    this.font = `${FONT_PX}px sans-serif`; this.textAlign = "start"; this.textBaseline = "alphabetic";
    this.lineCap = "butt"; this.circles = [];
  }
  _n(v) { return Math.round(v * 100) / 100; }
  beginPath() { this.d = ""; this.circles = []; }
  moveTo(x, y) { this.d += `M${this._n(x)} ${this._n(y)}`; }
  lineTo(x, y) { this.d += `L${this._n(x)} ${this._n(y)}`; }
  bezierCurveTo(a, b, c, d, e, f) { this.d += `C${this._n(a)} ${this._n(b)} ${this._n(c)} ${this._n(d)} ${this._n(e)} ${this._n(f)}`; }
  closePath() { this.d += "Z"; }
  rect(x, y, w, h) { this.d += `M${this._n(x)} ${this._n(y)}h${this._n(w)}v${this._n(h)}h${this._n(-w)}Z`; }
  arc(x, y, r, a0, a1) {
    if (Math.abs(a1 - a0) >= 2 * Math.PI - 1e-6) { this.circles.push([x, y, r]); return; }
    const x0 = x + r * Math.cos(a0), y0 = y + r * Math.sin(a0), x1 = x + r * Math.cos(a1), y1 = y + r * Math.sin(a1);
    const large = Math.abs(a1 - a0) > Math.PI ? 1 : 0;
    this.d += `${this.d ? "L" : "M"}${this._n(x0)} ${this._n(y0)}A${this._n(r)} ${this._n(r)} 0 ${large} 1 ${this._n(x1)} ${this._n(y1)}`;
  }
  _alpha(key) { return this.globalAlpha < 1 ? ` ${key}-opacity="${this._n(this.globalAlpha)}"` : ""; }
  fill() {
    for (const [x, y, r] of this.circles) this.out.push(`<circle cx="${this._n(x)}" cy="${this._n(y)}" r="${this._n(r)}" fill="${this.fillStyle}"${this._alpha("fill")}/>`);
    if (this.d) this.out.push(`<path d="${this.d}" fill="${this.fillStyle}"${this._alpha("fill")}/>`);
  }
  stroke() {
    const s = `stroke="${this.strokeStyle}" stroke-width="${this._n(this.lineWidth)}"${this._alpha("stroke")}` +
      (this.lineCap !== "butt" ? ` stroke-linecap="${this.lineCap}"` : "");
    for (const [x, y, r] of this.circles) this.out.push(`<circle cx="${this._n(x)}" cy="${this._n(y)}" r="${this._n(r)}" fill="none" ${s}/>`);
    if (this.d) this.out.push(`<path d="${this.d}" fill="none" ${s}/>`);
  }
  fillRect(x, y, w, h) { this.beginPath(); this.rect(x, y, w, h); this.fill(); }
  clearRect() {}
  fillText(t, x, y) {
    const anchor = {center: "middle", left: "start", start: "start", right: "end", end: "end"}[this.textAlign] || "start";
    const base = {middle: "central", top: "hanging", alphabetic: "alphabetic", bottom: "text-after-edge"}[this.textBaseline] || "alphabetic";
    const m = /([\d.]+)px/.exec(this.font), bold = /bold/.test(this.font);
    this.out.push(`<text x="${this._n(x)}" y="${this._n(y)}" font-size="${m ? m[1] : FONT_PX}" font-family="${FONT_FAMILY.replace(/"/g, "'")}"` +
      ` text-anchor="${anchor}" dominant-baseline="${base}" fill="${this.fillStyle}"${this._alpha("fill")}${bold ? ' font-weight="bold"' : ""}>${esc(t)}</text>`);
  }
  textTurned(t, x, y, a) {  // text turned by a about (x, y), over a white halo (what textAt draws)
    const tf = a ? ` transform="rotate(${this._n(a * 180 / Math.PI)} ${this._n(x)} ${this._n(y)})"` : "";
    this.fillText(t, x, y);
    const halo = ' stroke="#ffffff" stroke-opacity="0.9" stroke-width="3" stroke-linejoin="round" paint-order="stroke"';
    this.out[this.out.length - 1] = this.out[this.out.length - 1].replace("<text ", `<text${tf}${halo} `);
  }
  measureText(t) { const m = /([\d.]+)px/.exec(this.font); return {width: String(t).length * 0.6 * (m ? +m[1] : FONT_PX)}; }
  save() { this.stack = this.stack || []; this.stack.push(false); }
  restore() { if (this.stack && this.stack.pop()) this.out.push("</g>"); }
  clip() {
    // the circle of the current path as a clipPath; what follows until restore() is clipped by it
    const [x, y, r] = this.circles[0] || [0, 0, 1e6], id = `af-c${(this.clips = (this.clips || 0) + 1)}`;
    this.out.push(`<clipPath id="${id}"><circle cx="${this._n(x)}" cy="${this._n(y)}" r="${this._n(r)}"/></clipPath><g clip-path="url(#${id})">`);
    if (this.stack && this.stack.length) this.stack[this.stack.length - 1] = true;
  }
  setTransform() {} drawImage() {}
}

function esc(t) {
  return String(t).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

// ------------------------------------------------------------------------------------------ traces

// What radial.py's pack_flow leaves out because it follows from what it sends (unpack_flow in Python does
// the same): the edges' upper nodes from the nodes' out-degrees, each edge's models and head count from its
// head masks, the edges drawn at rest from their index list, the weight from uint8; the head glyphs (one
// row per lit glyph, a split glyph two rows, by node, head, model) from the heads carrying each node's
// edges, and their centres from the node's glyph block.
export function expand(D) {
  const N = D.N, E = D.E, H = D.H, W = D.W, models = D.models;
  if (!D.e_u) {
    const eu = new (N < 65536 ? Uint16Array : Uint32Array)(E);
    for (let u = 0, e = 0; u < N; u++) for (let j = 0; j < D.n_out[u]; j++) eu[e++] = u;
    D.e_u = eu;
  }
  const mem = new Uint8Array(E), nh = new Uint8Array(E), counts = {};
  for (const c of [PRE, FINE]) {
    if (!(models & c)) continue;
    const cnt = new Int32Array(N * H);
    for (let w = 0; w < W; w++) {
      const m = D[`e_h${c}_${w}`];
      for (let e = 0; e < E; e++) {
        let x = m[e] >>> 0, k = 0;
        const base = D.e_u[e] * H + 32 * w;
        while (x !== 0) {
          const t = x & -x;
          cnt[base + 31 - Math.clz32(t)] += 1;
          x ^= t; k += 1;
        }
        if (k) { mem[e] |= c; if (k > nh[e]) nh[e] = k; }
      }
    }
    counts[c] = cnt;
  }
  D.e_mem = mem; D.e_nh = nh;
  D.e_rest = new Uint8Array(E);
  for (const e of D.e_rest_idx) D.e_rest[e] = 1;
  if (D.e_w && D.e_w instanceof Uint8Array) {
    const w = new Float32Array(E);
    for (let e = 0; e < E; e++) w[e] = D.e_w[e] / 255;
    D.e_w = w;
  }
  const zero = new Int32Array(N * H), cp = counts[PRE] || zero, cf = counts[FINE] || zero;
  let G = 0;
  for (let u = 0; u < N; u++) {
    if (D.n_level[u] < 1) continue;
    for (let h = 0; h < H; h++) G += (cp[u * H + h] > 0 ? 1 : 0) + (cf[u * H + h] > 0 ? 1 : 0);
  }
  const gnode = new (N < 65536 ? Uint16Array : Uint32Array)(G), ghead = new Uint8Array(G), gmodel = new Uint8Array(G);
  const gpart = new Uint8Array(G), ggc = new Uint8Array(G), gx = new Float32Array(G), gy = new Float32Array(G);
  const gcp = new Int32Array(G), gcf = new Int32Array(G);
  let r = 0;
  for (let u = 0; u < N; u++) {
    if (D.n_level[u] < 1) continue;
    const ta = D.n_ta[u], ux = Math.cos(ta), uy = Math.sin(ta), cs = D.cs[D.n_level[u]];
    for (let h = 0; h < H; h++) {
      const i = u * H + h, st = (cp[i] > 0 ? PRE : 0) | (cf[i] > 0 ? FINE : 0);
      if (!st) continue;
      const parts = st === 3 ? [PRE, FINE] : [st];
      for (const c of parts) {
        const split = st === 3;
        const gu = (D.g_du[h] + (split ? (c === PRE ? -0.25 : 0.25) * D.glyph : 0)) * cs, gv = D.g_dv[h] * cs;
        gnode[r] = u; ghead[r] = h; gmodel[r] = c; gpart[r] = split ? c : 0;
        ggc[r] = D.comparison ? (c === PRE ? 12 : 13) :
          (c === PRE ? 0 : D.ramp) + Math.min(c === PRE ? cp[i] : cf[i], D.ramp) - 1;
        gx[r] = D.n_bx[u] + gu * ux - gv * uy; gy[r] = D.n_by[u] + gu * uy + gv * ux;
        gcp[r] = cp[i]; gcf[r] = cf[i];
        r += 1;
      }
    }
  }
  Object.assign(D, {G, g_node: gnode, g_head: ghead, g_model: gmodel, g_part: gpart, g_gc: ggc, g_x: gx, g_y: gy,
                    g_cp: gcp, g_cf: gcf});
  return D;
}


function prep(D) {
  // everything derived once per data: level bounds, bit offsets, glyph map, out-edge lists
  const N = D.N, E = D.E, G = D.G, L = D.L, H = D.H, W = D.W;
  const lvl = D.n_level;
  const lo = new Int32Array(L + 2);
  for (let i = 0; i < N; i++) lo[lvl[i] + 1] += 1;
  for (let k = 0; k <= L; k++) lo[k + 1] += lo[k];
  const off = new Float64Array(N + 1);
  for (let u = 0; u < N; u++) off[u + 1] = off[u] + lo[lvl[u]];
  const gmap = {}, masks = {}, bits = {};
  for (const c of [PRE, FINE]) {
    if (!(D.models & c)) continue;
    const m = new Int32Array(N * H).fill(-1);
    for (let r = 0; r < G; r++) if (D.g_model[r] === c) m[D.g_node[r] * H + D.g_head[r]] = r;
    gmap[c] = m;
    masks[c] = [];
    for (let w = 0; w < W; w++) masks[c].push(D[`e_h${c}_${w}`]);

  }
  const ostart = new Int32Array(N + 1);
  for (let e = 0; e < E; e++) ostart[D.e_u[e] + 1] += 1;
  for (let u = 0; u < N; u++) ostart[u + 1] += ostart[u];
  const fill = ostart.slice(0, N), olist = new Int32Array(E);
  for (let e = 0; e < E; e++) olist[fill[D.e_u[e]]++] = e;
  const istart = new Int32Array(N + 1);  // in-edges of every lower node
  for (let e = 0; e < E; e++) istart[D.e_v[e] + 1] += 1;
  for (let u = 0; u < N; u++) istart[u + 1] += istart[u];
  const ifill = istart.slice(0, N), ilist = new Int32Array(E);
  for (let e = 0; e < E; e++) ilist[ifill[D.e_v[e]]++] = e;
  // glyph rows of each node (glyph rows are ordered by node)
  const gstart = new Int32Array(N + 1);
  for (let r = 0; r < G; r++) gstart[D.g_node[r] + 1] += 1;
  for (let u = 0; u < N; u++) gstart[u + 1] += gstart[u];
  // edge curves (layout.edge_curves): a cubic Bézier from the upper cell's outer side to the lower
  // cell's inner side along the ring direction, the short way round; the root leaves radially
  const curve = new Float32Array(E * 8);
  for (let e = 0; e < E; e++) {
    const u = D.e_u[e], v = D.e_v[e];
    const t1 = D.n_angle[v], t0 = lvl[u] === L ? t1 : D.n_angle[u];
    const r0 = D.n_rout[u], r1 = D.n_rin[v];
    const d = ((((t1 - t0 + Math.PI) % (2 * Math.PI)) + 2 * Math.PI) % (2 * Math.PI)) - Math.PI;
    const kappa = 4 / 3 * Math.tan(d / 4), dr = r1 - r0;
    const c0 = Math.cos(t0), s0 = Math.sin(t0), c1 = Math.cos(t1), s1 = Math.sin(t1);
    const o = e * 8;
    curve[o] = r0 * c0; curve[o + 1] = r0 * s0;
    curve[o + 2] = r0 * c0 - kappa * r0 * s0 + dr / 3 * c0; curve[o + 3] = r0 * s0 + kappa * r0 * c0 + dr / 3 * s0;
    curve[o + 4] = r1 * c1 + kappa * r1 * s1 - dr / 3 * c1; curve[o + 5] = r1 * s1 - kappa * r1 * c1 - dr / 3 * s1;
    curve[o + 6] = r1 * c1; curve[o + 7] = r1 * s1;
  }
  // sparkline bars (§4.3.2; FlowData._build_sparks): under token v of level k, for each edge (u -> v) of
  // model c, a bar at the relative position (pos u - pos v)/(n-1), as high as c's heads on it (<= 3)
  const two = (D.models & 1) && (D.models & 2);
  let nSpark = 0;
  for (let e = 0; e < E; e++) nSpark += ((D.e_mem[e] & D.models & 1) ? 1 : 0) + ((D.e_mem[e] & D.models & 2) ? 1 : 0);
  const spark = new Float32Array(nSpark * 6);
  let si = 0;
  for (const c of [PRE, FINE]) {
    if (!(D.models & c)) continue;
    const shift = two ? 0.45 * (c === FINE ? 1 : -1) : 0;
    for (let e = 0; e < E; e++) {
      if (!(D.e_mem[e] & c)) continue;
      const u = D.e_u[e], v = D.e_v[e];
      let h = 0;
      for (let w = 0; w < W; w++) { let x = masks[c][w][e] >>> 0; while (x) { x &= x - 1; h += 1; } }
      const rel = Math.max(-1, Math.min(1, (D.n_pos[u] - D.n_pos[v]) / Math.max(D.n - 1, 1)));
      const ta = D.n_ta[v], ux = Math.cos(ta), uy = Math.sin(ta);
      const du = (rel + 1) / 2 * D.spark_w + shift, hv = (Math.min(h, 3) + 1) / 4 * D.spark_h;
      const x0 = D.n_sx0[v] + du * ux, y0 = D.n_sy0[v] + du * uy;
      spark[si] = v; spark[si + 1] = c; spark[si + 2] = x0; spark[si + 3] = y0;
      spark[si + 4] = x0 - hv * uy; spark[si + 5] = y0 + hv * ux;
      si += 6;
    }
  }
  const strength = new Float32Array(E);  // the edge's weight (R2's `w`) or its number of heads
  for (let e = 0; e < E; e++) strength[e] = D.e_w ? D.e_w[e] : D.e_nh[e];
  const layer = new Uint8Array(E);
  for (let e = 0; e < E; e++) layer[e] = lvl[D.e_v[e]];
  // glyph rows by palette colour, and each node's commonest glyph colour (drawn when glyphs are tiny)
  const gcLists = new Map(), blockLists = new Map();
  for (let r = 0; r < G; r++) {
    const gc = D.g_gc[r];
    if (!gcLists.has(gc)) gcLists.set(gc, []);
    gcLists.get(gc).push(r);
  }
  const count = new Int32Array(256);
  for (let u = 0; u < N; u++) {
    let best = -1, bc = 0;
    for (let r = gstart[u]; r < gstart[u + 1]; r++) {
      const c = ++count[D.g_gc[r]];
      if (c > bc) { bc = c; best = D.g_gc[r]; }
    }
    for (let r = gstart[u]; r < gstart[u + 1]; r++) count[D.g_gc[r]] = 0;
    if (best < 0) continue;
    if (!blockLists.has(best)) blockLists.set(best, []);
    blockLists.get(best).push(u);
  }
  const gcRows = Array.from(gcLists, ([k, v]) => [k, Int32Array.from(v)]);
  let rmax = 0;
  for (let u = 0; u < N; u++) rmax = Math.max(rmax, D.n_rout[u]);
  // each ring's token slot (its smallest angular gap between neighbours, in data units of arc): a halo
  // never outgrows it, so a crowded ring reads as dots, not as a solid band
  const slot = new Float64Array(L + 1).fill(Infinity);
  const byLevel = Array.from({length: L + 1}, () => []);
  for (let u = 0; u < N; u++) byLevel[lvl[u]].push(D.n_angle[u]);
  for (let k = 0; k < L; k++) {
    const a = byLevel[k].sort((p, q) => p - q);
    for (let i = 0; i < a.length; i++) {
      const gap = i ? a[i] - a[i - 1] : a[0] + 2 * Math.PI - a[a.length - 1];
      if (a.length > 1 && gap > 1e-9) slot[k] = Math.min(slot[k], gap * D.radii[k]);
    }
  }
  const blockRows = Array.from(blockLists, ([k, v]) => [k, Int32Array.from(v)]);
  return {N, E, G, L, H, W, models: D.models, lvl, lo, off, gmap, masks, bits, ostart, olist, gstart,
          curve, spark, nSpark, strength, rmax: rmax + 2, slot, istart, ilist, seen: new Uint32Array(N), stamp: 0,
          stack: new Int32Array(N + 1), layer, gcRows, blockRows, mem: D.n_mem, eu: D.e_u, ev: D.e_v, emem: D.e_mem};
}

function walk(X, c, u, down, codes) {
  // every node reachable from u in model c's graph, following edges down (towards the input: u's
  // ancestors, §4.1) or up (towards [CLS]: its descendants); marks them in codes with c. One pass over
  // the edges at most: a hover costs O(E), and no ancestor table has to be sent
  const start = down ? X.ostart : X.istart, list = down ? X.olist : X.ilist, other = down ? X.ev : X.eu;
  const seen = X.seen, stamp = ++X.stamp, stack = X.stack;
  let top = 0;
  stack[top++] = u;
  seen[u] = stamp;
  while (top > 0) {
    const x = stack[--top];
    for (let j = start[x]; j < start[x + 1]; j++) {
      const e = list[j];
      if (!(X.emem[e] & c)) continue;
      const y = other[e];
      if (seen[y] === stamp) continue;
      seen[y] = stamp;
      codes[y] |= c;
      stack[top++] = y;
    }
  }
}

function hasHead(X, c, e, h) {
  return (X.masks[c][h >> 5][e] >>> (h & 31)) & 1;
}

function traceNode(X, c, u, codes) {
  if (!(X.mem[u] & c)) return;
  codes[u] |= c;
  walk(X, c, u, true, codes);
  walk(X, c, u, false, codes);
}

function traceHead(X, c, u, h, codes) {
  if (!(X.mem[u] & c)) return;
  codes[u] |= c;
  walk(X, c, u, false, codes);
  for (let j = X.ostart[u]; j < X.ostart[u + 1]; j++) {
    const e = X.olist[j];
    if (!(X.emem[e] & c) || !hasHead(X, c, e, h)) continue;
    const child = X.ev[e];
    codes[child] |= c;
    walk(X, c, child, true, codes);
  }
}

function markEdges(X, codes, restrict) {
  // an edge of model c is in the trace when both its ends are; restrict: {c: [u, h]} for head glyphs
  const ecodes = new Uint8Array(X.E), gon = new Uint8Array(X.G);
  for (const c of [PRE, FINE]) {
    if (!(X.models & c)) continue;
    const gm = X.gmap[c], ms = X.masks[c], r = restrict ? restrict[c] : null;
    for (let e = 0; e < X.E; e++) {
      if (!(X.emem[e] & c)) continue;
      const u = X.eu[e], v = X.ev[e];
      if (!(codes[u] & c) || !(codes[v] & c)) continue;
      if (r && u === r[0]) {
        if (!hasHead(X, c, e, r[1])) continue;
        ecodes[e] |= c;
        const j = gm[u * X.H + r[1]];
        if (j >= 0) gon[j] = 1;
        continue;
      }
      ecodes[e] |= c;
      for (let w = 0; w < X.W; w++) {
        let x = ms[w][e] | 0;
        while (x !== 0) {
          const t = x & -x;
          const j = gm[u * X.H + w * 32 + (31 - Math.clz32(t))];
          if (j >= 0) gon[j] = 1;
          x ^= t;
        }
      }
    }
  }
  return {ecodes, gon};
}

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
  el.style.width = "100%";
  el.style.height = "100%";
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
    expand(D);
    V.D = D;
    V.X = prep(D);
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
    const keys = new Float64Array(start[X.L]), fillp = start.slice(0, X.L);
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

  function smallestFirst(a, k) {  // quickselect: a[0..k) become the k smallest values of a (in any order)
    let lo = 0, hi = a.length - 1;
    while (lo < hi) {
      const pivot = a[(lo + hi) >> 1];
      let i = lo, j = hi;
      while (i <= j) {
        while (a[i] < pivot) i++;
        while (a[j] > pivot) j--;
        if (i <= j) { const t = a[i]; a[i] = a[j]; a[j] = t; i++; j--; }
      }
      if (k - 1 <= j) hi = j; else if (k - 1 >= i) lo = i; else break;
    }
  }

  function tf() {  // the current transform: screen = (ox + x * S, oy - y * S)
    const S = scale();
    return {S, ox: V.w / 2 + V.panX, oy: V.h / 2 + V.panY};
  }

  function visible(T, x, y, m) {  // is data point (x, y) within m px of the canvas?
    const sx = T.ox + x * T.S, sy = T.oy - y * T.S;
    return sx > -m && sy > -m && sx < V.w + m && sy < V.h + m;
  }

  function quadT(g, T, x, y, w, h, ang) {  // a w×h rectangle centred on data (x, y), rotated by ang
    const c = Math.cos(ang), s = Math.sin(ang);
    const ux = c * w / 2, uy = s * w / 2, vx = -s * h / 2, vy = c * h / 2, S = T.S, ox = T.ox, oy = T.oy;
    g.moveTo(ox + (x - ux - vx) * S, oy - (y - uy - vy) * S);
    g.lineTo(ox + (x + ux - vx) * S, oy - (y + uy - vy) * S);
    g.lineTo(ox + (x + ux + vx) * S, oy - (y + uy + vy) * S);
    g.lineTo(ox + (x - ux + vx) * S, oy - (y - uy + vy) * S);
    g.closePath();
  }

  function cellPath(g, T, u) {  // the token's cell below its label: glyph block and sparkline row
    const D = V.D;
    quadT(g, T, D.n_hx[u], D.n_hy[u], D.cw + 2, D.ch + 2, D.n_ta[u]);
  }

  function drawCells(g, S, only) {
    // glyph blocks, head glyphs and sparklines of every visible node (or of the nodes with only[u] set);
    // below 1.2 px a glyph is not told apart: each block is drawn in its commonest glyph colour
    const D = V.D, X = V.X, T = tf();
    const margin = (D.cw + D.ch) * S;
    const show = new Uint8Array(X.N);
    for (let u = 0; u < X.N; u++) show[u] = (!only || only[u]) && visible(T, D.n_hx[u], D.n_hy[u], margin) ? 1 : 0;
    const detail = D.glyph * S >= 1.2;
    g.fillStyle = "#f4f4f4"; g.beginPath();
    for (let u = 0; u < X.N; u++) if (show[u] && D.n_bw[u] > 0) quadT(g, T, D.n_bx[u], D.n_by[u], D.n_bw[u], D.n_bh[u], D.n_ta[u]);
    g.fill();
    if (detail) {
      for (const [gc, rows] of X.gcRows) {
        g.fillStyle = D.palette[gc]; g.beginPath();
        for (let i = 0; i < rows.length; i++) {
          const r = rows[i], u = D.g_node[r];
          if (!show[u]) continue;
          quadT(g, T, D.g_x[r], D.g_y[r], D.g_part[r] ? D.glyph / 2 : D.glyph, D.glyph, D.n_ta[u]);
        }
        g.fill();
      }
    } else {
      for (const [gc, nodes] of X.blockRows) {
        g.fillStyle = D.palette[gc]; g.beginPath();
        for (let i = 0; i < nodes.length; i++) {
          const u = nodes[i];
          if (show[u]) quadT(g, T, D.n_bx[u], D.n_by[u], D.n_bw[u], D.n_bh[u], D.n_ta[u]);
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
    for (const c of [1, 2]) {
      g.strokeStyle = sparkCol[c]; g.lineWidth = Math.max(0.8, Math.min(1.4, 2.8 * S)); g.beginPath();
      const sp = X.spark;
      for (let i = 0; i < X.nSpark; i++) {
        const o = i * 6;
        if (sp[o + 1] !== c || !show[sp[o]]) continue;
        g.moveTo(T.ox + sp[o + 2] * S, T.oy - sp[o + 3] * S); g.lineTo(T.ox + sp[o + 4] * S, T.oy - sp[o + 5] * S);
      }
      g.stroke();
    }
  }

  function quad(g, x, y, w, h, ang, S) { quadT(g, tf(), x, y, w, h, ang); }

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

  function placeAll(g, S, tr, forExport) {
    // which labels show at this zoom: traced tokens first, then by priority; candidates: the label row
    // of the cell, then one line further out (into the gap between rings)
    const D = V.D, X = V.X;
    const widths = labelWidths(g);
    const order = [];
    for (let u = 0; u < X.N; u++) {
      if (!widths[u]) continue;
      const [sx, sy] = toScreen(D.n_lx[u], D.n_ly[u]);
      if (sx < -60 || sy < -20 || sx > V.w + 60 || sy > V.h + 20) continue;
      order.push(u);
    }
    const key = new Float64Array(X.N);
    for (const u of order) {
      let k = D.n_prio[u];
      if (tr) k += tr.origin[u] ? 2e6 : tr.codes[u] ? 1e6 : 0;
      if (X.lvl[u] === X.L) k += 4e6;
      key[u] = k;
    }
    order.sort((a, b) => key[b] - key[a] || a - b);
    // no more candidates than could fit in the canvas at one label per 34×13 px (traced ones come first)
    const cap = Math.max(200, Math.ceil(V.w * V.h / (34 * (FONT_PX + 2))));
    if (order.length > cap) order.length = cap;
    // each label along its ring (the cell's reading direction, upright), on its cell's label row or one
    // line further out, into the gap before the next ring: which ring a label belongs to reads at a glance
    const h = FONT_PX + 2;
    const items = order.map((u) => {
      const [sx, sy] = toScreen(D.n_lx[u], D.n_ly[u]);
      const [ox, oy] = toScreen(D.n_lx[u] + Math.cos(D.n_angle[u]) * (h + 1) / S,
                                D.n_ly[u] + Math.sin(D.n_angle[u]) * (h + 1) / S);
      return {w: widths[u] + 2, h, a: -D.n_ta[u], cands: [[sx, sy], [ox, oy]]};
    });
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
    // a label item per folded run whose arc is long enough on screen for its count (id: -1 - run)
    const D = V.D, out = [];
    if (!D.r_level) return out;
    g.font = `${RUN_FONT_PX}px ${FONT_FAMILY}`;
    for (let i = 0; i < D.r_level.length; i++) {
      const rad = D.radii[D.r_level[i]], len = Math.abs(D.r_a1[i] - D.r_a0[i]) * rad * S;
      const w = g.measureText(runText(i)).width + 2;
      if (len < w + 2) continue;
      const mid = (D.r_a0[i] + D.r_a1[i]) / 2, [sx, sy] = toScreen(rad * Math.cos(mid), rad * Math.sin(mid));
      if (sx < 0 || sy < 0 || sx > V.w || sy > V.h) continue;
      const top = Math.sin(mid) >= -1e-9, ta = top ? mid - Math.PI / 2 : mid + Math.PI / 2;
      out.push({id: -1 - i, item: {w, h: RUN_FONT_PX + 2, a: -ta, cands: [[sx, sy]]}});
    }
    return out;
  }

  function drawLabels(g, S, tr, placed) {
    const D = V.D;
    g.textAlign = "center"; g.textBaseline = "middle";
    const focus = !!model.focus;
    for (const [u, b] of placed) {
      const cx = b[0] + b[2] / 2, cy = b[1] + b[3] / 2;
      if (u < 0) {  // a folded run's count
        if (focus && tr) continue;
        g.font = `${RUN_FONT_PX}px ${FONT_FAMILY}`; g.fillStyle = "#8a8a8a"; g.globalAlpha = 1;
        textAt(g, runText(-1 - u), cx, cy, b[4]);
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
    drawCells(gc, S, null);
    const [base, gb] = make();
    gb.fillStyle = "#ffffff"; gb.fillRect(0, 0, V.w, V.h);
    drawRings(gb, S);
    drawRestEdges(gb, S);
    gb.setTransform(1, 0, 0, 1, 0, 0);
    gb.drawImage(cells, 0, 0);
    V.base = base; V.cells = cells; V.baseKey = key;
    root.setAttribute("data-base-ms", (performance.now() - t0).toFixed(1));
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
      const only = new Uint8Array(V.X.N);
      for (let u = 0; u < V.X.N; u++) only[u] = tr.codes[u] || tr.origin[u] ? 1 : 0;
      if (forExport) {
        drawCells(g, S, only);
      } else {
        // the traced cells at full strength: each cell's box copied from the cached cells bitmap (copies
        // are far cheaper than filling thousands of small paths again)
        const d = V.dpr, hw = (D.cw + 2) / 2, hh = (D.ch + 2) / 2;
        for (let u = 0; u < V.X.N; u++) {
          if (!only[u]) continue;
          const c = Math.abs(Math.cos(D.n_ta[u])), sn = Math.abs(Math.sin(D.n_ta[u]));
          const bw = (hw * c + hh * sn) * S, bh = (hw * sn + hh * c) * S;
          const x0 = Math.max(0, Math.floor(T.ox + D.n_hx[u] * S - bw)), y0 = Math.max(0, Math.floor(T.oy - D.n_hy[u] * S - bh));
          const x1 = Math.min(V.w, Math.ceil(T.ox + D.n_hx[u] * S + bw)), y1 = Math.min(V.h, Math.ceil(T.oy - D.n_hy[u] * S + bh));
          if (x1 <= x0 || y1 <= y0) continue;
          g.drawImage(V.cells, x0 * d, y0 * d, (x1 - x0) * d, (y1 - y0) * d, x0, y0, x1 - x0, y1 - y0);
        }
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
    const boxes = placed.map(([u, b]) => [Math.round(b[0] * 10) / 10, Math.round(b[1] * 10) / 10,
      Math.round(b[2] * 10) / 10, Math.round(b[3] * 10) / 10, u < 0 ? -1 : D.n_pos[u],
      u < 0 ? D.r_level[-1 - u] : D.n_level[u], Math.round(b[4] * 1e4) / 1e4]);
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

  function hit(sx, sy) {
    // what lies under the pointer: a head glyph {kind: "glyph", row}, a token {kind: "node", id} or null
    const D = V.D, X = V.X;
    if (!D) return null;
    const [x, y] = toData(sx, sy), S = scale();
    const slack = Math.max(0.3, 1 / S);
    if (D.glyph * S >= 3) {  // glyphs are targets of their own once they are 3 px (zoom in to reach them)
      const half = D.glyph / 2 + slack;
      let best = -1, bd = 1e9;
      for (let r = 0; r < X.G; r++) {
        const dx = Math.abs(D.g_x[r] - x), dy = Math.abs(D.g_y[r] - y);
        if (dx <= half && dy <= half) { const d = dx + dy; if (d < bd) { bd = d; best = r; } }
      }
      if (best >= 0) return {kind: "glyph", row: best};
    }
    let best = -1, bd = 1e9;
    for (let u = 0; u < X.N; u++) {
      const d = Math.hypot(D.n_hx[u] - x, D.n_hy[u] - y);
      if (d <= Math.max(D.n_hr[u], 4 / S) && d < bd) { bd = d; best = u; }
    }
    return best >= 0 ? {kind: "node", id: best} : hitRun(x, y, S);
  }

  function hitRun(x, y, S) {  // a folded run's arc under data point (x, y): {kind: "run", i} or null
    const D = V.D;
    if (!D.r_level) return null;
    const rho = Math.hypot(x, y), th = ((Math.atan2(y, x) % (2 * Math.PI)) + 2 * Math.PI) % (2 * Math.PI);
    const slack = 4 / S;
    for (let i = 0; i < D.r_level.length; i++) {
      const rad = D.radii[D.r_level[i]];
      if (Math.abs(rho - rad) > Math.max(D.ch * D.cs[D.r_level[i]] / 2, slack)) continue;
      const span = D.r_a1[i] - D.r_a0[i], d = ((th - D.r_a0[i]) % (2 * Math.PI) + 2 * Math.PI) % (2 * Math.PI);
      if (d <= span + slack / rad || 2 * Math.PI - d <= slack / rad) return {kind: "run", i};
    }
    return null;
  }

  function traceOf(h, shift) {
    const D = V.D, X = V.X;
    const codes = new Uint8Array(X.N), origin = new Uint8Array(X.N);
    let restrict = null, node;
    if (h.kind === "glyph") {
      const u = D.g_node[h.row], hd = D.g_head[h.row], own = D.g_model[h.row];
      const which = (shift && X.models === 3) ? [PRE, FINE] : [own];
      restrict = {};
      for (const c of which) { traceHead(X, c, u, hd, codes); restrict[c] = [u, hd]; }
      origin[u] = 1; node = u;
    } else {
      node = h.id;
      for (const c of [PRE, FINE]) if (X.models & c) traceNode(X, c, node, codes);
      origin[node] = 1;
    }
    const {ecodes, gon} = markEdges(X, codes, restrict);
    return {codes, origin, ecodes, gon, node};
  }

  function rating(v) {
    const r = Math.max(0, Math.min(5, Math.ceil(v - 1e-9)));
    return "\u25cf".repeat(r) + "\u25cb".repeat(5 - r);
  }

  function describe(h) {
    const D = V.D;
    if (!D) { info.innerHTML = ""; return; }
    if (!h) {
      info.innerHTML = "<span style='color:#777'>Hover a token or head glyph \u00b7 click: freeze \u00b7 " +
        "shift-click two rings: the paths between them \u00b7 wheel: zoom \u00b7 grey arc +N: N folded " +
        "tokens (hover it)</span>";
      return;
    }
    if (h.kind === "run") {
      const i = h.i, toks = [];
      for (let p = D.r_first[i]; p <= D.r_last[i] && toks.length < 40; p++) toks.push(esc(D.tokens[p]));
      const more = D.r_last[i] - D.r_first[i] + 1 > toks.length ? " \u2026" : "";
      info.innerHTML = `<b>${D.r_count[i]} token(s) folded</b> at level ${D.r_level[i] + 1} of ${D.L + 1} ` +
        `(not reached by the graph there): tokens ${D.r_first[i] + 1}\u2013${D.r_last[i] + 1}<br>` +
        `<span style="color:#555">${toks.join(" ").replace(/ -(?=\S)/g, "")}${more}</span>`;
      return;
    }
    const u = h.kind === "glyph" ? D.g_node[h.row] : h.id;
    const lv = D.n_level[u], mem = D.n_mem[u];
    const lines = [`<b style="font-size:13px">${esc(D.tokens[D.n_pos[u]])}</b> ` +
      `level ${lv + 1} of ${D.L + 1} \u00b7 token ${D.n_pos[u] + 1} of ${D.n}`];
    if (D.models === 3) lines.push(`<span style="color:${MODEL_COLOR[mem]}">\u25a0</span> ${MODEL_NAME[mem]}`);
    if (h.kind === "glyph") {
      const r = h.row;
      lines.push(`<b>head ${D.g_head[r] + 1} of layer ${lv}</b> (attends to level ${lv})`);
      const parts = [];
      if (D.models & 1) parts.push(`<span style="color:${MODEL_COLOR[1]}">pre-trained</span>: ${D.g_cp[r]} token(s)`);
      if (D.models & 2) parts.push(`<span style="color:${MODEL_COLOR[2]}">fine-tuned</span>: ${D.g_cf[r]} token(s)`);
      lines.push(parts.join(" \u00b7 "));
    } else if (lv < D.L) {
      for (const c of [1, 2]) {
        const col = D[`n_i${c}`];
        if (!(D.models & c) || !col) continue;
        const name = c === 1 ? "pre-trained" : "fine-tuned";
        lines.push(`<span style="color:${MODEL_COLOR[c]}">${name}</span>: influence I = ${col[u].toFixed(2)} ` +
          `<span style="color:${MODEL_COLOR[c]}">${rating(col[u])}</span>`);
      }
    } else {
      lines.push("the root: the classification output");
    }
    info.innerHTML = lines.join("<br>");
  }

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
      V.hoverTrace = traceOf(h, V.shift);
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

  function inside(poly, x, y) {
    let c = false;
    for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
      const [xi, yi] = poly[i], [xj, yj] = poly[j];
      if ((yi > y) !== (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) c = !c;
    }
    return c;
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

  function svgString() {
    // what is drawn (zoom included), the legend beside it and both sentences in full, wrapped below
    const D = V.D;
    const rec = new SvgRecorder(V.w, V.h);
    paint(rec, true);
    const side = 300, pad = 10;
    const legend = (model.legend || []);
    const lines = wrapSentences(V.w + side, 7.2);
    const W = V.w + side + 2 * pad, H = Math.max(V.h, 20 * legend.length + 40) + 30 + 18 * lines.length + 2 * pad;
    const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">`,
      `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
      `<g transform="translate(${pad},${pad})"><clipPath id="af-clip"><rect width="${V.w}" height="${V.h}"/></clipPath>`,
      `<g clip-path="url(#af-clip)">`, ...rec.out, "</g></g>"];
    let y = pad + 14;
    const lx = pad + V.w + 12;
    parts.push(`<text x="${lx}" y="${y}" font-size="13" font-weight="bold" font-family="sans-serif">${esc(model.title || "Attention Flows")}</text>`);
    y += 10;
    for (const row of legend) {
      const kind = row[0], colors = row[1], text = row[2];
      y += 18;
      let x = lx;
      if (kind === "swatch" || kind === "band") { parts.push(`<rect x="${x}" y="${y - 10}" width="12" height="12" fill="${colors[0]}"${colors[1] ? ` stroke="${colors[1]}"` : ""}/>`); x += 16; }
      else if (kind === "split") { parts.push(`<rect x="${x}" y="${y - 10}" width="6" height="12" fill="${colors[0]}"/><rect x="${x + 6}" y="${y - 10}" width="6" height="12" fill="${colors[1]}"/>`); x += 16; }
      else if (kind === "ramp") { colors.forEach((c, i) => parts.push(`<rect x="${x + i * 9}" y="${y - 10}" width="9" height="12" fill="${c}"/>`)); x += colors.length * 9 + 4; }
      else if (kind === "spark" || kind === "edge") { parts.push(`<path d="M${x} ${y}L${x + 14} ${y}M${x + 7} ${y}L${x + 7} ${y - 10}" stroke="${colors[0]}" fill="none"/>`); x += 18; }
      const words = wrapText(text, Math.floor((side - (x - lx)) / 6.2));
      words.forEach((t, i) => parts.push(`<text x="${x}" y="${y + i * 13}" font-size="10.5" font-family="sans-serif" fill="#333">${esc(t)}</text>`));
      y += 13 * (words.length - 1);
    }
    let sy = pad + Math.max(V.h, y) + 24;
    for (const [seg, t] of lines) {
      parts.push(`<text x="${pad}" y="${sy}" font-size="12" font-family="${FONT_FAMILY.replace(/"/g, "'")}" fill="${seg ? MODEL_COLOR[2] : "#222"}">${esc(t)}</text>`);
      sy += 18;
    }
    parts.push("</svg>");
    return parts.join("\n").replace(`height="${H}" viewBox="0 0 ${W} ${H}"`, `height="${sy}" viewBox="0 0 ${W} ${sy}"`)
      .replace(`<rect width="${W}" height="${H}"`, `<rect width="${W}" height="${sy}"`);
  }

  function wrapText(text, n) {
    const out = [];
    let line = "";
    for (const w of String(text).split(/\s+/)) {
      if (line && (line + " " + w).length > n) { out.push(line); line = w; } else line = line ? line + " " + w : w;
    }
    if (line) out.push(line);
    return out.length ? out : [""];
  }

  function wrapSentences(width, cw) {
    // sentence A then B, each in full, wrapped at `width` px (cw px per character)
    const D = V.D, n = Math.max(20, Math.floor(width / cw));
    const out = [];
    const given = model.sentences || [];
    for (const seg of [0, 1]) {
      let text = given[seg];
      if (!text) {  // no sentence text given: the tokens
        const toks = [];
        for (let p = 0; p < D.n; p++) if (D.segs[p] === seg) toks.push(D.tokens[p]);
        text = toks.join(" ").replace(/ -(?=\S)/g, "");
      }
      if (!text) continue;
      for (const l of wrapText((seg ? "B: " : "A: ") + text, n)) out.push([seg, l]);
    }
    return out;
  }

  function download(blob, name) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = name;
    root.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 2000);
  }

  function exportSvg() {
    if (!V.D) return;
    const s = svgString();
    root.setAttribute("data-export-svg-bytes", String(s.length));
    download(new Blob([s], {type: "image/svg+xml"}), "attention-flows.svg");
  }

  function exportPng() {
    if (!V.D) return;
    const s = svgString();
    const m = /width="(\d+(?:\.\d+)?)" height="(\d+(?:\.\d+)?)"/.exec(s);
    const w = +m[1], h = +m[2];
    const img = new Image();
    img.onload = () => {
      const c = document.createElement("canvas");
      c.width = Math.round(w * 3); c.height = Math.round(h * 3);
      const g = c.getContext("2d");
      g.setTransform(3, 0, 0, 3, 0, 0);
      g.drawImage(img, 0, 0, w, h);
      c.toBlob((b) => { root.setAttribute("data-export-png-bytes", String(b.size)); download(b, "attention-flows.png"); }, "image/png");
    };
    img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(s);
  }

  // expose the export for tests and the app (the SVG text of what is drawn), and where the tokens and
  // head glyphs are on the page (client px), for tests that point at them
  root.attnflowsSvg = svgString;
  // zoom to `zoom` with data point (x, y) in the middle and draw at once (what wheel and drag do);
  // returns the labels drawn, as data-label-boxes
  root.attnflowsView = (zoom, x, y) => {
    V.zoom = Math.max(1, Math.min(40, zoom));
    const S = scale();
    V.panX = -x * S; V.panY = y * S;
    draw();
    return JSON.parse(root.getAttribute("data-label-boxes"));
  };
  // the display states of every token (radial.py's table): st what is drawn now (hover, else frozen),
  // fz the frozen selection's
  root.attnflowsStates = () => {
    const D = V.D;
    if (!D) return null;
    const cur = V.hoverTrace || V.frozenTrace, st = [], fz = [];
    for (let u = 0; u < D.N; u++) { st.push(state(cur, u)); fz.push(state(V.frozenTrace, u)); }
    return {level: Array.from(D.n_level), pos: Array.from(D.n_pos), st, fz};
  };
  // what the browser derives from the edges: their curves (8 numbers each) and the sparkline bars
  // (node, model, x0, y0, x1, y1), in data units, to be checked against layout.py / flow_data.py
  // and the columns the browser derives on loading (expand): head glyphs and edge columns
  root.attnflowsGeometry = () => {
    const D = V.D, out = {curve: Array.from(V.X.curve), spark: Array.from(V.X.spark)};
    for (const k of ["node", "head", "model", "part", "gc", "x", "y", "cp", "cf"]) out[`g_${k}`] = Array.from(D[`g_${k}`]);
    for (const k of ["u", "mem", "nh", "rest"]) out[`e_${k}`] = Array.from(D[`e_${k}`]);
    return out;
  };
  root.attnflowsData = (u) => [V.D.n_hx[u], V.D.n_hy[u]];  // a token's hit centre in data units
  // the folded runs in the window: their middle on the page (client px), level, count and token range
  root.attnflowsRuns = () => {
    const D = V.D, out = [];
    if (!D || !D.r_level) return out;
    const r = root.getBoundingClientRect();
    for (let i = 0; i < D.r_level.length; i++) {
      const rad = D.radii[D.r_level[i]], mid = (D.r_a0[i] + D.r_a1[i]) / 2;
      const [x, y] = toScreen(rad * Math.cos(mid), rad * Math.sin(mid));
      if (x < 0 || y < 0 || x > V.w || y > V.h) continue;
      out.push({i, level: D.r_level[i], count: D.r_count[i], first: D.r_first[i], last: D.r_last[i],
                x: r.left + x, y: r.top + y, arc: Math.abs(D.r_a1[i] - D.r_a0[i]) * rad * scale()});
    }
    return out;
  };
  root.attnflowsPoints = (kind) => {
    const D = V.D, out = [];
    if (!D) return out;
    const r = root.getBoundingClientRect(), T = tf();
    if (kind === "glyphs") {
      for (let i = 0; i < D.G; i++) {
        const x = T.ox + D.g_x[i] * T.S, y = T.oy - D.g_y[i] * T.S;
        if (x < 0 || y < 0 || x > V.w || y > V.h) continue;
        const u = D.g_node[i];
        out.push({row: i, node: u, level: D.n_level[u], pos: D.n_pos[u], head: D.g_head[i], model: D.g_model[i],
                  x: r.left + x, y: r.top + y, size: D.glyph * T.S});
      }
      return out;
    }
    for (let u = 0; u < D.N; u++) {
      const x = T.ox + D.n_hx[u] * T.S, y = T.oy - D.n_hy[u] * T.S;
      if (x < 0 || y < 0 || x > V.w || y > V.h) continue;
      out.push({id: u, level: D.n_level[u], pos: D.n_pos[u], token: D.tokens[D.n_pos[u]], x: r.left + x, y: r.top + y,
                r: D.n_hr[u] * T.S});
    }
    return out;
  };

  // ------------------------------------------------------------------------------ wiring

  model.on("data", () => { V.sent = null; loadData(); V.base = null; describe(null); draw(); });
  model.on("frozen", () => { V.sent = null; loadFrozen(); draw(); });
  model.on("level", () => draw());
  model.on("focus", () => draw());
  model.on("legend", () => {});
  model.on("title", () => {});
  model.on("sentences", () => {});
  model.on("pick", () => {});
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
