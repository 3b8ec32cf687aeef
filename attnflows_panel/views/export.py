"""Export the Attention Flows views as SVG or PNG, selection included, without a browser.

bertviz's users ask for a picture they can put in a paper; the browser's canvas only gives a PNG of one
plot. Here the server draws the sentence view, the radial Attention Flow view, the Sentence Context view
and the legend from the very columns it sends to the browser (coordinates, display states of the frozen
selection), onto one of two canvases with the same small drawing API:

- :class:`SvgCanvas` writes a standalone SVG (vector, text stays text);
- :class:`PngCanvas` rasterises with Pillow (a Bokeh dependency, so always installed) at 4× and
  downsamples to 3× the screen size (``PNG_SCALE``: labels stay sharp when a paper's figure is scaled).

Everything on screen is in the export: every ring label, the full text of the selected and traced
tokens (the screen's overlay), the level band, the frozen selection's highlight and the legend.

Both work offline. :func:`export_views` is what ``AttentionFlowsView.export()`` (the CLI, notebooks, tests)
calls; in the browser the radial view's own SVG/PNG buttons export what it draws.
"""

from __future__ import annotations

import io
import math
from xml.sax.saxutils import escape

import numpy as np

from attnflows_panel import FINETUNED_COLOR, PRETRAINED_COLOR

__all__ = ["SvgCanvas", "PngCanvas", "export_views", "FORMATS"]

FORMATS = ("svg", "png")
#: PNG pixels per screen pixel
PNG_SCALE = 3
_FONT = "DejaVu Sans, Helvetica Neue, Arial, sans-serif"


def _hex(color: str) -> tuple[int, int, int, int]:
    c = color.lstrip("#")
    if len(c) == 6:
        c += "ff"
    return tuple(int(c[i : i + 2], 16) for i in (0, 2, 4, 6))  # type: ignore[return-value]


class _Canvas:
    """What both canvases draw the same way: shapes made of polygons (each canvas has ``polygon``)."""

    def polygon(self, pts, fill, alpha=1.0):  # pragma: no cover - every canvas overrides it
        raise NotImplementedError

    def wedge(self, cx, cy, r0, r1, a0, a1, fill, alpha=1.0):
        """Annular wedge between screen angles a0 → a1 (radians, clockwise on screen since y is down)."""
        pts = []
        steps = max(2, int(abs(a1 - a0) / 0.1) + 1)
        for t in np.linspace(a0, a1, steps):
            pts.append((cx + r1 * math.cos(t), cy + r1 * math.sin(t)))
        for t in np.linspace(a1, a0, steps):
            pts.append((cx + r0 * math.cos(t), cy + r0 * math.sin(t)))
        self.polygon(pts, fill, alpha)


