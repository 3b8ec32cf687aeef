// Attention Flows: client-side hover highlighting of the radial view (§4.4.1, Figs. 5-6).
//
// Bokeh runs this CustomJS on every pointer move over the radial figure, once per hover renderer
// (token targets `rn`, head-glyph targets `rg`). Nothing here waits on Python (P4). It reads:
//   bits:   per model code c (1 pre-trained, 2 fine-tuned) the bit stream b<c> of every node's
//           ancestors as the graph answered them (AttentionGraph.all_traces()); node u's row holds one
//           bit per node on a lower level (ids 0 .. lo[level(u)]-1), rows in node order;
//   edges:  u (upper node), v (lower node), mem (models holding the edge), h<c>_<w> (heads carrying
//           it in model c, 32 per uint32 word);
//   glyphs: node, head, model of every lit head glyph (a split glyph is one row per model).
// It also writes the hovered item's details into the `info` Div beside the view (never over the token).
// and writes the display state `st` of every item (see flow.py: 1-3 highlighted by model code,
// 4 dimmed, 5-8 normal, 9-11 the hovered token), then restores the frozen states `fz` on leave.
//
// Traces: token u in model c = u, its ancestors (u's bits) and its descendants (the nodes v above
// whose bits hold u). Head glyph (u, h) of level k = u, its descendants, and for each child b that
// head h joins u to through layer k-1: b and b's ancestors (= AttentionGraph.trace(k, u,
// head=(k-1, h))). Holding shift on a head glyph in the combined view traverses both models through
// that head (model comparison, §4.4.1); without shift only the glyph's own model.
// An edge is highlighted for model c when both ends are in c's trace (for the restricted layer: only
// edges of u carrying head h); a glyph is highlighted when a highlighted edge of its node carries its
// head in its model.

const S = cb_obj._af || (cb_obj._af = {node: -1, glyph: -1, shift: false, key: "", cache: null});
const ids = (cb_data.index && cb_data.index.indices) ? cb_data.index.indices : [];
const hit = ids.length ? ids[ids.length - 1] : -1;
if (cb_data.renderer === rn) {
  S.node = hit;
} else if (cb_data.renderer === rg) {
  S.glyph = hit;
} else {
  return;
}

function prep() {
  const nd = nodes.data, ed = edges.data, gd = glyphs.data, bd = bits.data;
  const C = S.cache;
  if (C && C.nd === nd && C.ed === ed && C.gd === gd && C.bd === bd) {
    return C;
  }
  const N = nd.level.length, E = ed.u.length, G = gd.node.length;
  const sizes = bd.sizes[0];
  if (sizes[0] !== N || sizes[1] !== E || sizes[2] !== G) {
    return null;  // the server is still swapping in new data (τ or mode changed): wait for it
  }
  const L = bd.L[0], H = bd.H[0], W = bd.W[0], models = bd.models[0];
  const lvl = nd.level;
  const lo = new Int32Array(L + 2);
  for (let i = 0; i < N; i++) lo[lvl[i] + 1] += 1;
  for (let k = 0; k <= L; k++) lo[k + 1] += lo[k];
  const off = new Float64Array(N + 1);
  for (let u = 0; u < N; u++) off[u + 1] = off[u] + lo[lvl[u]];
  const gmap = {}, masks = {}, b = {};
  for (const c of [1, 2]) {
    if (!(models & c)) continue;
    const m = new Int32Array(N * H).fill(-1);
    for (let r = 0; r < G; r++) if (gd.model[r] === c) m[gd.node[r] * H + gd.head[r]] = r;
    gmap[c] = m;
    masks[c] = [];
    for (let w = 0; w < W; w++) masks[c].push(ed[`h${c}_${w}`]);
    b[c] = bd[`b${c}`][0];
  }
  // out-edges of every upper node (CSR), for the children of a head glyph
  const ostart = new Int32Array(N + 1);
  for (let e = 0; e < E; e++) ostart[ed.u[e] + 1] += 1;
  for (let u = 0; u < N; u++) ostart[u + 1] += ostart[u];
  const fill = ostart.slice(0, N), olist = new Int32Array(E);
  for (let e = 0; e < E; e++) olist[fill[ed.u[e]]++] = e;
  S.cache = {nd, ed, gd, bd, N, E, G, L, H, W, models, lvl, lo, off, gmap, masks, b, ostart, olist,
             mem: nd.mem, eu: ed.u, ev: ed.v, emem: ed.mem};
  S.key = "";
  return S.cache;
}

function anc(X, c, u, v) {  // is v an ancestor of u in model c?
  const i = X.off[u] + v;
  return (X.b[c][i >> 3] >> (i & 7)) & 1;
}

