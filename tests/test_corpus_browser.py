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
from attnflows_panel.index import SignatureIndex, build_index
from attnflows_panel.views.corpus_browser import CorpusBrowser, diverging_palette


@pytest.fixture(scope="module")
def sharp_pair(sharp_bert_dirs):
    from attnflows_panel.models import ModelPair

    return ModelPair.load(*(str(d) for d in sharp_bert_dirs))


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
    assert len(corpus.source.data["id"]) == 12  # one page, paged on the server
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
    assert all("stanford" in (a + " " + b).lower() for a, b in zip(browser.table.value["sentence_a"], browser.table.value["sentence_b"]))
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
    assert list(shown["id"]) == list(want["id"]) and np.allclose(shown["score"], want["score"].round(3), atol=5e-4)  # shown to 3 decimals
    assert {"sentence_a", "sentence_b", "score"} <= set(shown.columns)
    # picking a similar sample makes it current
    browser.results_table.selection = [0]
    assert browser.selected_id == want["id"].iloc[0]


def test_space_heads_and_k(browser, index):
    sid = index.metadata["id"].iloc[7]
    browser.selected_id = sid
    browser.param.update(space="diff", heads="1:*", k=5)
    want = index.query(sample_id=sid, space="diff", heads="1:*", k=5, exclude_self=True)
    assert list(browser.results["id"]) == list(want["id"])
    np.testing.assert_allclose(browser.results["score"], want["score"])
    # a bad head spec: a message, no results, no exception
    browser.heads = "7:0"
    assert browser.results.empty and "layer 7 out of range" in browser.message and browser._status.visible
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


def test_heatmap_values_scope_and_tap(browser, index):
    browser.selected_id = index.metadata["id"].iloc[2]
    L, H = index.num_layers, index.num_heads
    data = browser.heat_source.data
    assert len(data["value"]) == L * H
    rows = browser.results["row"].to_numpy()
    want = index.head_usage(rows, block="diff")
    np.testing.assert_allclose(np.reshape(data["value"], (L, H)), want, atol=1e-4)
    assert f"over {len(rows)} results" in browser.heat_figure.title.text
    bound = np.abs(want).max()
    assert browser.color_mapper.low == pytest.approx(-bound, abs=1e-6) and browser.color_mapper.high == pytest.approx(bound, abs=1e-6)
    browser.heatmap_scope = "filtered corpus"
    np.testing.assert_allclose(np.reshape(browser.heat_source.data["value"], (L, H)),
                               index.head_usage(np.arange(len(index)), block="diff"), atol=1e-4)
    # tapping a cell toggles that head in the mask, outlined in the shared colour
    i = 1 * H + 2  # layer 1, head 2
    browser.heat_source.selected.indices = [i]
    assert browser.heads == "1:2"
    assert browser.heat_source.data["line"][i] == SHARED_COLOR and browser.heat_source.data["in_mask"][i]
    assert sum(browser.heat_source.data["in_mask"]) == 1
    want = index.query(sample_id=browser.selected_id, heads="1:2", k=10, exclude_self=True)
    assert list(browser.results["id"]) == list(want["id"])
    browser.toggle_head(1, 2)
    assert browser.heads == "" and not any(browser.heat_source.data["in_mask"])


def test_pca_map_marks(browser, index):
    sid = index.metadata["id"].iloc[9]
    browser.selected_id = sid
    coords, _ = index.pca()
    assert len(browser.map_background.data["x"]) == len(index)
    cur = browser.map_current.data
    assert cur["id"] == [sid]
    np.testing.assert_allclose([cur["x"][0], cur["y"][0]], coords[9], atol=1e-5)
    rows = browser.results["row"].to_numpy()
    np.testing.assert_allclose(browser.map_neighbours.data["x"], coords[rows, 0], atol=1e-5)
    assert browser.map_neighbours.data["id"] == list(browser.results["id"])
    # tapping a point of the map makes it current
    browser.map_background.selected.indices = [20]
    assert browser.selected_id == browser.map_background.data["id"][20]
    # the project colours: current = shared orange, neighbours = fine-tuned purple
    bg, nb, cur_r = browser._map_renderers
    assert cur_r.glyph.fill_color == SHARED_COLOR and nb.glyph.fill_color == FINETUNED_COLOR


def test_new_pair_as_current(browser, index, sharp_pair):
    r = sharp_pair.run("The company reported higher profits on Friday .", "Profits rose , the company said Friday .")
    browser.param.update(selected_id=None, result=r)
    want = index.query(result=r, k=10)
    assert list(browser.results["id"]) == list(want["id"])
    assert browser.map_current.data["id"] == ["(new pair)"]
    assert "not in the index" in browser._current.object


def test_palette_and_empty_browser():
    pal = diverging_palette(5)
    assert pal[0] == PRETRAINED_COLOR and pal[-1] == FINETUNED_COLOR and pal[2] == "#ffffff"
    b = CorpusBrowser()
    b.__panel__().get_root(Document())
    assert b.message == "no index loaded"
