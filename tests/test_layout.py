"""Radial geometry of the Attention Flows views (layout.py): angles, rings, cells, curves, legibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnflows_panel.layout import (
    RadialStyle,
    context_layout,
    edge_curves,
    fit_label,
    glyph_grid,
    radial_layout,
    reading_frame,
    ring_angles,
    ring_radii,
    sentence_layout,
    sparkline_segments,
    text_width,
)

TWO_PI = 2 * math.pi


def _dense_levels(L: int, n: int, rng) -> list[np.ndarray]:
    """BERT-base-like worst case: every ring holds (almost) every token."""
    levels = [np.sort(rng.choice(np.arange(1, n), size=n - 1 - rng.integers(0, 4), replace=False)) for _ in range(L)]
    return levels + [np.array([0])]


def _tokens(n: int) -> tuple[list[str], list[int]]:
    words = ["the", "percentage", "of", "wireless", "power", "transmission", "demonstrates", "light",
             "jacksonvillians", "or", "jaxons"]
    half = n // 2
    toks = ["[CLS]"] + [words[i % len(words)] for i in range(1, half)] + ["[SEP]"]
    toks += [words[(3 * i) % len(words)] for i in range(half + 1, n - 1)] + ["[SEP]"]
    return toks, [0] * (half + 1) + [1] * (n - half - 1)


def test_ring_angles_a_clockwise_b_counter_clockwise_from_the_same_start():
    ang, meet = ring_angles([0, 0, 0, 1], start_angle=180.0)  # 4 slots of 90°
    deg = np.degrees(ang) % 360
    assert deg.tolist() == pytest.approx([135.0, 45.0, 315.0, 225.0])  # A: 135, 45, -45; B: 225
    assert math.degrees(meet) % 360 == pytest.approx(270.0)
    # one sentence only: it goes all the way round and meets itself at the start
    ang, meet = ring_angles([0, 0], start_angle=90.0)
    assert (np.degrees(ang) % 360).tolist() == pytest.approx([0.0, 180.0])
    assert math.degrees(meet) % 360 == pytest.approx(90.0)
    assert ring_angles([], 180.0)[0].size == 0


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=0, max_value=TWO_PI, allow_nan=False))
def test_labels_are_always_upright_and_frames_orthonormal(angle):
    u, v, ta = reading_frame(np.array([angle]))
    assert math.cos(ta[0]) >= -1e-9  # text never upside down
    assert np.dot(u[0], v[0]) == pytest.approx(0, abs=1e-12)
    # u is tangent to the ring, v radial
    radial = np.array([math.cos(angle), math.sin(angle)])
    assert abs(np.dot(u[0], radial)) < 1e-9 and abs(abs(np.dot(v[0], radial)) - 1) < 1e-9
    # the text direction is the reading direction u
    assert (math.cos(ta[0]), math.sin(ta[0])) == pytest.approx(tuple(u[0]), abs=1e-9)


def test_ring_radii_give_every_token_its_slot_and_keep_rings_apart():
    style = RadialStyle()
    sizes = [80] * 9 + [77, 34, 6, 1]
    radii = ring_radii(sizes, 12, style, root_radius=25.0)
    assert radii[12] == 0
    assert np.all(np.diff(radii[::-1]) >= style.band - 1e-9)  # outward, at least a band apart
    for k in range(12):  # cells fit at the smallest cell scale
        assert TWO_PI * radii[k] / sizes[k] >= style.slot_min(12) * style.cell_min - 1e-9
    # the rings use the disc: the outermost ring reaches the design radius
    assert radii[0] >= style.radius - 1e-6


def test_ring_radii_follow_content():
    """A dense ring gets more circumference than a sparse neighbour would give it, and sparse rings do not
    hold the room: the issue's 113-token pair (outer rings of 87 and 77 tokens, sparse inner rings)."""
    style = RadialStyle()
    sizes = [87, 77, 40, 20, 12, 8, 6, 5, 4, 3, 2, 2, 1]
    radii = ring_radii(sizes, 12, style, root_radius=25.0)
    # the two dense outer rings take the outside of the disc: no thin band between crowded rings ...
    assert radii[0] >= 0.95 * style.radius and radii[1] >= 0.85 * style.radius
    # ... and every ring gets at least as much arc per token as the densest ring (none squeezed)
    per_token = TWO_PI * radii[:12] / np.asarray(sizes[:12])
    assert per_token.argmin() in (0, 1)
    # a ring twice as dense at the same place moves out
    dense = list(sizes)
    dense[6] = 60
    r2 = ring_radii(dense, 12, style, root_radius=25.0)
    assert r2[6] > radii[6] + style.band
    assert np.all(np.diff(r2[::-1]) >= style.band - 1e-9)


