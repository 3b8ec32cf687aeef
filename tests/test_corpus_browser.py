"""The corpus browser view (attnflows_panel.views.corpus_browser): Bokeh models, no browser.

The index is built from a tiny BERT whose query/key weights are scaled up (peaked attention), over real
MRPC dev pairs; what is checked is that the view shows what the index answers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from bokeh.document import Document

from attnflows_panel import FINETUNED_COLOR, PRETRAINED_COLOR, SHARED_COLOR
from attnflows_panel.head_spec import format_heads, parse_heads
from attnflows_panel.index import SignatureIndex, build_index
from attnflows_panel.views.corpus_browser import (
    HEADER_PX,
    PAGE_ROWS,
    ROW_PX,
    CorpusBrowser,
    diverging_palette,
)


@pytest.fixture(scope="module")
def index(sharp_pair, glue_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("browser-index") / "idx"
    build_index(sharp_pair, str(glue_dir / "MRPC"), "mrpc", out, split="dev", limit=60, tau=0.3, progress=False)
    return SignatureIndex.open(out, pair=sharp_pair)


@pytest.fixture
def browser(index):
    b = CorpusBrowser(index)
    b._root = b.__panel__().get_root(Document())  # the Bokeh models exist and render without a browser
    return b


def _bokeh_tabulators(root):
    from panel.models.tabulator import DataTabulator

    return list(root.select({"type": DataTabulator}))


def test_renders_corpus_table(browser, index):
    tabs = _bokeh_tabulators(browser._root)
    assert len(tabs) == 2  # the corpus and the similar samples
    corpus = next(t for t in tabs if "sentence_a" in t.source.data and "rank" not in t.source.data)
    assert len(corpus.source.data["id"]) == PAGE_ROWS  # one page, paged on the server
    assert list(browser.table.value["id"]) == list(index.metadata["id"])
    assert "<b>60</b> of 60 samples" in browser._count.object
    assert browser.results.empty and "pick a sample" in browser.message


def test_filters(browser, index):
    md = index.metadata
    browser.label = "equivalent"
    assert len(browser.table.value) == int((md["label_name"] == "equivalent").sum()) > 0
    assert (browser.table.value["label_name"] == "equivalent").all()
    browser.correctness = "incorrect"
    want = md[(md["label_name"] == "equivalent") & ~md["correct_fine"].astype(bool)]
    assert list(browser.table.value["id"]) == list(want["id"])
    browser.label, browser.correctness = "any", "any"
    browser.prediction = md["pred_fine"].iloc[0]
    assert (browser.table.value["pred_fine"] == md["pred_fine"].iloc[0]).all()
    browser.prediction = "any"
    browser.search = "Stanford"
    assert len(browser.table.value) >= 1
    shown = browser.table.value
    pairs = zip(shown["sentence_a"], shown["sentence_b"], strict=True)
    assert all("stanford" in (a + " " + b).lower() for a, b in pairs)
    assert f"<b>{len(browser.table.value)}</b> of 60" in browser._count.object
    # the widgets are wired to the parameters
    browser._label_w.value = "not_equivalent"
    assert browser.label == "not_equivalent"


def test_picking_a_row_selects_the_sample_and_finds_similar(browser, index):
    seen = []
    browser.param.watch(lambda e: seen.append(e.new), "selected_id")
    browser.table.selection = [4]
    assert browser.selected_id == index.metadata["id"].iloc[4] and seen == [browser.selected_id]
    want = index.query(sample_id=browser.selected_id, k=10, exclude_self=True)
    pd.testing.assert_frame_equal(browser.results.reset_index(drop=True), want)
    assert browser.selected_id not in set(browser.results["id"])
    shown = browser.results_table.value
    assert list(shown["id"]) == list(want["id"])
    assert np.allclose(shown["score"], want["score"].round(3), atol=5e-4)  # shown to 3 decimals
    assert {"sentence_a", "sentence_b", "score"} <= set(shown.columns)
    # picking a similar sample (a click on its row) makes it current
    _click(browser.results_table, 0)
    assert browser.selected_id == want["id"].iloc[0]


def _click(table, row: int) -> None:
    """What the browser sends for a click on a cell of ``row`` of a Panel Tabulator."""
    from panel.models.tabulator import CellClickEvent

    table._process_event(CellClickEvent(model=table.get_root(), column="id", row=row))


def test_a_click_picks_a_row_even_when_the_selection_does_not_change(browser, index):
    """A cell click is a pick on its own (Panel's Tabulator ignores a row click that comes while the
    table redraws, so no selection event may come with it); the similar samples are not selectable."""
    _click(browser.table, 2)
    assert browser.selected_id == index.metadata["id"].iloc[2] and browser.table.selection == []
    target = browser.results["id"].iloc[1]
    _click(browser.results_table, 1)
    assert browser.selected_id == target and browser.results_table.selection == []
    assert browser.results_table.selectable is False


def test_space_heads_and_k(browser, index):
    sid = index.metadata["id"].iloc[7]
    browser.selected_id = sid
    browser.param.update(space="diff", heads="2:*", k=5)  # counted from 1, as the user reads layers
    want = index.query(sample_id=sid, space="diff", heads="1:*", k=5, exclude_self=True)  # the index: 0-based
    assert list(browser.results["id"]) == list(want["id"])
    np.testing.assert_allclose(browser.results["score"], want["score"])
    # a bad head spec: a message, no results, no exception
    browser.heads = "7:1"
    assert browser.results.empty and "layer 7 is out of range" in browser.message and browser._status.visible
    browser.heads = "1:0"  # a 0-based head: refused, naming the numbering
    assert browser.results.empty and "heads count from 1 to 4" in browser.message
    browser.heads = ""
    assert len(browser.results) == 5 and browser.message == ""
    # only among the filtered samples
    browser.correctness = "correct"
    browser.within_filter = True
    assert browser.results["correct_fine"].astype(bool).all()
    # an unknown id (e.g. set by the app from elsewhere) says so
    browser.selected_id = "no-such-id"
    assert "unknown sample id 'no-such-id'" in browser.message
    # ... and markup in it is shown as text, never rendered
    browser.selected_id = "<img src=x onerror=alert(1)>"
    assert "<img" in browser.message
    assert "<img" not in browser._status.object and "&lt;img src=x" in browser._status.object


def _heat(browser):
    """The HeatMap and the outline Rectangles of the heatmap overlay, as drawn now."""
    overlay = browser.heat_element()
    heat, boxes = overlay.get(0), overlay.get(1)
    return heat, boxes, overlay


def test_heatmap_values_scope_and_tap(browser, index):
    browser.selected_id = index.metadata["id"].iloc[2]
    L, H = index.num_layers, index.num_heads
    heat, boxes, overlay = _heat(browser)
    df = heat.dframe()
    assert len(df) == L * H
    rows = browser.results["row"].to_numpy()
    want = index.head_usage(rows, block="diff")
    got = np.zeros((L, H))
    got[df["layer"].to_numpy(int), df["head"].to_numpy(int)] = df["value"].to_numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert f"over {len(rows)} results" in heat.opts.get().kwargs["title"]  # the plot's title sits on its first layer
    bound = np.abs(want).max()
    lo, hi = heat.opts.get().kwargs["clim"]
    assert lo == pytest.approx(-bound, abs=1e-6) and hi == pytest.approx(bound, abs=1e-6)
    browser.heatmap_scope = "filtered corpus"
    heat, _, _ = _heat(browser)
    df = heat.dframe()
    got[df["layer"].to_numpy(int), df["head"].to_numpy(int)] = df["value"].to_numpy()
    np.testing.assert_allclose(got, index.head_usage(np.arange(len(index)), block="diff"), atol=1e-4)
    # tapping a cell toggles that head in the mask, outlined in the shared colour
    browser.heat_tap.event(x=2.1, y=0.9)  # the cell of layer 1, head 2 (0-based): layer 2, head 3 as labelled
    assert browser.heads == "2:3"
    heat, boxes, _ = _heat(browser)
    assert len(boxes.data) == 1 and boxes.opts.get().kwargs["line_color"] == SHARED_COLOR
    (x0, y0, x1, y1) = boxes.array()[0]
    assert x0 < 2 < x1 and y0 < 1 < y1
    assert list(heat.dframe()["masked"]).count("yes") == 1
    want = index.query(sample_id=browser.selected_id, heads="1:2", k=10, exclude_self=True)
    assert list(browser.results["id"]) == list(want["id"])
    browser.heat_tap.event(x=2, y=1)  # the same cell again: out of the mask
    assert browser.heads == ""
    assert len(_heat(browser)[1].data) == 0


def test_pca_map_marks(browser, index):
    sid = index.metadata["id"].iloc[9]
    browser.selected_id = sid
    coords, _ = index.pca()
    marks = browser.map_marks()
    assert len(marks["corpus"]) == len(index)  # every sample (a corpus this small is drawn as points)
    cur = marks["current"]
    assert list(cur["id"]) == [sid]
    np.testing.assert_allclose([cur["x"][0], cur["y"][0]], coords[9, :2], atol=1e-5)
    rows = browser.results["row"].to_numpy()
    np.testing.assert_allclose(marks["similar"]["x"], coords[rows, 0], atol=1e-5)
    assert list(marks["similar"]["id"]) == list(browser.results["id"])
    # the element: corpus, similar, current in the project colours (current = shared orange,
    # neighbours = fine-tuned purple)
    overlay = browser.map_element()
    corpus, similar, current = overlay.get(0), overlay.get(1), overlay.get(2)
    assert len(corpus) == len(index) and len(similar) == len(rows) and len(current) == 1
    assert current.opts.get().kwargs["color"] == SHARED_COLOR and similar.opts.get().kwargs["color"] == FINETUNED_COLOR
    # tapping a point of the map makes it current
    browser.map_tap.event(x=float(coords[20, 0]), y=float(coords[20, 1]))
    assert browser.selected_id == index.metadata["id"].iloc[20]


def test_new_pair_as_current(browser, index, sharp_pair):
    r = sharp_pair.run("The company reported higher profits on Friday .", "Profits rose , the company said Friday .")
    browser.param.update(selected_id=None, result=r)
    want = index.query(result=r, k=10)
    assert list(browser.results["id"]) == list(want["id"])
    assert list(browser.map_marks()["current"]["id"]) == ["(new pair)"]
    assert "not in the index" in browser._current.object


def test_palette_and_empty_browser():
    pal = diverging_palette(5)
    assert pal[0] == PRETRAINED_COLOR and pal[-1] == FINETUNED_COLOR and pal[2] == "#ffffff"
    b = CorpusBrowser()
    b.__panel__().get_root(Document())
    assert b.message == "no index loaded"


def test_correct_filter_is_off_when_the_labels_do_not_match(sharp_pair, glue_dir, tmp_path, index):
    """An MRPC classifier over RTE pairs: the label sets differ, the index holds no correctness, and the
    browser disables its "correct" filter and says why, instead of filtering on a meaningless flag."""
    out = tmp_path / "rte"
    build_index(sharp_pair, str(glue_dir / "RTE"), "rte", out, split="dev", limit=12, tau=0.3, progress=False)
    rte = SignatureIndex.open(out, pair=sharp_pair)
    assert not rte.has_correctness and rte.label_mismatch
    b = CorpusBrowser(rte)
    assert b._correct_w.disabled
    assert "entailment" in b._correct_w.description and "correct filter is off" in b._correct_w.description
    assert len(b.table.value) == 12  # the rows are still shown, with their labels and predictions
    # the matched MRPC index keeps the filter, and switching the browser back enables it again
    b.index = index
    assert not b._correct_w.disabled and b._correct_w.description is None
    b.correctness = "correct"
    assert len(b.table.value) == int(index.metadata["correct_fine"].fillna(False).sum())


def test_the_drawn_heatmap_and_map_listen_for_clicks(index):
    """Each plot with a Tap stream subscribes to the browser's tap events. A Tap stream whose source is a
    DynamicMap returning an Overlay is never linked (holoviews #3533): clicks on the heatmap and the map
    did nothing in the served app."""
    from bokeh.models import Plot

    b = CorpusBrowser(index)
    doc = Document()
    doc.add_root(b.__panel__().get_root(doc))
    plots = {(m.title.text or "").split(" over ")[0]: m for m in doc.models
             if isinstance(m, Plot) and m.title is not None}
    assert "tap" in plots["mean fine − pre head usage"].subscribed_events
    assert "tap" in plots["signature map (PCA)"].subscribed_events


def _plot(root, title: str):
    from bokeh.models import Plot

    return next(p for p in root.select({"type": Plot}) if p.title is not None and title in (p.title.text or ""))


def _tooltips(plot) -> list[list[str]]:
    from bokeh.models import HoverTool

    return [[name for name, _ in tool.tooltips] for tool in plot.select({"type": HoverTool})]


def test_the_map_legend_covers_no_point_and_tooltips_read_as_words(browser, index):
    """Issue 25, defects 6 and 9: the map's legend sat on the points (a click there toggled the legend);
    tooltips showed field names (value, in_mask; the map only x, y, id)."""
    from bokeh.models import Legend

    browser.selected_id = str(index.metadata["id"].iloc[3])
    root = browser._root
    smap = _plot(root, "signature map")
    assert not [r for r in smap.center if isinstance(r, Legend)]  # not inside the frame, over the points
    assert [r for r in smap.below if isinstance(r, Legend)]  # under it
    map_tips = _tooltips(smap)
    assert map_tips and all("x" not in t and "y" not in t for t in map_tips)
    assert ["sample", "gold label", "fine-tuned predicts", "sentence A"] in map_tips
    assert ["sample", "gold label", "fine-tuned predicts", "sentence A", "similarity"] in map_tips
    heat = _plot(root, "head usage")
    assert _tooltips(heat) == [["layer", "head", "fine − pre usage", "in the head mask"]]
    # the heatmap's axes count layers and heads from 1, as the head mask box and the URL do
    assert heat.xaxis[0].major_label_overrides == {h: str(h + 1) for h in range(index.num_heads)}
    assert heat.yaxis[0].major_label_overrides == {k: str(k + 1) for k in range(index.num_layers)}


def test_head_masks_read_from_1_and_a_tapped_layer_stays_short(browser, index):
    """Issue 25, defect 8: a tapped "5:*" expanded into a truncated list of 0-based heads, and the mask
    stayed active across samples without saying so."""
    L, H = index.num_layers, index.num_heads
    mask = parse_heads("2:*,1:2-3", L, H)
    assert mask[1].all() and list(np.flatnonzero(mask[0])) == [1, 2]
    assert format_heads(mask) == "1:2-3,2:*" and format_heads(None) == "" and format_heads(np.ones((L, H))) == ""
    browser.selected_id = str(index.metadata["id"].iloc[4])
    browser.heads = "2:*"
    browser.toggle_head(1, 0)  # a tap on head 1 of layer 2: the rest of the layer stays, as a range
    assert browser.heads == "2:2-4"
    browser.selected_id = str(index.metadata["id"].iloc[5])  # another sample: the mask is kept, and said
    assert "searching on 3 of 8 heads: 2:2-4" in browser._current.object
    want = index.query(sample_id=browser.selected_id, heads=[(1, 1), (1, 2), (1, 3)], k=browser.k, exclude_self=True)
    assert list(browser.results["id"]) == list(want["id"])


def test_a_short_result_list_gets_a_short_table(browser, index):
    """Issue 25, defect 7: a one-row result left 250 px of blank table; tables fit their width (no
    sideways scroll) and a cut sentence shows whole in its tooltip."""
    browser.selected_id = str(index.metadata["id"].iloc[2])
    browser.k = 1
    assert len(browser.results) == 1 and browser.results_table.height == HEADER_PX + ROW_PX
    browser.k = 10
    assert browser.results_table.height == HEADER_PX + 10 * ROW_PX
    # the corpus table: a page of rows high, fewer for a short filtered list, one row for none
    from attnflows_panel.views.corpus_browser import PAGE_ROWS, PAGER_PX

    assert len(browser._filtered_rows) > PAGE_ROWS  # more rows than a page: the height stops at one page
    assert browser.table.height == HEADER_PX + PAGE_ROWS * ROW_PX + PAGER_PX
    word = max(str(index.metadata["sentence_a"].iloc[2]).split(), key=len)  # a rare word: a few rows
    browser.search = word
    n = len(browser._filtered_rows)
    assert 1 <= n < PAGE_ROWS, (word, n)
    assert browser.table.height == HEADER_PX + n * ROW_PX + PAGER_PX
    browser.search = "no sentence holds this text zqxj"
    assert len(browser._filtered_rows) == 0 and browser.table.height == HEADER_PX + ROW_PX + PAGER_PX
    browser.search = ""
    assert browser.table.height == HEADER_PX + PAGE_ROWS * ROW_PX + PAGER_PX
    tables = _bokeh_tabulators(browser._root)
    assert len(tables) == 2
    for table in tables:
        assert table.layout == "fit_columns" and table.configuration["columnDefaults"]["tooltip"] is True