class SvgCanvas(_Canvas):
    """A page of ``width`` × ``height`` px (y down) that collects SVG elements."""

    def __init__(self, width: float, height: float, background: str = "#ffffff"):
        self.width, self.height = float(width), float(height)
        self.parts: list[str] = [
            f'<rect x="0" y="0" width="{self.width:.0f}" height="{self.height:.0f}" fill="{background}"/>'
        ]

    def _paint(self, color: str | None, alpha: float, kind: str) -> str:
        if color is None or alpha <= 0:
            return f'{kind}="none"'
        r, g, b, a = _hex(color)
        op = alpha * a / 255
        return f'{kind}="#{r:02x}{g:02x}{b:02x}"' + (f' {kind}-opacity="{op:.3g}"' if op < 1 else "")

    def group(self, label: str) -> None:
        self.parts.append(f"<!-- {escape(label)} -->")

    def rect(self, cx, cy, w, h, angle_deg=0.0, fill=None, alpha=1.0, stroke=None, stroke_alpha=1.0, stroke_width=1.0):
        tr = f' transform="rotate({angle_deg:.2f} {cx:.2f} {cy:.2f})"' if angle_deg else ""
        self.parts.append(
            f'<rect x="{cx - w / 2:.2f}" y="{cy - h / 2:.2f}" width="{w:.2f}" height="{h:.2f}"{tr} '
            f'{self._paint(fill, alpha, "fill")} {self._paint(stroke, stroke_alpha, "stroke")}'
            + (f' stroke-width="{stroke_width:.2g}"' if stroke else "") + "/>"
        )

    def line(self, x0, y0, x1, y1, color, alpha=1.0, width=1.0, cap="butt"):
        self.parts.append(
            f'<line x1="{x0:.2f}" y1="{y0:.2f}" x2="{x1:.2f}" y2="{y1:.2f}" {self._paint(color, alpha, "stroke")} '
            f'stroke-width="{width:.2g}" stroke-linecap="{cap}"/>'
        )

    def bezier(self, x0, y0, cx0, cy0, cx1, cy1, x1, y1, color, alpha=1.0, width=1.0):
        self.parts.append(
            f'<path d="M{x0:.1f} {y0:.1f}C{cx0:.1f} {cy0:.1f} {cx1:.1f} {cy1:.1f} {x1:.1f} {y1:.1f}" fill="none" '
            f'{self._paint(color, alpha, "stroke")} stroke-width="{width:.2g}"/>'
        )

    def circle(self, cx, cy, r, fill=None, alpha=1.0, stroke=None, stroke_alpha=1.0, stroke_width=1.0):
        self.parts.append(
            f'<circle cx="{cx:.2f}" cy="{cy:.2f}" r="{r:.2f}" {self._paint(fill, alpha, "fill")} '
            f'{self._paint(stroke, stroke_alpha, "stroke")}'
            + (f' stroke-width="{stroke_width:.2g}"' if stroke else "")
            + "/>"
        )

    def annulus(self, cx, cy, r0, r1, fill, alpha=1.0, stroke=None):
        rm, w = (r0 + r1) / 2, r1 - r0
        self.parts.append(
            f'<circle cx="{cx:.2f}" cy="{cy:.2f}" r="{rm:.2f}" fill="none" {self._paint(fill, alpha, "stroke")} '
            f'stroke-width="{w:.2f}"/>'
        )
        if stroke:
            for r in (r0, r1):
                self.circle(cx, cy, r, stroke=stroke, stroke_width=1.0)

    def polygon(self, pts, fill, alpha=1.0):
        d = " ".join(f"{x:.2f},{y:.2f}" for x, y in pts)
        self.parts.append(f'<polygon points="{d}" {self._paint(fill, alpha, "fill")}/>')

    def text(
        self, x, y, s, size, color="#222222", alpha=1.0, angle_deg=0.0, anchor="middle", baseline="middle", bold=False
    ):
        if not s:
            return
        tr = f' transform="rotate({angle_deg:.2f} {x:.2f} {y:.2f})"' if angle_deg else ""
        base = {"middle": "central", "alphabetic": "alphabetic", "top": "hanging"}[baseline]
        weight = ' font-weight="bold"' if bold else ""
        self.parts.append(
            f'<text x="{x:.2f}" y="{y:.2f}" font-size="{size:.3g}" text-anchor="{anchor}" dominant-baseline="{base}"'
            f'{tr}{weight} {self._paint(color, alpha, "fill")}>{escape(str(s))}</text>'
        )

    def to_bytes(self) -> bytes:
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" '
            f'width="{self.width:.0f}" height="{self.height:.0f}" '
            f'viewBox="0 0 {self.width:.0f} {self.height:.0f}" font-family="{_FONT}">'
        )
        return (head + "\n".join(self.parts) + "</svg>\n").encode("utf-8")


