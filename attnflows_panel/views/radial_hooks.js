// Part of the ES module of attnflows_panel.views.radial.RadialFlow: radial.py joins radial.js, radial_labels.js,
// radial_data.js, radial_info.js, radial_svg.js and radial_hooks.js, in that order, into one module (one scope:
// the constants of radial.js hold here).


// The component's test hooks on its root element (radial.py's docstring), for render: `view` holds its
// state V and the functions the hooks call.
function installHooks(root, view) {
  const {V, draw, state, tf, toScreen, scale, svgString} = view;
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
  root.attnflowsScreen = (x, y) => toScreen(x, y);  // a data point in CSS px of the root element, as drawn now
  // the folded runs in the window: their middle on the page (client px) and in data units (dx, dy), level,
  // count and token range
  root.attnflowsRuns = () => {
    const D = V.D, out = [];
    if (!D || !D.r_level) return out;
    const r = root.getBoundingClientRect();
    for (let i = 0; i < D.r_level.length; i++) {
      const rad = D.radii[D.r_level[i]], mid = (D.r_a0[i] + D.r_a1[i]) / 2;
      const [x, y] = toScreen(rad * Math.cos(mid), rad * Math.sin(mid));
      if (x < 0 || y < 0 || x > V.w || y > V.h) continue;
      out.push({i, level: D.r_level[i], count: D.r_count[i], first: D.r_first[i], last: D.r_last[i],
                x: r.left + x, y: r.top + y, arc: Math.abs(D.r_a1[i] - D.r_a0[i]) * rad * scale(),
                dx: rad * Math.cos(mid), dy: rad * Math.sin(mid)});
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
}
