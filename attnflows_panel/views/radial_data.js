// Part of the ES module of attnflows_panel.views.radial.RadialFlow: radial.py joins radial.js, radial_labels.js,
// radial_data.js, radial_info.js, radial_svg.js and radial_hooks.js, in that order, into one module (one scope:
// the constants of radial.js hold here).


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
      const split = st === 3;
      for (let c = split ? PRE : st; c <= (split ? FINE : st); c++) {
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
  // each node's angle and turn as cosines and sines, once (not per edge and bar: ~80k of each at 512 tokens)
  const cosA = new Float64Array(N), sinA = new Float64Array(N), cosTa = new Float64Array(N), sinTa = new Float64Array(N);
  for (let u = 0; u < N; u++) {
    cosA[u] = Math.cos(D.n_angle[u]); sinA[u] = Math.sin(D.n_angle[u]);
    cosTa[u] = Math.cos(D.n_ta[u]); sinTa[u] = Math.sin(D.n_ta[u]);
  }
  // edge curves (layout.edge_curves): a cubic Bézier from the upper cell's outer side to the lower
  // cell's inner side along the ring direction, the short way round; the root leaves radially
  const curve = new Float32Array(E * 8);
  for (let e = 0; e < E; e++) {
    const u = D.e_u[e], v = D.e_v[e], root = lvl[u] === L;
    const t1 = D.n_angle[v], t0 = root ? t1 : D.n_angle[u];
    const r0 = D.n_rout[u], r1 = D.n_rin[v];
    const d = ((((t1 - t0 + Math.PI) % (2 * Math.PI)) + 2 * Math.PI) % (2 * Math.PI)) - Math.PI;
    const kappa = 4 / 3 * Math.tan(d / 4), dr = r1 - r0;
    const c1 = cosA[v], s1 = sinA[v], c0 = root ? c1 : cosA[u], s0 = root ? s1 : sinA[u];
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
  // Rows by model, then lower token, then upper token (in-edges in edge order): a token's bars are
  // consecutive, from its left end to its right, which lets sparkLayer merge the bars of one sample column.
  const spark = new Float32Array(nSpark * 6), sparkDu = new Float32Array(nSpark);
  let si = 0;
  for (const c of [PRE, FINE]) {
    if (!(D.models & c)) continue;
    const shift = two ? 0.45 * (c === FINE ? 1 : -1) : 0;
    for (let j = 0; j < E; j++) {
      const e = ilist[j];
      if (!(D.e_mem[e] & c)) continue;
      const u = D.e_u[e], v = D.e_v[e];
      let h = 0;
      for (let w = 0; w < W; w++) { let x = masks[c][w][e] >>> 0; while (x) { x &= x - 1; h += 1; } }
      const rel = Math.max(-1, Math.min(1, (D.n_pos[u] - D.n_pos[v]) / Math.max(D.n - 1, 1)));
      const ux = cosTa[v], uy = sinTa[v];
      const du = (rel + 1) / 2 * D.spark_w + shift, hv = (Math.min(h, 3) + 1) / 4 * D.spark_h;
      const x0 = D.n_sx0[v] + du * ux, y0 = D.n_sy0[v] + du * uy;
      spark[si] = v; spark[si + 1] = c; spark[si + 2] = x0; spark[si + 3] = y0;
      spark[si + 4] = x0 - hv * uy; spark[si + 5] = y0 + hv * ux;
      sparkDu[si / 6] = du;
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
          curve, spark, sparkDu, nSpark, strength, rmax: rmax + 2, slot, istart, ilist, seen: new Uint32Array(N), stamp: 0,
          stack: new Int32Array(N + 1), layer, gcRows, blockRows, cosTa, sinTa, mem: D.n_mem, eu: D.e_u, ev: D.e_v, emem: D.e_mem};
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

function markEdges(X, codes, restrict, ecodes, gon) {
  // an edge of model c is in the trace when both its ends are; restrict: {c: [u, h]} for head glyphs;
  // into ecodes [E] and gon [G] (zeroed here)
  ecodes.fill(0); gon.fill(0);
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


// ------------------------------------------------------------------------------- glyphs as pixels

// Head glyphs smaller than GLYPH_PIXELS device px are written as pixels, not filled as paths: a 512-token
// pair has ~80k glyphs of 1-3 px. In headless Chromium at 700 px (bench_radial_hover.py) the base layer took
// ~350 ms with them filled as batched turned quads and 225-285 ms written here (the glyph layer itself
// 50-80 ms). Each glyph is the same turned square (or half, for a split glyph) that drawCells fills, in the
// same order (by colour, then row), its coverage of each pixel taken from SUB×SUB samples (or, under
// GLYPH_SPLAT, an upright box's exact overlap) and composited source-over, as an anti-aliased fill composites.
const GLYPH_PIXELS = 4;
const GLYPH_SPLAT = 2;  // below this, a glyph's area is spread over the pixels it covers (no turn, no samples)

function hexRgb(c) {  // "#rrggbb" -> [r, g, b]
  const v = parseInt(String(c).slice(1, 7), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

function pixelCanvas(cache, W, H) {
  // a W × H device-pixel canvas and its ImageData in `cache`, made again when the size changes; true then
  if (cache.img && cache.img.width === W && cache.img.height === H) return false;
  cache.canvas = document.createElement("canvas");
  cache.canvas.width = W; cache.canvas.height = H;
  cache.g = cache.canvas.getContext("2d");
  cache.img = cache.g.createImageData(W, H);
  return true;
}

function over(px, o, a, cr, cg, cb) {
  // source-over of colour (cr, cg, cb) at coverage a onto pixel o of RGBA bytes px, as an anti-aliased fill
  if (a >= 1 - 1e-9) { px[o] = cr; px[o + 1] = cg; px[o + 2] = cb; px[o + 3] = 255; return; }
  const da = px[o + 3] / 255, keep = da * (1 - a), na = a + keep;
  px[o] = (cr * a + px[o] * keep) / na; px[o + 1] = (cg * a + px[o + 1] * keep) / na;
  px[o + 2] = (cb * a + px[o + 2] * keep) / na; px[o + 3] = na * 255;
}

// The glyph layer: a canvas of the view's device size with the glyphs of the shown nodes (show[u] = 1) drawn
// at transform T (screen = ox + x * S, oy - y * S, CSS px) and device pixel ratio dpr. The canvas and its
// ImageData are kept in `cache` (one per view) and reused while the size stays.
function glyphLayer(cache, D, X, T, dpr, w, h, show) {
  const W = Math.round(w * dpr), H = Math.round(h * dpr);
  pixelCanvas(cache, W, H);
  const px = cache.img.data;
  px.fill(0);
  if (cache.palette !== D.palette) { cache.palette = D.palette; cache.rgb = D.palette.map(hexRgb); }
  const S = T.S * dpr, ox = T.ox * dpr, oy = T.oy * dpr, side = D.glyph * S;
  const SUB = side < 2.5 ? 3 : 2, step = 1 / SUB, w0 = 1 / (SUB * SUB), splat = side < GLYPH_SPLAT;
  const cos = X.cosTa, sin = X.sinTa, gx = D.g_x, gy = D.g_y, part = D.g_part, node = D.g_node;
  const put = (o, a, cr, cg, cb) => over(px, o, a, cr, cg, cb);
  for (const [gc, rows] of X.gcRows) {
    const [cr, cg, cb] = cache.rgb[gc];
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i], u = node[r];
      if (!show[u]) continue;
      const cx = ox + gx[r] * S, cy = oy - gy[r] * S, c = cos[u], s = sin[u];
      const hw = (part[r] ? side / 2 : side) / 2, hh = side / 2;
      const ex = Math.abs(c) * hw + Math.abs(s) * hh, ey = Math.abs(s) * hw + Math.abs(c) * hh;
      if (splat) {
        // under GLYPH_SPLAT px the turn is not seen: the glyph's area, spread over the pixels of an upright
        // box with its turned extents' proportions, each pixel covered by the box's exact overlap
        const k = Math.sqrt((hw * hh) / (ex * ey)), xa = cx - ex * k, xb = cx + ex * k, ya = cy - ey * k, yb = cy + ey * k;
        const x0 = Math.max(0, Math.floor(xa)), x1 = Math.min(W - 1, Math.floor(xb));
        const y0 = Math.max(0, Math.floor(ya)), y1 = Math.min(H - 1, Math.floor(yb));
        for (let y = y0; y <= y1; y++) {
          const fy = Math.min(y + 1, yb) - Math.max(y, ya);
          if (fy <= 0) continue;
          for (let x = x0; x <= x1; x++) {
            const fx = Math.min(x + 1, xb) - Math.max(x, xa);
            if (fx > 0) put((y * W + x) * 4, fx * fy, cr, cg, cb);
          }
        }
        continue;
      }
      const x0 = Math.max(0, Math.floor(cx - ex)), x1 = Math.min(W - 1, Math.floor(cx + ex));
      const y0 = Math.max(0, Math.floor(cy - ey)), y1 = Math.min(H - 1, Math.floor(cy + ey));
      for (let y = y0; y <= y1; y++) {
        for (let x = x0; x <= x1; x++) {
          // on screen the square's axes are (c, -s) and (-s, -c)
          let k = 0;
          for (let sy = y + step / 2 - cy; sy < y + 1 - cy; sy += step) {
            for (let sx = x + step / 2 - cx; sx < x + 1 - cx; sx += step) {
              const a = sx * c - sy * s, b = -sx * s - sy * c;
              if (a <= hw && a >= -hw && b <= hh && b >= -hh) k += 1;
            }
          }
          if (k) put((y * W + x) * 4, k * w0, cr, cg, cb);
        }
      }
    }
  }
  cache.g.putImageData(cache.img, 0, 0);
  return cache.canvas;
}


// ------------------------------------------------------------------------------- sparklines as pixels

// A 512-token pair has one sparkline bar per drawn edge and model (~80k bars of 2-6 px). Stroked as paths,
// Chromium's software rasteriser took 100-150 ms to draw them into the cached base layer at 700 px
// (bench_radial_hover.py, 7 Dec 2026: the composite step of `data-base-parts`), every time that layer is
// rebuilt (a τ change, a zoom, a pan). Past SPARK_PIXELS bars thinner than SPARK_WIDTH device px they are
// written as pixels here instead, supersampled: each device pixel has SPARK_SUB × SPARK_SUB samples (one bit
// each); a bar, a segment of width lw, is walked at the samples' spacing along its length and across its
// width and sets the sample each step lands in. A pixel's coverage is the share of its samples set by any
// bar of the model: the union of the bars, as one stroked path of them covers (many bars of a sparkline
// fall within one pixel column at 512 tokens: of a token's bars that start in one sample column, only the
// longest is walked). Each model's layer is composited source-over, the first model's colour under the
// second's, in drawCells' order.
const SPARK_PIXELS = 4000;
const SPARK_WIDTH = 2.5;  // bars at least this wide (device px: a zoom, a high-dpi screen) are stroked as paths
const SPARK_SUB = 4;      // samples per device px, along and across (16 bits per pixel; the code shifts by 2)

// The spark layer: a canvas of the view's device size with the bars of the shown nodes of the models in
// `colors` ({1: "#rrggbb", 2: "#rrggbb"}), line width lw in CSS px; canvas, ImageData and sample masks
// are kept in `cache` (one per view) while the size stays.
function sparkLayer(cache, X, T, dpr, w, h, show, colors, lw) {
  const W = Math.round(w * dpr), H = Math.round(h * dpr), Q = SPARK_SUB;
  if (pixelCanvas(cache, W, H)) {
    cache.mask = new Uint16Array(W * H);
    cache.bits = new Float32Array(1 << (Q * Q));
    for (let m = 1; m < cache.bits.length; m++) cache.bits[m] = cache.bits[m & (m - 1)] + 1 / (Q * Q);
  }
  const px = cache.img.data, mask = cache.mask, bits = cache.bits, sp = X.spark;
  px.fill(0);
  // in sample units (Q per device px)
  const S = T.S * dpr * Q, ox = T.ox * dpr * Q, oy = T.oy * dpr * Q, width = lw * dpr * Q;
  const across = Math.max(1, Math.ceil(width)), WQ = W * Q, HQ = H * Q;
  const du = X.sparkDu;  // each bar's offset along its sparkline (data units; S: sample columns per unit)
  const bar = (i) => {  // set the samples that row i's bar covers
    const o = i * 6;
    const xa = ox + sp[o + 2] * S, ya = oy - sp[o + 3] * S, xb = ox + sp[o + 4] * S, yb = oy - sp[o + 5] * S;
    const dx = xb - xa, dy = yb - ya, len = Math.hypot(dx, dy);
    if (!(len > 0)) return;
    // steps of one sample along the bar and across it, from the first sample's centre
    const along = Math.max(1, Math.ceil(len)), ax = dx / along, ay = dy / along;
    const bx = (-dy / len) * (width / across), by = (dx / len) * (width / across);
    const x0 = xa + ax / 2 - bx * (across - 1) / 2, y0 = ya + ay / 2 - by * (across - 1) / 2;
    for (let a = 0; a < along; a++) {
      let x = x0 + ax * a, y = y0 + ay * a;
      for (let b = 0; b < across; b++, x += bx, y += by) {
        if (!(x >= 0 && y >= 0 && x < WQ && y < HQ)) continue;
        const sx = x | 0, sy = y | 0;  // the sample; its pixel and bit (SPARK_SUB = 4)
        mask[(sy >> 2) * W + (sx >> 2)] |= 1 << (((sy & 3) << 2) | (sx & 3));
      }
    }
  };
  for (const c of [1, 2]) {
    mask.fill(0);
    // a token's bars come one after another, left to right (prep): of those that start in the same sample
    // column only the longest is drawn (the others lie within it, up to the column's width)
    let any = false, pv = -1, pcol = 0, best = -1, blen = -1;
    for (let i = 0; i < X.nSpark; i++) {
      const o = i * 6, v = sp[o];
      if (sp[o + 1] !== c || !show[v]) continue;
      const col = Math.floor(du[i] * S), hx = sp[o + 4] - sp[o + 2], hy = sp[o + 5] - sp[o + 3];
      const len2 = hx * hx + hy * hy;
      if (v === pv && col === pcol) {
        if (len2 > blen) { best = i; blen = len2; }
        continue;
      }
      if (best >= 0) bar(best);
      pv = v; pcol = col; best = i; blen = len2; any = true;
    }
    if (best >= 0) bar(best);
    if (!any) continue;
    const [cr, cg, cb] = hexRgb(colors[c]);
    for (let p = 0; p < W * H; p++) if (mask[p]) over(px, p * 4, bits[mask[p]], cr, cg, cb);
  }
  cache.g.putImageData(cache.img, 0, 0);
  return cache.canvas;
}
