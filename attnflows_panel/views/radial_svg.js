// Part of the ES module of attnflows_panel.views.radial.RadialFlow: radial.py joins radial.js, radial_labels.js,
// radial_data.js, radial_info.js, radial_svg.js and radial_hooks.js, in that order, into one module (one scope:
// the constants of radial.js hold here).


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
  arc(x, y, r, a0, a1, anticlockwise = false) {
    if (Math.abs(a1 - a0) >= 2 * Math.PI - 1e-6) { this.circles.push([x, y, r]); return; }
    const x0 = x + r * Math.cos(a0), y0 = y + r * Math.sin(a0), x1 = x + r * Math.cos(a1), y1 = y + r * Math.sin(a1);
    let extent = anticlockwise ? a0 - a1 : a1 - a0;  // as Canvas 2D sweeps it
    if (extent < 0) extent += 2 * Math.PI;
    const large = extent > Math.PI ? 1 : 0, sweep = anticlockwise ? 0 : 1;
    this.d += `${this.d ? "L" : "M"}${this._n(x0)} ${this._n(y0)}A${this._n(r)} ${this._n(r)} 0 ${large} ${sweep} ${this._n(x1)} ${this._n(y1)}`;
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

// The export of what is drawn (zoom included), for render: the SVG text with the legend beside it and both
// sentences in full below it, and the SVG / PNG (3x) downloads. `paint(recorder, true)` draws the view.
function exporter(V, model, root, paint) {

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

  return {svgString, exportSvg, exportPng};
}