function hasHead(X, c, e, h) {
  return (X.masks[c][h >> 5][e] >>> (h & 31)) & 1;
}

function traceNode(X, c, u, codes) {
  if (!(X.mem[u] & c)) return;
  codes[u] |= c;
  const k = X.lvl[u];
  for (let v = 0; v < X.lo[k]; v++) if (anc(X, c, u, v)) codes[v] |= c;
  for (let v = X.lo[k + 1]; v < X.N; v++) if (anc(X, c, v, u)) codes[v] |= c;
}

function traceHead(X, c, u, h, codes) {
  if (!(X.mem[u] & c)) return;
  codes[u] |= c;
  const k = X.lvl[u];
  for (let v = X.lo[k + 1]; v < X.N; v++) if (anc(X, c, v, u)) codes[v] |= c;
  if (k === 0) return;
  for (let j = X.ostart[u]; j < X.ostart[u + 1]; j++) {
    const e = X.olist[j];
    if (!(X.emem[e] & c) || !hasHead(X, c, e, h)) continue;
    const child = X.ev[e];
    codes[child] |= c;
    for (let v = 0; v < X.lo[k - 1]; v++) if (anc(X, c, child, v)) codes[v] |= c;
  }
}

function markEdges(X, codes, restrict) {
  // restrict: {c: [u, h]} for head-glyph traces
  const ecodes = new Uint8Array(X.E), gon = new Uint8Array(X.G);
  for (const c of [1, 2]) {
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
          const h = w * 32 + (31 - Math.clz32(t));
          const j = gm[u * X.H + h];
          if (j >= 0) gon[j] = 1;
          x ^= t;
        }
      }
    }
  }
  return [ecodes, gon];
}

function compose(X, codes, origin, ecodes, gon) {
  const nd = X.nd, ed = X.ed, gd = X.gd, sd = sparks.data;
  const nst = nd.st;
  for (let u = 0; u < X.N; u++) {
    nst[u] = origin[u] ? 8 + Math.max(codes[u], 1) : (codes[u] ? codes[u] : 4);
  }
  for (let e = 0; e < X.E; e++) ed.st[e] = ecodes[e] ? ecodes[e] : 4;
  edgeAlpha(X, ecodes);
  for (let g = 0; g < X.G; g++) gd.st[g] = gon[g] ? gd.model[g] : 4;
  for (let i = 0; i < sd.st.length; i++) sd.st[i] = nst[sd.node[i]];
  if (ctx) {
    const cst = ctx.data.st;
    for (let u = 0; u < X.N && u < cst.length; u++) cst[u] = nst[u];
    ctx.change.emit();
  }
  if (sent) {
    const td = sent.data, tst = td.st, n = tst.length;
    const code = new Uint8Array(n), orig = new Uint8Array(n);
    for (let u = 0; u < X.N; u++) {
      if (codes[u]) code[nd.pos[u]] |= codes[u];
      if (origin[u]) orig[nd.pos[u]] = 1;
    }
    for (let p = 0; p < n; p++) tst[p] = orig[p] ? 8 + Math.max(code[p], 1) : (code[p] ? code[p] : 4);
    sent.change.emit();
    if (circ) {
      const cd = circ.data;
      for (let i = 0; i < cd.st.length; i++) cd.st[i] = tst[cd.pos[i]];
      circ.change.emit();
    }
  }
  nodes.change.emit();
  edges.change.emit();
  glyphs.change.emit();
  sparks.change.emit();
}

function edgeAlpha(X, ecodes) {
  // highlighted edges: opacity by how many are highlighted in their layer (flow.py: density_alpha)
  const ed = X.ed, count = new Float64Array(X.L);
  for (let e = 0; e < X.E; e++) if (ecodes[e]) count[X.lvl[X.ev[e]]] += 1;
  const [ink, amin, amax] = X.bd.hl_ink[0];
  const sweep = X.bd.sweep[0];
  for (let e = 0; e < X.E; e++) {
    const k = X.lvl[X.ev[e]];
    const a = Math.min(amax, Math.max(amin, ink / Math.max(count[k] * sweep[k], 1e-9)));
    ed.ha[e] = Math.floor(a * 255 + 0.5);
  }
}

function restore(X) {
  const lit = new Uint8Array(X.E);
  for (let e = 0; e < X.E; e++) lit[e] = edges.data.fz[e] < 4 ? 1 : 0;
  edgeAlpha(X, lit);
  for (const src of [nodes, edges, glyphs]) {
    const d = src.data;
    d.st.set(d.fz);
    src.change.emit();
  }
  const sd = sparks.data, nst = nodes.data.st;
  for (let i = 0; i < sd.st.length; i++) sd.st[i] = nst[sd.node[i]];
  sparks.change.emit();
  for (const src of [ctx, sent, circ]) {
    if (src && src.data && src.data.fz) {
      src.data.st.set(src.data.fz);
      src.change.emit();
    }
  }
}