def _label_intervals(lay, k):
    """(centre angle, half-angle) of every label shown on ring k: the straight label, tangent at its
    token's angle, as wide as its text (plus half the ring's label gap)."""
    nodes = lay.nodes
    ring = nodes[(nodes["level"] == k) & (nodes["ring_label"] != "")]
    st = lay.style
    r = lay.radii[k]
    w = ring["ring_label"].str.len().to_numpy() * st.char_width * st.font
    return ring["angle"].to_numpy(), np.arctan((w + st.label_pad) / 2 / r)


def _overlaps(centres, halves) -> int:
    n = 0
    for i in range(len(centres)):
        for j in range(i + 1, len(centres)):
            d = abs((centres[i] - centres[j] + math.pi) % TWO_PI - math.pi)
            n += d < halves[i] + halves[j] - 1e-9
    return n


def test_dense_bert_base_layout_is_legible():
    """12 rings of ~80 tokens: cells fit their slots, labels of a ring never overlap, one font for every
    ring, every label is its token or a prefix of it with an ellipsis, and outer rings keep words."""
    rng = np.random.default_rng(0)
    n = 82
    tokens, segments = _tokens(n)
    levels = _dense_levels(12, n, rng)
    lay = radial_layout(levels, tokens, segments, 12)
    nodes = lay.nodes
    st = lay.style
    assert nodes["font_size"].nunique() == 1 and nodes["font_size"].iloc[0] >= 9
    runs = lay.runs
    for k in range(12):
        ring = nodes[nodes["level"] == k]
        units = len(ring) + st.run_slot * int((runs["level"] == k).sum())
        slot = TWO_PI * lay.radii[k] / units
        cs = ring["cs"].iloc[0]
        assert (ring["cs"] == cs).all() and st.cell_min <= cs <= 1
        if cs > st.cell_min:  # glyph block + sparkline fit the slot, scaled with the ring's cells
            assert (ring["cw"] + st.slot_pad * cs <= slot + 1e-6).all(), k
        assert np.allclose(2 * ring["half"] * lay.radii[k], slot)
        assert _overlaps(*_label_intervals(lay, k)) == 0, k
        for lab, tok, stat in zip(ring["ring_label"], ring["token"], ring["lstat"], strict=True):
            assert (stat == 2) == (lab == tok) and (stat == 0) == (lab == "")
            if stat == 1:
                assert lab.endswith("…") and tok.startswith(lab[:-1]) and len(lab) >= 4
    report = lay.label_report()
    assert [r["tokens"] for r in report] == [len(lv) for lv in levels]
    assert all(r["full"] + r["truncated"] + r["hidden"] == r["tokens"] for r in report)
    # the outer rings show most of their words in full
    assert report[0]["full"] >= 0.5 * report[0]["tokens"]
    # the drawing stays within the 1600 px the view allows at BERT-base density
    assert 2 * lay.extent < 1600


def test_labels_follow_priority_not_length():
    """A ring too small for every label shows the most important ones in full, whatever their length."""
    tokens = ["[CLS]"] + ["transmission", "a", "of", "wireless", "demonstrates", "on", "by", "percentage"] * 3
    n = len(tokens)
    segments = [0] * 13 + [1] * (n - 13)
    ring = np.arange(1, n)
    prio = np.zeros((2, n))
    long_ones = [p for p in ring if len(tokens[p]) > 8]
    prio[0, long_ones] = 1.0 + np.arange(len(long_ones))  # the long words matter most
    small = RadialStyle(radius=100.0)  # a small disc: the ring is crowded at the design size
    lay = radial_layout([ring, np.array([0])], tokens, segments, 12, small, priority=prio)
    nodes = lay.nodes.set_index("pos")
    top = max(long_ones, key=lambda p: prio[0, p])
    assert nodes.loc[top, "lstat"] == 2
    rep = lay.label_report()[0]
    assert rep["hidden"] + rep["truncated"] > 0  # the ring is crowded ...
    assert sum(nodes.loc[p, "lstat"] == 2 for p in long_ones) >= 3  # ... yet long, important words are whole
    assert _overlaps(*_label_intervals(lay, 0)) == 0
    # a WordPiece continuation reads as a suffix alone, and its word's label covers it where both show
    lay2 = radial_layout([np.array([1, 2]), np.array([0])], ["[CLS]", "vacc", "##ine"], [0, 0, 0], 12)
    assert lay2.nodes["token"].tolist()[:2] == ["vacc", "-ine"]
    assert lay2.nodes["label"].tolist()[:2] == ["vaccine", ""]
    with pytest.raises(ValueError, match="priority"):
        radial_layout([ring, np.array([0])], tokens, segments, 12, priority=np.zeros((3, n)))


