// Part of the ES module of attnflows_panel.views.radial.RadialFlow: radial.py joins radial.js, radial_labels.js,
// radial_data.js, radial_info.js, radial_svg.js and radial_hooks.js, in that order, into one module (one scope:
// the constants of radial.js hold here).


// --------------------------------------------------------------------------- hover: hits and info

function hitTest(D, X, x, y, S) {
  // what lies under data point (x, y) at scale S: a head glyph {kind: "glyph", row}, a token {kind: "node",
  // id}, a folded run {kind: "run", i} or null
  const slack = Math.max(0.3, 1 / S);
  // within 2 px of a token's centre (the point attnflowsPoints gives): the token, even where a glyph is there
  for (let u = 0; u < X.N; u++) if (Math.hypot(D.n_hx[u] - x, D.n_hy[u] - y) <= 2 / S) return {kind: "node", id: u};
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
  return best >= 0 ? {kind: "node", id: best} : hitRun(D, x, y, S);
}

function hitRun(D, x, y, S) {  // a folded run's arc under data point (x, y): {kind: "run", i} or null
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

function traceOf(D, X, h, shift) {
  // the trace of a hovered token or head glyph h (shift: a glyph's head in both models), as the frozen
  // highlight: per node its model codes and whether it is the origin, per edge its codes, per glyph row lit.
  // Its arrays are the data's own, reused by the next hover (a hover allocates nothing: at 512 tokens they
  // were ~170 KB a hover, and the collections they caused showed in the slowest hovers)
  const tb = X.traceBuf || (X.traceBuf = {codes: new Uint8Array(X.N), origin: new Uint8Array(X.N),
                                          ecodes: new Uint8Array(X.E), gon: new Uint8Array(X.G)});
  const codes = tb.codes, origin = tb.origin;
  codes.fill(0); origin.fill(0);
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
  const {ecodes, gon} = markEdges(X, codes, restrict, tb.ecodes, tb.gon);
  return {codes, origin, ecodes, gon, node};
}

function rating(v) {
  const r = Math.max(0, Math.min(5, Math.ceil(v - 1e-9)));
  return "\u25cf".repeat(r) + "\u25cb".repeat(5 - r);
}

function widthText(w) {
  // bottleneck.describe_width: the tau below which a node of widest-path width w is in the graph, cut
  // (not rounded up) to 2 significant digits
  if (!(w >= 0)) return "";
  if (!isFinite(w)) return "in the graph at every \u03c4";
  if (w === 0) return "in the graph at no \u03c4";
  const e = Math.floor(Math.log10(w)), q = Math.pow(10, e - 1);
  return `in the graph for \u03c4 < ${(Math.floor(w / q + 1e-9) * q).toFixed(Math.max(0, 1 - e))}`;
}

function infoHtml(D, h) {
  // the info box's HTML for a hover h (null: the help line)
  if (!D) return "";
  if (!h) {
    const roles = D.role_names ? "<br>ring tint: " + D.role_names.map((r, i) =>
      `<span style="color:${D.role_colors[i]};font-weight:600">${esc(r)}</span>`).join(" \u00b7 ") : "";
    // the view's notice (AttentionFlowsView.reach_notice): why the rings stand bare, and what to do
    const notice = D.notice ? `<b style="color:#8a4b00">${esc(D.notice)}</b><br>` : "";
    return notice + "<span style='color:#777'>Hover a token or head glyph \u00b7 click: freeze \u00b7 " +
      "shift-click two rings: the paths between them \u00b7 wheel: zoom \u00b7 grey arc +N: N folded " +
      "tokens (hover it)</span>" + roles;
  }
  if (h.kind === "run") {
    const i = h.i, toks = [];
    for (let p = D.r_first[i]; p <= D.r_last[i] && toks.length < 40; p++) toks.push(esc(D.tokens[p]));
    const more = D.r_last[i] - D.r_first[i] + 1 > toks.length ? " \u2026" : "";
    return `<b>${D.r_count[i]} token(s) folded</b> at level ${D.r_level[i] + 1} of ${D.L + 1} ` +
      `(not reached by the graph there): tokens ${D.r_first[i] + 1}\u2013${D.r_last[i] + 1}<br>` +
      `<span style="color:#555">${toks.join(" ").replace(/ -(?=\S)/g, "")}${more}</span>`;
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
      const width = D[`n_b${c}`];  // the node's widest-path width in this model (the view adds it)
      lines.push(`<span style="color:${MODEL_COLOR[c]}">${name}</span>: influence I = ${col[u].toFixed(2)} ` +
        `<span style="color:${MODEL_COLOR[c]}">${rating(col[u])}</span>` +
        (width ? ` \u00b7 <span class="af-width">${widthText(width[u])}</span>` : ""));
    }
  } else {
    lines.push("the root: the classification output");
  }
  return lines.join("<br>");
}
