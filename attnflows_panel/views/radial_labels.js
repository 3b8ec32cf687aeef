// Part of the ES module of attnflows_panel.views.radial.RadialFlow: radial.py joins radial.js, radial_labels.js,
// radial_data.js, radial_info.js, radial_svg.js and radial_hooks.js, in that order, into one module (one scope:
// the constants of radial.js hold here).


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

function quadT(g, T, x, y, w, h, ang) {  // a w×h rectangle centred on data (x, y), rotated by ang
  const c = Math.cos(ang), s = Math.sin(ang);
  const ux = c * w / 2, uy = s * w / 2, vx = -s * h / 2, vy = c * h / 2, S = T.S, ox = T.ox, oy = T.oy;
  g.moveTo(ox + (x - ux - vx) * S, oy - (y - uy - vy) * S);
  g.lineTo(ox + (x + ux - vx) * S, oy - (y + uy - vy) * S);
  g.lineTo(ox + (x + ux + vx) * S, oy - (y + uy + vy) * S);
  g.lineTo(ox + (x - ux + vx) * S, oy - (y - uy + vy) * S);
  g.closePath();
}

function inside(poly, x, y) {
  let c = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i], [xj, yj] = poly[j];
    if ((yi > y) !== (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) c = !c;
  }
  return c;
}