def test_fit_label_shortens_or_drops():
    assert fit_label("wireless", 100, 10) == "wireless"
    short = fit_label("transmission", 40, 10)
    assert short.endswith("…") and len(short) >= 4 and text_width(short, 10) <= 40
    assert fit_label("transmission", 12, 10) == ""


def test_radial_layout_rejects_bad_levels():
    tokens, segments = _tokens(6)
    with pytest.raises(ValueError, match="outside"):
        radial_layout([np.array([1, 9]), np.array([0])], tokens, segments, 4)
    with pytest.raises(ValueError, match="root"):
        radial_layout([np.array([1]), np.array([0, 1])], tokens, segments, 4)
    with pytest.raises(ValueError, match="segment"):
        radial_layout([np.array([1]), np.array([0])], tokens, segments[:-1], 4)
    with pytest.raises(ValueError, match="at least one layer"):
        radial_layout([np.array([0])], tokens, segments, 4)


def test_glyph_grid_wraps_heads_into_three_rows_inside_the_block():
    tokens, segments = _tokens(10)
    lay = radial_layout([np.arange(1, 9), np.array([2, 4]), np.array([0])], tokens, segments, 12)
    g = glyph_grid(lay, 12)
    st = lay.style
    assert len(g) == len(lay.nodes) * 12
    pitch = st.glyph + st.glyph_gap
    node = lay.nodes.iloc[3]
    sub = g[g["node"] == node["node"]]
    # position in the node's reading frame
    du = (sub["x"] - node["x"]) * node["ux"] + (sub["y"] - node["y"]) * node["uy"]
    dv = (sub["x"] - node["x"]) * node["vx"] + (sub["y"] - node["y"]) * node["vy"]
    dv = dv - node["gv"]  # the block is centred on gv
    assert sorted(set(np.round(dv, 6))) == pytest.approx(sorted({pitch, 0.0, -pitch}))  # 3 rows
    assert len(set(np.round(du, 6))) == 4  # 4 columns
    # heads 0-3 in the top row, left to right
    top = sub[np.isclose(dv, pitch)]
    assert top["head"].tolist() == [0, 1, 2, 3]
    assert np.all(np.diff(du[np.isclose(dv, pitch)]) > 0)


@pytest.mark.parametrize("H, rows, cols", [(1, 1, 1), (9, 3, 3), (12, 3, 4), (14, 3, 5), (24, 3, 8), (32, 4, 8)])
def test_glyph_grid_fits_any_head_count(H, rows, cols):
    """Issue #28, 4: a decoder's heads (9 in SmolLM2-135M, 14 in Qwen2.5-0.5B, 32 in Llama-3.2-1B) wrap into
    at most 8 columns; every head has its own place in its block, and the block stays near square."""
    tokens, segments = _tokens(12)
    lay = radial_layout([np.arange(1, 11), np.array([2, 4]), np.array([0])], tokens, segments, H)
    st = lay.style
    assert (st.glyph_grid_rows(H), st.glyph_cols(H)) == (rows, cols)
    g = glyph_grid(lay, H)
    node = lay.nodes.iloc[3]
    sub = g[g["node"] == node["node"]]
    du = (sub["x"] - node["x"]) * node["ux"] + (sub["y"] - node["y"]) * node["uy"]
    dv = (sub["x"] - node["x"]) * node["vx"] + (sub["y"] - node["y"]) * node["vy"] - node["gv"]
    places = set(zip(np.round(du, 4), np.round(dv, 4), strict=True))
    assert len(places) == H and len(set(np.round(dv, 4))) == rows and len(set(np.round(du, 4))) == cols
    w, h = st.glyph_block(H)
    assert np.all(np.abs(dv) <= h / 2 + 1e-9) and w <= 8 * (st.glyph + st.glyph_gap)