function esc(t) {
  return String(t).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

const MODEL = {1: "pre-trained only", 2: "fine-tuned only", 3: "both models"};
const COLOR = {1: "#2bb3a4", 2: "#7b3fa0", 3: "#e07b00"};

function rating(v) {  // the sentence view's 5-circle rating, min(5, ceil(I)) (eq. 4)
  const r = Math.max(0, Math.min(5, Math.ceil(v - 1e-9)));
  return "\u25cf".repeat(r) + "\u25cb".repeat(5 - r);
}

function describe(X, node, glyph) {
  // the hovered token's or head glyph's details, written into the info box beside the view
  if (!info) return;
  if (node < 0 && glyph < 0) { info.text = idle; return; }
  const nd = X.nd, gd = X.gd;
  const u = glyph >= 0 ? gd.node[glyph] : node;
  const lv = nd.level[u], mem = nd.mem[u], n = X.bd.n ? X.bd.n[0] : null;
  const lines = [];
  lines.push(`<b style="font-size:14px">${esc(nd.token[u])}</b>`);
  lines.push(`level ${lv + 1} of ${X.L + 1} \u00b7 token ${nd.pos[u] + 1}${n ? " of " + n : ""}`);
  if (X.models === 3) lines.push(`<span style="color:${COLOR[mem]}">\u25a0</span> ${MODEL[mem]}`);
  if (glyph >= 0) {
    const h = gd.head[glyph];
    lines.push(`<b>head ${h + 1} of layer ${lv}</b> (attends to level ${lv})`);
    const parts = [];
    if (X.models & 1) parts.push(`<span style="color:${COLOR[1]}">pre-trained</span>: ${gd.cp[glyph]} token(s)`);
    if (X.models & 2) parts.push(`<span style="color:${COLOR[2]}">fine-tuned</span>: ${gd.cf[glyph]} token(s)`);
    lines.push(parts.join(" \u00b7 "));
  } else if (lv < X.L) {
    for (const c of [1, 2]) {
      const col = nd[`i${c}`];
      if (!(X.models & c) || col == null) continue;
      const name = c === 1 ? "pre-trained" : "fine-tuned";
      lines.push(`<span style="color:${COLOR[c]}">${name}</span>: influence I = ${col[u].toFixed(2)} ` +
                 `<span style="color:${COLOR[c]};letter-spacing:1px">${rating(col[u])}</span>`);
    }
  } else {
    lines.push("the root: the classification output");
  }
  info.text = lines.join("<br>");
}

function redraw() {
  const X = prep();
  if (X === null) return;
  const node = S.node < X.N ? S.node : -1;
  const glyph = S.glyph < X.G ? S.glyph : -1;
  const key = `${node}:${glyph}:${glyph >= 0 && S.shift ? 1 : 0}`;
  if (key === S.key) return;
  S.key = key;
  describe(X, node, glyph);
  if (node < 0 && glyph < 0) {
    restore(X);
    S.active = null;
    return;
  }
  const codes = new Uint8Array(X.N), origin = new Uint8Array(X.N);
  let restrict = null;
  if (glyph >= 0) {
    const u = X.gd.node[glyph], h = X.gd.head[glyph], own = X.gd.model[glyph];
    const which = (S.shift && X.models === 3) ? [1, 2] : [own];
    restrict = {};
    for (const c of which) {
      traceHead(X, c, u, h, codes);
      restrict[c] = [u, h];
    }
    origin[u] = 1;
    S.active = {kind: "glyph", node: u, head: h, models: which};
  } else {
    for (const c of [1, 2]) if (X.models & c) traceNode(X, c, node, codes);
    origin[node] = 1;
    S.active = {kind: "node", node: node};
  }
  const [ecodes, gon] = markEdges(X, codes, restrict);
  compose(X, codes, origin, ecodes, gon);
}

if (!S.listening) {
  S.listening = true;
  const onkey = (ev) => {
    const shift = !!ev.shiftKey;
    if (shift !== S.shift) {
      S.shift = shift;
      if (S.glyph >= 0 && S.redraw) S.redraw();
    }
  };
  window.addEventListener("pointermove", onkey, {capture: true, passive: true});
  window.addEventListener("keydown", onkey, true);
  window.addEventListener("keyup", onkey, true);
}
S.redraw = redraw;
redraw();
