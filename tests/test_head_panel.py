"""The head panel renders to Bokeh models without a browser, draws the index's numbers, switches
measure and scope, and a tap on a cell selects a head, queries the index and ablates the current sample."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("holoviews")

from bokeh.document import Document  # noqa: E402
from bokeh.models import ColumnDataSource, Plot  # noqa: E402

from attnflows_panel.views.head_panel import HeadPanel  # noqa: E402


@pytest.fixture(scope="module")
def index(sharp_pair, tmp_path_factory):
    from attnflows_panel.index import SignatureIndex, build_index

    out = tmp_path_factory.mktemp("head-panel") / "demo"
    build_index(sharp_pair, "demo", "mrpc", out, tau=0.3, limit=12, shard_size=12, batch_size=6, progress=False)
    return SignatureIndex.open(out)


def heat_sources(root):
    """The column data sources of the heatmap's rectangles in a rendered Bokeh tree."""
    return [m for m in root.select({"type": ColumnDataSource}) if "zvalues" in m.data and "head" in m.data]


def test_renders_the_index_numbers(index):
    panel = HeadPanel(index)
    root = panel.__panel__().get_root(Document())
    sources = heat_sources(root)
    assert sources, "no heatmap rendered"
    data = sources[0].data
    assert len(data["zvalues"]) == index.num_layers * index.num_heads
    expected = index.head_change_summary().cosine
    for h, layer, v in zip(data["head"], data["layer"], data["zvalues"], strict=False):
        assert v == pytest.approx(float(expected[int(layer), int(h)]), abs=1e-6)
    assert "mean over 12 samples (corpus)" in panel.title()


def test_metric_and_scope(index):
    panel = HeadPanel(index)
    np.testing.assert_allclose(panel.values(), index.head_change_summary().cosine, atol=1e-7)
    panel.metric = "jsd"
    np.testing.assert_allclose(panel.values(), index.head_change_summary().jsd, atol=1e-7)
    ids = list(index.metadata["id"].iloc[[2, 3, 7]])
    panel.subset_ids = ids
    panel.scope = "subset"
    np.testing.assert_allclose(panel.values(), index.head_change_summary(index.rows_of(ids)).jsd, atol=1e-7)
    assert "mean over 3 samples (similar samples)" in panel.title()
    panel.metric = "usage_change"
    np.testing.assert_allclose(panel.values(), index.head_change_summary(index.rows_of(ids)).usage_change, atol=1e-7)
    # the figure follows: re-render and read the drawn values
    root = panel.__panel__().get_root(Document())
    drawn = heat_sources(root)[0].data
    want = panel.values()
    got = np.zeros_like(want)
    for h, layer, v in zip(drawn["head"], drawn["layer"], drawn["zvalues"], strict=False):
        got[int(layer), int(h)] = v
    np.testing.assert_allclose(got, want, atol=1e-7)
    panel.subset_ids = []
    assert "subset is empty" in panel.title()


def test_tap_selects_a_head_and_runs_query_and_ablation(index, sharp_pair):
    first = index.metadata.iloc[0]
    panel = HeadPanel(index, pair=sharp_pair, sample=(first["sentence_a"], first["sentence_b"]), k=4)
    doc = Document()
    root = panel.__panel__().get_root(doc)
    doc.add_root(root)
    # the drawn heatmap listens for clicks (a Tap stream on an Overlay-returning DynamicMap never is:
    # holoviews #3533, and the served panel ignored every click)
    heat = next(m for m in root.select({"type": Plot}) if "cosine" in (m.title.text or ""))
    assert "tap" in heat.subscribed_events
    panel.tap.event(x=2, y=1)  # what a click on the cell head 2, layer 1 sends
    assert panel.selected_head == (1, 2)
    # (b) without a current sample id: the samples with the lowest cosine of that head
    df = panel._query_result
    cos, _ = index.head_change()
    assert list(df["id"]) == list(index.metadata["id"].to_numpy()[np.argsort(cos[:, 1, 2], kind="stable")[:4]])
    # (c) the current sample's ablation
    abl = panel._ablation_result
    assert abl.heads == [(1, 2)] and abl.mode == "mask"
    from attnflows_panel.ablation import ablate_sample

    again = ablate_sample(sharp_pair, first["sentence_a"], first["sentence_b"], [(1, 2)])
    assert abl.probs_after == pytest.approx(again.probs_after)
    texts = " ".join(str(getattr(o, "object", "")) for o in panel._details.objects)
    assert "head 3 of layer 2" in texts and "disabled (mask)" in texts  # counted from 1, as the axes are

    # with a current sample id: the head-masked diff query of the index
    panel.sample_id = str(first["id"])
    panel.selected_head = (0, 3)
    expected = index.query(sample_id=str(first["id"]), space="diff", heads=[(0, 3)], k=4, exclude_self=True)
    assert list(panel._query_result["id"]) == list(expected["id"])
    # the marker of the selected head is drawn (the rendered figure follows)
    assert any(list(m.data.get("head", [])) == [3] and list(m.data.get("layer", [])) == [0]
               for m in root.select({"type": ColumnDataSource}) if "zvalues" not in m.data)


def test_callables_replace_the_defaults_and_errors_are_shown(index):
    calls = []

    def query(layer, head):
        calls.append((layer, head))
        raise RuntimeError("boom")

    panel = HeadPanel(index, query_fn=query, ablate_fn=lambda layer, head: f"ablated {layer}:{head}")
    panel.selected_head = (1, 0)
    assert calls == [(1, 0)]
    assert panel._ablation_result == "ablated 1:0"
    assert "query failed: boom" in panel._message
    panel.selected_head = (9, 9)
    assert "out of range" in panel._message


def test_extra_measures_and_change_source(index):
    from attnflows_panel.ablation import CorpusChange

    cos, js = index.head_change()
    change = CorpusChange(ids=list(index.metadata["id"]), cosine=cos, jsd=js, usage=index.usage(), pairs=[],
                          labels=[], label_names=[], predictions=[])
    delta = np.linspace(-0.1, 0.1, index.num_layers * index.num_heads).reshape(index.num_layers, index.num_heads)
    panel = HeadPanel(change=change, extra={"ablation_accuracy_delta": delta})
    assert "ablation_accuracy_delta" in panel.param.metric.objects and "importance" not in panel.param.metric.objects
    np.testing.assert_allclose(panel.values(), index.head_change_summary().cosine, atol=1e-7)
    panel.metric = "ablation_accuracy_delta"
    np.testing.assert_allclose(panel.values(), delta)
    root = panel.__panel__().get_root(Document())
    np.testing.assert_allclose(sorted(heat_sources(root)[0].data["zvalues"]), sorted(delta.ravel()))
    with pytest.raises(ValueError, match="unknown extra"):
        HeadPanel(change=change, extra={"nope": delta})
    with pytest.raises(ValueError, match="needs an index"):
        HeadPanel()


def test_index_without_head_change_is_refused(index, tmp_path):
    import json
    import shutil

    from attnflows_panel.index import IndexFileError, SignatureIndex

    old = tmp_path / "old"
    shutil.copytree(index.path, old)
    (old / "head_change.npy").unlink()
    m = json.loads((old / "manifest.json").read_text())
    del m["files"]["head_change.npy"]
    del m["checksums"]["files"]["head_change.npy"]  # an index from before head change never listed it
    from attnflows_panel.index.format import write_manifest

    write_manifest(old / "manifest.json", m)  # as such a build wrote it
    with pytest.raises(IndexFileError, match="no per-head change"):
        HeadPanel(SignatureIndex.open(old))
