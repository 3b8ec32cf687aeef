// Attention Flows: the Sentence view (§4.2, Fig. 1(a)) as one Canvas 2D drawing.
//
// The ES module of attnflows_panel.views.sentence.SentenceView (a panel.custom.JSComponent). No imports, so
// it works offline in `panel serve`, in a notebook and in JupyterLab. Python sends what is drawn
// (model.data: tokens, segments, slot widths, the five circle codes per token, see sentence.py) and the
// tokens' display states (model.states); the browser wraps the slots into lines at its own width (sentence
// B starts a new line, as sentence_layout does), draws, shows a tooltip on hover, and reports a click
// through model.pick.

const FONT_FAMILY = "'DejaVu Sans', 'Helvetica Neue', Arial, sans-serif";

function get(obj, k) { return obj instanceof Map ? obj.get(k) : (obj ? obj[k] : undefined); }

export function render({model, el}) {
  const root = document.createElement("div");
  root.className = "attnflows-sentence";
  root.style.cssText = "position:relative;width:100%;box-sizing:border-box;overflow-y:auto;overflow-x:hidden;" +
    "font-family:" + FONT_FAMILY + ";background:#fff";
  const cap = document.createElement("div");
  cap.className = "attnflows-sentence-caption";
  cap.style.cssText = "font-size:12px;line-height:16px;color:#444;padding:2px 4px 0 4px";
  root.appendChild(cap);
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "display:block;cursor:pointer";
  root.appendChild(canvas);
  const tip = document.createElement("div");
  tip.className = "attnflows-sentence-tip";
  tip.style.cssText = "position:absolute;display:none;pointer-events:none;font-size:12px;line-height:16px;" +
    "background:rgba(255,255,255,0.95);border:1px solid #bbb;border-radius:3px;padding:1px 5px;color:#222;" +
    "white-space:nowrap;z-index:2";
  root.appendChild(tip);
  el.style.width = "100%";
  el.style.display = "block";
  el.appendChild(root);
  const ctx = canvas.getContext("2d");

  const V = {D: null, st: null, w: 0, h: 0, dpr: window.devicePixelRatio || 1, slots: null, rows: 0, hover: -1};

  function load() {
    const raw = model.data;
    if (!raw || get(raw, "n") == null) { V.D = null; return; }
    const D = {};
    const keys = raw instanceof Map ? Array.from(raw.keys()) : Object.keys(raw);
    for (const k of keys) D[k] = get(raw, k);
    D.tok = String(D.tokens || "").split("\n");
    V.D = D;
    V.hover = -1;
    cap.textContent = D.caption || "";
    loadStates();
  }

  function loadStates() {
    const D = V.D, s = get(model.states, "st");
    V.st = D && s && s.length === D.n ? s : null;
    root.setAttribute("data-states", V.st ? Array.from(V.st).join(",") : "");
  }

  function state(p) { return V.st ? V.st[p] : 5; }

  // the slots wrapped at the current width: [x, row] per token (sentence_layout's rule)
  function wrap(width) {
    const D = V.D, n = D.n, pad = 6;
    const xs = new Float32Array(n), rows = new Int32Array(n);
    let x = pad, row = 0, prev = -1;
    for (let p = 0; p < n; p++) {
      const w = D.w[p], s = D.segs[p];
      if (prev >= 0 && (s !== prev || x + w > width - pad)) { row += 1; x = pad; }
      xs[p] = x; rows[p] = row; x += w; prev = s;
    }
    return {xs, rows, count: n ? row + 1 : 0};
  }

  function layout() {
    const D = V.D;
    const width = Math.max(120, Math.round(root.clientWidth || el.clientWidth || 300));
    V.slots = wrap(width);
    V.rows = V.slots.count;
    const h = Math.round(Math.max(1, V.rows) * D.line_height + 6);
    V.dpr = window.devicePixelRatio || 1;
    V.w = width; V.h = h;
    canvas.width = Math.round(width * V.dpr); canvas.height = Math.round(h * V.dpr);
    canvas.style.width = `${width}px`; canvas.style.height = `${h}px`;
    root.setAttribute("data-rows", String(V.rows));
    root.setAttribute("data-width", String(width));
  }

  function draw() {
    const D = V.D;
    if (!D) { root.setAttribute("data-ready", "0"); return; }
    layout();
    ctx.setTransform(V.dpr, 0, 0, V.dpr, 0, 0);
    ctx.clearRect(0, 0, V.w, V.h);
    const lh = D.line_height, font = D.font, r = D.radius, cw = 2 * r + 1, cwAll = 5 * cw;
    const {xs, rows} = V.slots;
    ctx.font = `${font}px ${FONT_FAMILY}`;
    ctx.textAlign = "center";
    ctx.textBaseline = "alphabetic";
    for (let p = 0; p < D.n; p++) {
      const s = state(p), w = D.w[p], cx = xs[p] + w / 2, y = (rows[p] + 1) * lh - 4;
      const halo = D.halo_alpha[s];
      if (halo > 0) {
        ctx.globalAlpha = halo;
        ctx.fillStyle = D.halo_colors[s];
        ctx.fillRect(cx - (w - 2) / 2, y - lh / 2 + 4 - (lh - 2) / 2, w - 2, lh - 2);
      }
      ctx.globalAlpha = 1;
      ctx.fillStyle = D.token_text[s];
      ctx.fillText(D.tok[p], cx, y);
      if (D.band) {  // a decoder's role (system, user, assistant, ...): a line under the token in its colour
        ctx.fillStyle = D.band_colors[D.band[p]];
        ctx.fillRect(xs[p] + 1, y + 2, w - 2, 2);
      }
      const cy = y - font - r - 2, a = D.circle_alpha[s];
      ctx.globalAlpha = a;
      ctx.lineWidth = 0.8;
      for (let j = 0; j < 5; j++) {
        const code = D.codes[p * 5 + j], x = cx - cwAll / 2 + (j + 0.5) * cw;
        ctx.beginPath();
        ctx.arc(x, cy, r + 0.75, 0, 2 * Math.PI);
        ctx.fillStyle = D.circle_colors[code];
        ctx.fill();
        ctx.strokeStyle = D.circle_line[code];
        ctx.stroke();
      }
      ctx.globalAlpha = 1;
    }
    root.setAttribute("data-n", String(D.n));
    root.setAttribute("data-font-px", String(font));
    root.setAttribute("data-ready", "1");
  }

  function tokenAt(mx, my) {  // canvas CSS px -> token position or -1
    const D = V.D;
    if (!D || !V.slots) return -1;
    const row = Math.floor(my / D.line_height);
    const {xs, rows} = V.slots;
    for (let p = 0; p < D.n; p++) {
      if (rows[p] === row && mx >= xs[p] && mx < xs[p] + D.w[p]) return p;
    }
    return -1;
  }

  function rating(p) {
    const D = V.D;
    return D.combined ? `pre ${D.r_pre[p]} / fine ${D.r_fine[p]}` : String(D.rating[p]);
  }

  function onMove(ev) {
    const b = canvas.getBoundingClientRect();
    const p = tokenAt(ev.clientX - b.left, ev.clientY - b.top);
    V.hover = p;
    root.setAttribute("data-hover", p >= 0 ? String(p) : "");
    if (p < 0) { tip.style.display = "none"; return; }
    const D = V.D;
    const role = D.band ? ` · ${D.band_labels[D.band[p]]}` : "";
    tip.textContent = `${D.tok[p]} · position ${p + 1}${role} · rating ${rating(p)}`;
    tip.style.display = "block";
    const rb = root.getBoundingClientRect();
    const x = ev.clientX - rb.left + root.scrollLeft, y = ev.clientY - rb.top + root.scrollTop;
    tip.style.left = `${Math.max(0, Math.min(x + 10, V.w - tip.offsetWidth - 2))}px`;
    tip.style.top = `${y + 14}px`;
  }

  canvas.addEventListener("mousemove", onMove);
  canvas.addEventListener("mouseleave", () => { V.hover = -1; tip.style.display = "none"; root.setAttribute("data-hover", ""); });
  canvas.addEventListener("click", (ev) => {
    const b = canvas.getBoundingClientRect();
    const p = tokenAt(ev.clientX - b.left, ev.clientY - b.top);
    if (p < 0) return;
    const seq = ((model.pick && get(model.pick, "seq")) || 0) + 1;
    model.pick = {pos: p, seq};
  });

  // test hooks: the tokens' boxes in page coordinates and the circle codes drawn
  root.attnflowsTokens = () => {
    const D = V.D;
    if (!D || !V.slots) return [];
    const b = canvas.getBoundingClientRect(), out = [];
    for (let p = 0; p < D.n; p++) {
      out.push({pos: p, x: b.left + V.slots.xs[p], y: b.top + (V.slots.rows[p] + 0.5) * D.line_height,
                w: D.w[p], h: D.line_height, state: state(p)});
    }
    return out;
  };
  root.attnflowsCodes = () => (V.D ? Array.from(V.D.codes) : []);
  // the role band of every token (a decoder's segments), [] without
  root.attnflowsBands = () => (V.D && V.D.band ? Array.from(V.D.band) : []);

  model.on("data", () => { load(); draw(); });
  model.on("states", () => { loadStates(); draw(); });
  model.on("pick", () => {});
  function applyHeight() { root.style.maxHeight = model.scroll_height || "none"; }
  model.on("scroll_height", applyHeight);
  applyHeight();
  let lastW = 0;
  const ro = new ResizeObserver(() => {
    const w = Math.round(root.clientWidth);
    if (w !== lastW) { lastW = w; draw(); }
  });
  ro.observe(root);
  model.on("remove", () => ro.disconnect());
  load();
  draw();
}

export default {render};