def test_edge_curves_stay_between_the_two_rings():
    tokens, segments = _tokens(40)
    levels = [np.arange(1, 40), np.arange(1, 40, 2), np.array([0])]
    lay = radial_layout(levels, tokens, segments, 12)
    idx = lay.node_index(40)
    up = idx[1, np.arange(1, 40, 2)]
    # join every upper token with tokens all round the ring, up to half a turn away
    uu = np.repeat(up, 39)
    vv = np.tile(idx[0, np.arange(1, 40)], len(up))
    c = edge_curves(lay, uu, vv)
    nodes = lay.nodes
    r_lo = nodes["r_out"].to_numpy()[uu]
    r_hi = nodes["r_in"].to_numpy()[vv]
    assert np.allclose(np.hypot(c["x0"], c["y0"]), r_lo) and np.allclose(np.hypot(c["x1"], c["y1"]), r_hi)
    t = np.linspace(0, 1, 21)[:, None]
    px = (1 - t) ** 3 * c["x0"] + 3 * (1 - t) ** 2 * t * c["cx0"] + 3 * (1 - t) * t ** 2 * c["cx1"] + t ** 3 * c["x1"]
    py = (1 - t) ** 3 * c["y0"] + 3 * (1 - t) ** 2 * t * c["cy0"] + 3 * (1 - t) * t ** 2 * c["cy1"] + t ** 3 * c["y1"]
    r = np.hypot(px, py)
    gap = r_hi - r_lo
    assert np.all(r >= r_lo - 0.1 * gap) and np.all(r <= r_hi + 0.1 * gap)


def test_sparkline_bars_encode_relative_position_and_head_count():
    tokens, segments = _tokens(10)
    lay = radial_layout([np.arange(1, 9), np.array([2, 4]), np.array([0])], tokens, segments, 12)
    node = int(lay.nodes.iloc[2]["node"])
    seg = sparkline_segments(lay, [node], [np.array([-1.0, 0.0, 1.0])], [np.array([1, 3, 7])])
    row = lay.nodes.iloc[2]
    du = (seg["x0"] - row["sx0"]) * row["ux"] + (seg["y0"] - row["sy0"]) * row["uy"]
    assert du.tolist() == pytest.approx([0.0, row["sw"] / 2, row["sw"]])  # left end, middle, right end
    h = np.hypot(seg["x1"] - seg["x0"], seg["y1"] - seg["y0"])
    # 1, 2, 3+ heads: half, three quarters, all of the sparkline's height (a single head stays visible)
    assert h.tolist() == pytest.approx([lay.style.spark_height / 2, lay.style.spark_height, lay.style.spark_height])


def test_context_layout_angle_is_sentence_position():
    segs = [0, 0, 0, 1, 1]
    lay = context_layout(3, segs, radius=100.0, start_angle=180.0)
    w = lay.wedges
    assert len(w) == 3 * 5
    mid = ((w["start"] + w["end"]) / 2).to_numpy()
    for p in range(5):
        assert np.allclose(mid[(w["pos"] == p) & (w["level"] < 2)], lay.angles[p])
    assert w[w["level"] == 0]["inner"].min() > w[w["level"] == 1]["outer"].max()  # level 0 outermost


def test_sentence_layout_wraps_and_starts_b_on_a_new_line():
    toks = ["[CLS]"] + ["word"] * 30 + ["[SEP]"] + ["other"] * 5 + ["[SEP]"]
    segs = [0] * 32 + [1] * 6
    lay = sentence_layout(toks, segs, width=400)
    t = lay.tokens
    assert (t["x"] + t["w"] / 2 <= 400).all()
    first_b = t[t["seg"] == 1]["row"].min()
    assert first_b > t[t["seg"] == 0]["row"].max()
    for _, row_df in t.groupby("row"):
        xs = row_df.sort_values("x")
        assert ((xs["x"] - xs["w"] / 2).to_numpy()[1:] >= (xs["x"] + xs["w"] / 2).to_numpy()[:-1] - 1e-9).all()
    assert len(lay.circles) == 5 * len(toks)