class PngCanvas(_Canvas):
    """The same API drawn with Pillow at ``scale``× and downsampled to ``out_scale``× (antialiasing)."""

    _fonts: dict = {}

    def __init__(self, width: float, height: float, background: str = "#ffffff", scale: int = 4,
                 out_scale: int = PNG_SCALE):
        from PIL import Image, ImageDraw

        self.s = scale
        self.out_scale = out_scale
        self.width, self.height = float(width), float(height)
        self.img = Image.new("RGB", (int(math.ceil(width * scale)), int(math.ceil(height * scale))), background)
        self.draw = ImageDraw.Draw(self.img, "RGBA")

    def _c(self, color, alpha):
        if color is None or alpha <= 0:
            return None
        r, g, b, a = _hex(color)
        return (r, g, b, int(round(255 * alpha * a / 255)))

    def _font(self, size: float, bold: bool = False):
        from PIL import ImageFont

        key = (round(size * self.s), bold)
        if key not in self._fonts:
            names = ["DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf", "LiberationSans-Regular.ttf"]
            font = None
            for nm in names:
                try:
                    font = ImageFont.truetype(nm, key[0])
                    break
                except OSError:
                    continue
            if font is None:
                font = ImageFont.load_default(size=key[0])
            self._fonts[key] = font
        return self._fonts[key]

    def group(self, label: str) -> None:
        pass

    def _pts(self, pts):
        return [(x * self.s, y * self.s) for x, y in pts]

    def polygon(self, pts, fill, alpha=1.0, outline=None):
        c = self._c(fill, alpha)
        if c is None and outline is None:
            return
        self.draw.polygon(self._pts(pts), fill=c, outline=outline)

    def rect(self, cx, cy, w, h, angle_deg=0.0, fill=None, alpha=1.0, stroke=None, stroke_alpha=1.0, stroke_width=1.0):
        t = math.radians(angle_deg)
        c, s = math.cos(t), math.sin(t)
        pts = []
        for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)):
            pts.append((cx + dx * c - dy * s, cy + dx * s + dy * c))
        if fill is not None:
            self.polygon(pts, fill, alpha)
        if stroke is not None:
            sc = self._c(stroke, stroke_alpha)
            if sc:
                self.draw.line(self._pts(pts + pts[:1]), fill=sc, width=max(1, int(round(stroke_width * self.s))))

    def line(self, x0, y0, x1, y1, color, alpha=1.0, width=1.0, cap="butt"):
        c = self._c(color, alpha)
        if c:
            self.draw.line(self._pts([(x0, y0), (x1, y1)]), fill=c, width=max(1, int(round(width * self.s))))

    def bezier(self, x0, y0, cx0, cy0, cx1, cy1, x1, y1, color, alpha=1.0, width=1.0):
        c = self._c(color, alpha)
        if not c:
            return
        t = np.linspace(0, 1, 10)[:, None]
        p = (
            ((1 - t) ** 3) * [x0, y0]
            + 3 * ((1 - t) ** 2) * t * [cx0, cy0]
            + 3 * (1 - t) * t * t * [cx1, cy1]
            + t ** 3 * [x1, y1]
        )
        self.draw.line(self._pts(p.tolist()), fill=c, width=max(1, int(round(width * self.s))))

    def circle(self, cx, cy, r, fill=None, alpha=1.0, stroke=None, stroke_alpha=1.0, stroke_width=1.0):
        s = self.s
        box = [(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s]
        sc = self._c(stroke, stroke_alpha) if stroke else None
        width = max(1, int(round(stroke_width * s))) if sc else 0
        self.draw.ellipse(box, fill=self._c(fill, alpha), outline=sc, width=width)

    def annulus(self, cx, cy, r0, r1, fill, alpha=1.0, stroke=None):
        s = self.s
        rm, w = (r0 + r1) / 2, r1 - r0
        box = [(cx - rm - w / 2) * s, (cy - rm - w / 2) * s, (cx + rm + w / 2) * s, (cy + rm + w / 2) * s]
        c = self._c(fill, alpha)
        if c:
            self.draw.ellipse(box, outline=c, width=max(1, int(round(w * s))))
        if stroke:
            for r in (r0, r1):
                self.circle(cx, cy, r, stroke=stroke)

    def text(
        self, x, y, s, size, color="#222222", alpha=1.0, angle_deg=0.0, anchor="middle", baseline="middle", bold=False
    ):
        from PIL import Image, ImageDraw

        if not s:
            return
        c = self._c(color, alpha)
        if c is None:
            return
        font = self._font(size, bold)
        left, top, right, bottom = font.getbbox(str(s))
        w, h = right - left + 2, int(size * self.s * 1.4) + 2
        tile = Image.new("RGBA", (int(w), int(h)), (0, 0, 0, 0))
        ImageDraw.Draw(tile).text((1 - left, h / 2), str(s), font=font, fill=c, anchor="lm")
        # anchor point inside the tile
        ax = {"start": 1.0, "middle": w / 2, "end": w - 1.0}[anchor]
        ay = {"middle": h / 2, "alphabetic": h / 2 + size * self.s * 0.35, "top": h / 2 - size * self.s * 0.5}[baseline]
        if angle_deg:
            # PIL rotates counter-clockwise; SVG's rotate (y down) is clockwise on screen
            rot = tile.rotate(-angle_deg, resample=Image.BICUBIC, expand=True)
            t = math.radians(-angle_deg)
            # where the anchor went: rotate (ax - w/2, ay - h/2) by the same angle, about the centre
            dx, dy = ax - w / 2, ay - h / 2
            rx = dx * math.cos(t) + dy * math.sin(t)
            ry = -dx * math.sin(t) + dy * math.cos(t)
            px = x * self.s - (rot.width / 2 + rx)
            py = y * self.s - (rot.height / 2 + ry)
            self.img.paste(rot, (int(round(px)), int(round(py))), rot)
        else:
            self.img.paste(tile, (int(round(x * self.s - ax)), int(round(y * self.s - ay))), tile)

    def to_bytes(self) -> bytes:
        from PIL import Image

        o = self.out_scale
        out = self.img.resize((int(round(self.width * o)), int(round(self.height * o))), Image.LANCZOS)
        buf = io.BytesIO()
        out.save(buf, format="PNG", optimize=False)
        return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# drawing the views from their Bokeh columns
# --------------------------------------------------------------------------------------------------


def _col(data: dict, key: str) -> np.ndarray:
    return np.asarray(data[key])


def _q(data: dict, key: str) -> np.ndarray:
    """A quantised (int16, tenths of a pixel) coordinate column back in pixels."""
    from attnflows_panel.views.flow import QUANT

    return np.asarray(data[key], dtype=np.float64) / QUANT


def _radial_columns(data, hl, level: int | None) -> dict[str, dict]:
    """The radial view's columns (:meth:`FlowData.sources`) with the display states of highlight ``hl``
    as the frozen states ``fz``, and its rings (the level band) and ticks."""
    from attnflows_panel.views.flow import LEVEL_BAND_FILL, LEVEL_BAND_LINE, compose_states

    S = data.sources()
    states = compose_states(data, hl)
    for key in ("nodes", "glyphs", "edges"):
        S[key]["fz"] = states[key]
    S["edges"]["ha"] = states["edge_alpha"]
    radii = data.layout.radii
    ch = data.style.cell_height(data.H)
    rings: dict[str, list] = {"r0": [], "r1": [], "fill": [], "fa": [], "line": []}
    for k in range(data.L):
        chosen = level is not None and k == level
        rings["r0"].append(radii[k] - ch / 2 - (3 if chosen else 0.3))
        rings["r1"].append(radii[k] + ch / 2 + (3 if chosen else 0.3))
        rings["fill"].append(LEVEL_BAND_FILL if chosen else "#f7f7f7")
        rings["fa"].append(1.0 if chosen else 0.55)
        rings["line"].append(LEVEL_BAND_LINE if chosen else None)
    S["rings"] = rings
    t = data.layout.ticks
    ang = np.arctan2(t["y1"] - t["y0"], t["x1"] - t["x0"]).to_numpy() if len(t) else np.zeros(0)
    r = (np.hypot(t["x1"], t["y1"]).to_numpy() + 8) if len(t) else np.zeros(0)
    S["ticks"] = {"x0": t["x0"].to_numpy() if len(t) else ang, "y0": t["y0"].to_numpy() if len(t) else ang,
                  "x1": t["x1"].to_numpy() if len(t) else ang, "y1": t["y1"].to_numpy() if len(t) else ang,
                  "tx": r * np.cos(ang), "ty": r * np.sin(ang),
                  "tl": [str(int(k) + 1) for k in t["level"]] if len(t) else [],
                  "tang": np.where(np.cos(ang) < 0, ang + np.pi, ang)}
    return S


class _ToPage:
    """Data units of the radial layout (y up, angles counter-clockwise) to page px of a ``W`` px square at
    (``ox``, ``oy``) (y down, angles clockwise in degrees); ``k`` px per data unit."""

    def __init__(self, extent: float, W: float, ox: float, oy: float):
        self.x0, self.y1 = -extent, extent  # the drawing fits ±extent
        self.k = W / (2 * extent)
        self.ox, self.oy = ox, oy

    def X(self, x):
        return self.ox + (np.asarray(x, dtype=np.float64) - self.x0) * self.k

    def Y(self, y):
        return self.oy + (self.y1 - np.asarray(y, dtype=np.float64)) * self.k

    @staticmethod
    def A(a):
        return -np.degrees(np.asarray(a, dtype=np.float64))


def _draw_radial(cv, data, hl, level: int | None, W: float, ox: float, oy: float) -> None:
    """The radial view of ``data`` with highlight ``hl`` (the frozen selection), ``W`` px square."""
    S = _radial_columns(data, hl, level)
    f = _ToPage(data.layout.extent, W, ox, oy)
    _draw_rings(cv, S, f)
    _draw_edges(cv, S, f)
    _draw_cells(cv, data, S, f)
    _draw_ring_labels(cv, data, S, f)


def _draw_rings(cv, S, f: _ToPage) -> None:
    """The level rings, the meeting ticks of the two sentences and the ring numbers."""
    X, Y, A, k = f.X, f.Y, f.A, f.k
    cx, cy = float(X(0.0)), float(Y(0.0))
    rings = S["rings"]
    for r0, r1, fill, fa, line in zip(rings["r0"], rings["r1"], rings["fill"], rings["fa"], rings["line"], strict=True):
        cv.annulus(cx, cy, r0 * k, r1 * k, fill, fa, stroke=line)
    t = S["ticks"]
    for a, b, c, d in zip(X(t["x0"]), Y(t["y0"]), X(t["x1"]), Y(t["y1"]), strict=True):
        cv.line(a, b, c, d, "#111111", 1.0, 3.2, cap="round")
    for tx, ty, tl, ta in zip(X(t["tx"]), Y(t["ty"]), t["tl"], A(t["tang"]), strict=True):
        cv.text(tx, ty, tl, 9, "#8a8a8a", angle_deg=ta)


def _draw_edges(cv, S, f: _ToPage) -> None:
    """The edges, highlighted ones on top."""
    from attnflows_panel.views.flow import EDGE_ALPHA, EDGE_COLORS, EDGE_WIDTH

    X, Y = f.X, f.Y
    e = S["edges"]
    st = _col(e, "fz")
    ea, ha = _col(e, "ea"), _col(e, "ha")
    order = np.argsort(np.where(st < 4, 1, 0), kind="stable")  # highlighted edges on top
    ex0, ey0, ex1, ey1 = X(_q(e, "x0")), Y(_q(e, "y0")), X(_q(e, "x1")), Y(_q(e, "y1"))
    ecx0, ecy0, ecx1, ecy1 = X(_q(e, "cx0")), Y(_q(e, "cy0")), X(_q(e, "cx1")), Y(_q(e, "cy1"))
    cv.group("edges")
    for i in order:
        s = int(st[i])
        alpha = ea[i] / 255 if 5 <= s <= 8 else (ha[i] / 255 if 1 <= s <= 3 else EDGE_ALPHA[s])
        if alpha <= 0.004:
            continue
        cv.bezier(ex0[i], ey0[i], ecx0[i], ecy0[i], ecx1[i], ecy1[i], ex1[i], ey1[i], EDGE_COLORS[s], alpha,
                  EDGE_WIDTH[s] * f.k)


def _draw_cells(cv, data, S, f: _ToPage) -> None:
    """Each token's cell: its halo, the sparkline box and baseline, its sparklines and its head glyphs."""
    from attnflows_panel.views.flow import (
        GLYPH_ALPHA,
        GLYPH_PALETTE,
        NODE_HALO_ALPHA,
        SINGLE_SPARK_COLOR,
        SPARK_ALPHA,
        STATE_COLORS,
    )

    X, Y, A, k = f.X, f.Y, f.A, f.k
    n = S["nodes"]
    nst = _col(n, "fz")
    cv.group("tokens")
    hx, hy, hr, ta = X(n["hx"]), Y(n["hy"]), _col(n, "hr") * k, A(n["ta"])
    for i in range(len(nst)):
        s = int(nst[i])
        if NODE_HALO_ALPHA[s] > 0:
            cv.circle(hx[i], hy[i], hr[i], STATE_COLORS[s], NODE_HALO_ALPHA[s])
    bx, by, bw, bh = X(n["bx"]), Y(n["by"]), _col(n, "bw") * k, _col(n, "bh") * k
    for i in range(len(nst)):
        a = SPARK_ALPHA[int(nst[i])]
        if bw[i] > 0:
            cv.rect(bx[i], by[i], bw[i], bh[i], ta[i], "#f4f4f4", a, "#dddddd", a, 0.5)
    sx0, sy0, sx1, sy1 = X(n["sx0"]), Y(n["sy0"]), X(n["sx1"]), Y(n["sy1"])
    for i in range(len(nst)):
        cv.line(sx0[i], sy0[i], sx1[i], sy1[i], "#b0b0b0", SPARK_ALPHA[int(nst[i])], 0.8)
    sp = S["sparks"]
    combined = data.comparison is not None
    spc = {0: "#7f7f7f", 1: PRETRAINED_COLOR, 2: FINETUNED_COLOR}
    spark_cols = (X(_q(sp, "x0")), Y(_q(sp, "y0")), X(_q(sp, "x1")), Y(_q(sp, "y1")), sp["model"], sp["node"])
    for a, b, c, d, m, nid in zip(*spark_cols, strict=True):
        cv.line(a, b, c, d, spc[int(m)] if combined else SINGLE_SPARK_COLOR, SPARK_ALPHA[int(nst[int(nid)])], 1.4)
    g = S["glyphs"]
    gst = _col(g, "fz")
    gs = data.style.glyph * k
    gw_all = np.where(_col(g, "part") == 0, gs, gs / 2)
    gta_all = A(_col(n, "ta")[_col(g, "node").astype(np.int64)])
    for gx, gy, gw, gta, gc, s in zip(X(_q(g, "x")), Y(_q(g, "y")), gw_all, gta_all, g["gc"], gst, strict=True):
        cv.rect(gx, gy, gw, gs, gta, GLYPH_PALETTE[int(gc)], GLYPH_ALPHA[int(s)])


def _draw_ring_labels(cv, data, S, f: _ToPage) -> None:
    """The tokens' labels along their rings; a traced or selected token whose label is short shows its full
    text on a white box (the layout's overlay tier), as on screen."""
    from attnflows_panel.views.flow import LABEL_ALPHA, NODE_TEXT

    X, Y = f.X, f.Y
    n = S["nodes"]
    nst = _col(n, "fz")
    ta = f.A(n["ta"])
    fs = data.style.font * f.k  # one font for every ring, as on screen at this size
    lx, ly = X(n["lx"]), Y(n["ly"])
    lstat = _col(n, "lstat")
    lit = np.array([(1 <= int(s) <= 3) or int(s) >= 9 for s in nst], dtype=bool)
    overlay = lit & (lstat < 2)  # traced or selected tokens whose ring label is short: their full text
    for i, lab in enumerate(n["label"]):
        if lab and not overlay[i]:
            cv.text(lx[i], ly[i], lab, fs, NODE_TEXT[int(nst[i])], LABEL_ALPHA[int(nst[i])], angle_deg=ta[i])
    olx, oly = X(n["olx"]), Y(n["oly"])  # the overlay's place (the layout's overlay tier), as on screen
    for i in np.flatnonzero(overlay):
        tok = n["token"][i]
        w = len(tok) * data.style.char_width * fs + 2
        cv.rect(olx[i], oly[i], w, fs * 1.25, ta[i], "#ffffff", 1.0)
        cv.text(olx[i], oly[i], tok, fs, NODE_TEXT[int(nst[i])], angle_deg=ta[i])


def _draw_sentence(cv, data, hl, level: int, alpha: float, ox: float, oy: float, width: float) -> float:
    """The Sentence view as ``sentence.js`` draws it at ``width`` (the same codes, states and slots);
    returns its height."""
    from attnflows_panel.layout import sentence_layout
    from attnflows_panel.views.flow import STATE_COLORS
    from attnflows_panel.views.sentence import (
        CIRCLE_ALPHA,
        CIRCLE_COLORS,
        CIRCLE_LINE,
        FONT_PX,
        TOKEN_HALO,
        TOKEN_TEXT,
        rating_codes,
        sentence_states,
    )

    lay = sentence_layout(data.tokens, data.segments, width=width, font_size=FONT_PX)
    t, c = lay.token_cols, lay.circle_cols
    st = sentence_states(data, hl)
    codes = rating_codes(data, level, alpha)
    lh = lay.line_height
    for x, y, w, s in zip(t["x"], t["y"], t["w"], st, strict=True):
        if TOKEN_HALO[int(s)]:
            cv.rect(ox + x, oy + y - lh / 2 + 4, w - 2, lh - 2, 0, STATE_COLORS[int(s)], TOKEN_HALO[int(s)])
    for x, y, tok, s in zip(t["x"], t["y"], t["token"], st, strict=True):
        cv.text(ox + x, oy + y, tok, FONT_PX, TOKEN_TEXT[int(s)], baseline="alphabetic")
    r = lay.radius + 0.75
    for x, y, p, slot in zip(c["x"], c["y"], c["pos"], c["slot"], strict=True):
        code, a = int(codes[p, slot]), CIRCLE_ALPHA[int(st[p])]
        cv.circle(ox + x, oy + y, r, CIRCLE_COLORS[code], a, CIRCLE_LINE[code], a, 0.8)
    return float(lay.height)


def _draw_context(cv, data, hl, level: int | None, ox: float, oy: float, size: float) -> None:
    """The Sentence Context view as ``context.js`` draws it in a ``size`` px square."""
    from attnflows_panel.views.context import (
        CONTEXT_ALPHA,
        RING_FILL,
        context_geometry,
        context_palette,
        context_states,
    )
    from attnflows_panel.views.flow import LEVEL_BAND_LINE

    lay, tick = context_geometry(data)
    k = size / (2 * lay.extent)
    cx, cy = ox + size / 2, oy + size / 2
    w = lay.wedge_cols
    n, L = data.n, data.L
    for lv in range(L):
        r0, r1 = w["inner"][lv * n] * k, w["outer"][lv * n] * k
        cv.annulus(cx, cy, r0, r1, RING_FILL, 1.0, stroke=LEVEL_BAND_LINE if level == lv else None)
    pal = context_palette(data)
    st = context_states(data, hl)
    nodes = data.columns("nodes")
    rows = nodes["level"].astype(np.int64) * n + nodes["pos"].astype(np.int64)
    for r0, r1, a0, a1, s in zip(w["inner"][rows], w["outer"][rows], w["start"][rows], w["end"][rows], st,
                                 strict=True):
        # data angles are counter-clockwise with y up; on screen (y down) they flip sign
        cv.wedge(cx, cy, r0 * k, r1 * k, -a1, -a0, pal[int(s)], CONTEXT_ALPHA[int(s)])
    cv.line(cx + tick[0] * k, cy - tick[1] * k, cx + tick[2] * k, cy - tick[3] * k, "#111111", 1.0, 2.5)


def _draw_legend(cv, data, ox: float, oy: float, level: int | None = None, width: float = 300) -> float:
    """The legend beside the view (:func:`~attnflows_panel.views.flow.legend_items`), drawn."""
    from attnflows_panel.views.flow import legend_items

    y = oy
    for kind, colors, text in legend_items(data, level):
        x = ox
        if kind == "swatch":
            cv.rect(x + 6, y + 6, 10, 10, 0, colors[0])
            x += 16
        elif kind == "split":
            cv.rect(x + 3.5, y + 6, 5, 10, 0, colors[0])
            cv.rect(x + 8.5, y + 6, 5, 10, 0, colors[1])
            x += 16
        elif kind == "ramp":
            for i, c in enumerate(colors):
                cv.rect(x + 5 + i * 10, y + 6, 9, 10, 0, c)
            x += 10 * len(colors) + 4
        elif kind == "spark":
            cv.line(x + 1, y + 12, x + 35, y + 12, "#b0b0b0", 1.0, 0.8)
            for px, h in ((6, 5), (18, 10), (22, 8), (30, 5)):
                cv.line(x + px, y + 12, x + px, y + 12 - h, colors[0], 1.0, 1.4)
            x += 38
        elif kind == "edge":
            cv.bezier(x + 1, y + 11, x + 12, y + 11, x + 24, y + 2, x + 35, y + 2, colors[0], 1.0, 1.0)
            x += 38
        elif kind == "band":
            cv.rect(x + 12, y + 6, 22, 9, 0, colors[0], 1.0, colors[1], 1.0, 1.0)
            x += 38
        # wrap long text to the legend's width
        words, line, lines = text.split(), "", []
        room = max(10, int((ox + width - x) / 6.2))
        for w in words:
            if len(line) + len(w) + 1 > room and line:
                lines.append(line)
                line = w
            else:
                line = f"{line} {w}".strip()
        lines.append(line)
        for j, ln in enumerate(lines):
            cv.text(x + 2, y + 6 + 14 * j, ln, 10.5, "#333333" if kind != "text" else "#666666", anchor="start")
        y += 14 * len(lines) + 5
    return y


def export_views(view, fmt: str = "svg") -> bytes:
    """The current views of an :class:`~attnflows_panel.views.attention_flows.AttentionFlowsView` (its
    frozen selection included) as one SVG or PNG page: title, sentence view on top, the radial Attention
    Flow view below, the Sentence Context view and the legend beside it."""
    fmt = str(fmt).lower()
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}; got {fmt!r}")
    data = view._data
    hl = view.highlight()
    pad = 12
    title_h = 40
    rw = int(view.size or 900)
    side = 300  # the context view's square and the legend's width
    width = rw + side + 3 * pad + 2 * pad
    # the sentence view across the page, as high as its lines at that width
    from attnflows_panel.layout import sentence_layout
    from attnflows_panel.views.sentence import FONT_PX

    sent_h = sentence_layout(data.tokens, data.segments, width=width - 2 * pad, font_size=FONT_PX).height
    height = title_h + int(sent_h) + pad + max(rw, side + 430) + 2 * pad
    cv = SvgCanvas(width, height) if fmt == "svg" else PngCanvas(width, height)
    r = view.result
    cv.text(pad, pad + 8, f"Attention Flows · {view.mode} · τ = {view.tau:.2f} · level {view.level + 1}", 14,
            anchor="start", bold=True)
    sub = f"A: {r.sentence_a}   B: {r.sentence_b}"
    cv.text(pad, pad + 26, sub[:160] + ("…" if len(sub) > 160 else ""), 11, "#555555", anchor="start")
    _draw_sentence(cv, data, hl, view.level, view.alpha, pad, title_h, width - 2 * pad)
    top = title_h + int(sent_h) + pad
    _draw_radial(cv, data, hl, view.level, rw, pad, top)
    _draw_context(cv, data, hl, view.level, pad * 2 + rw, top, side)
    y = _draw_legend(cv, data, pad * 2 + rw, top + side + pad, view.level, side)
    if view.status:
        cv.text(pad * 2 + rw, y + 10, view.status[:60], 10, "#555555", anchor="start")
    return cv.to_bytes()
