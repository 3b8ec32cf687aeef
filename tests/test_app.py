"""The app (attnflows_panel.app), its shared registry and the `attnflows serve|demo` commands, without a
browser: session state, URL state, bad input, shared caches. A tiny random BERT pair and a small index
over the bundled demo corpus keep it fast; the browser tests (test_app_browser.py) use the real MiniLM.
"""

from __future__ import annotations

import html
import json
import shutil
import threading
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import param
import pytest

from attnflows_panel import DEFAULT_TAU, PAPER_TAU
from attnflows_panel.app import (
    HELP_HTML,
    MAX_CHARS,
    AppConfig,
    AttnFlowsApp,
    UrlState,
)
from attnflows_panel.registry import Registry, fingerprint_key

SCRIPT = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


# ----------------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------------


@pytest.fixture
def registry(sharp_pair, sharp_bert_dirs):
    reg = Registry()
    reg.add_pair(sharp_pair, sharp_bert_dirs[0], sharp_bert_dirs[1])
    return reg


@pytest.fixture
def config(sharp_bert_dirs, demo_index):
    return AppConfig(pretrained=str(sharp_bert_dirs[0]), finetuned=str(sharp_bert_dirs[1]), index=str(demo_index))


@pytest.fixture
def app(config, registry):
    return AttnFlowsApp(config, registry=registry)


def sample_ids(app) -> list[str]:
    return [str(x) for x in app.index.metadata["id"]]


# ----------------------------------------------------------------------------------------------------
# registry: load once, share, bounded result cache
# ----------------------------------------------------------------------------------------------------


def test_registry_loads_a_pair_once_under_concurrent_requests(tmp_path):
    calls = []
    gate = threading.Event()

    def loader(pre, fine, device=None):
        calls.append((pre, fine))
        gate.wait(5)  # hold the first load until every thread is waiting on it
        return SimpleNamespace(fingerprint={"pretrained": {"name": pre}, "finetuned": {"name": fine}})

    reg = Registry(pair_loader=loader)
    (tmp_path / "pre").mkdir()
    (tmp_path / "fine").mkdir()
    got = []
    # the same folders spelled three ways: one key
    specs = [(tmp_path / "pre", tmp_path / "fine"), (f"{tmp_path}/pre/", f"{tmp_path}/./fine"),
             (str(tmp_path / "pre"), str(tmp_path / "fine"))]
    threads = [threading.Thread(target=lambda s=s: got.append(reg.pair(*s))) for s in specs * 6]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1 and reg.loads["pair"] == 1
    assert len(got) == 18 and all(p is got[0] for p in got)
    assert reg.cached_pair(tmp_path / "pre", tmp_path / "fine") is got[0]
    assert reg.cached_pair(tmp_path / "pre", "other") is None


def test_registry_shares_one_object_for_the_same_weights_under_other_names():
    fp = {"pretrained": {"name": "x", "weights_sha256": "1"}, "finetuned": {"name": "y", "weights_sha256": "2"}}
    reg = Registry(pair_loader=lambda pre, fine, device=None: SimpleNamespace(fingerprint=dict(fp)))
    a = reg.pair("hub/name-a", "hub/name-b")
    b = reg.pair("/some/folder/a", "/some/folder/b")
    assert a is b and reg.loads["pair"] == 2  # both loaded, one kept
    assert fingerprint_key(fp) == fingerprint_key(dict(reversed(list(fp.items()))))


def test_registry_result_cache_runs_once_and_is_bounded(sharp_pair):
    reg = Registry()
    r1 = reg.run(sharp_pair, "A dog runs.", "A dog is running.")
    r2 = reg.run(sharp_pair, "A dog runs.", "A dog is running.")
    assert r1 is r2 and reg.loads["run"] == 1
    again = sharp_pair.run("A dog runs.", "A dog is running.")
    np.testing.assert_array_equal(r1.finetuned.attentions, again.finetuned.attentions)
    # a budget of two results of this size: the least recently used one goes
    small = Registry(result_cache_bytes=2 * Registry._nbytes(r1) + 10)
    small.run(sharp_pair, "A dog runs.", "A dog is running.")
    small.run(sharp_pair, "A cat runs.", "A dog is running.")
    small.run(sharp_pair, "A dog runs.", "A dog is running.")  # refresh the first
    small.run(sharp_pair, "A bird runs.", "A dog is running.")
    assert small.cached_result(sharp_pair, "A dog runs.", "A dog is running.") is not None
    assert small.cached_result(sharp_pair, "A cat runs.", "A dog is running.") is None
    assert small._result_bytes <= small.result_cache_bytes
    with pytest.raises(ValueError, match="empty"):
        reg.run(sharp_pair, "   ", "x")


def test_registry_opens_an_index_once(sharp_pair, demo_index):
    reg = Registry()
    a = reg.index(demo_index, pair=sharp_pair)
    b = reg.index(str(demo_index) + "/", pair=sharp_pair)
    assert a is b and reg.loads["index"] == 1 and len(a) == 12
    assert reg.cached_index(demo_index, pair=sharp_pair) is a


# ----------------------------------------------------------------------------------------------------
# URL state parsing
# ----------------------------------------------------------------------------------------------------


def test_url_state_parses_every_field():
    st, errors = UrlState.parse("?sample=0123&tau=0.25&mode=finetuned&level=2&sel=3:5,3:7&head=2:4&hm=pretrained")
    assert errors == []
    assert st.sample == "0123"  # ids stay strings (pn.state.location.sync would make this the int 123)
    # levels, tokens, layers and heads count from 1 in the link, as everything the user reads does; the
    # state holds the code's 0-based values
    assert (st.tau, st.mode, st.level) == (0.25, "finetuned", 1)
    assert st.selection == [[2, 4], [2, 6]] and st.head == [1, 3] and st.head_model == "pretrained"
    again, _ = UrlState.parse(st.query(default_tau=0.15))
    assert again == st and "level=2&sel=3%3A5%2C3%3A7&head=2%3A4" in st.query(default_tau=0.15)
    st, errors = UrlState.parse("a=%3Cb%3Ehi&b=there")
    assert (st.a, st.b, st.sample) == ("<b>hi", "there", None)


@pytest.mark.parametrize(
    "query, fragment",
    [
        ("tau=abc", "τ in the link must be a number"),
        ("tau=nan", "τ in the link must be a number"),
        ("tau=0.999", "τ in the link must be a number"),
        ("mode=everything", "mode in the link must be one of"),
        ("level=-1", "level in the link must be a whole number"),
        ("level=0", "from 1 (the input)"),
        ("sel=0:3", "counts levels and tokens from 1"),
        ("sel=2:0", "counts levels and tokens from 1"),
        ("sel=1:2:3", "'level:token' pairs"),
        ("head=1:2,3:4&sel=1:1", "head in the link must be one"),
        ("head=0:3&sel=1:1", "counts layers and heads from 1"),  # an old 0-based link's first layer
        ("hm=both-ish&sel=1:1", "hm in the link"),
    ],
)
def test_url_state_names_each_bad_value(query, fragment):
    st, errors = UrlState.parse(query)
    assert len(errors) == 1 and fragment in errors[0]


# ----------------------------------------------------------------------------------------------------
# the app: first view, sample card, controls
# ----------------------------------------------------------------------------------------------------


def test_first_view_shows_the_first_sample_with_labels_and_predictions(app, sharp_pair):
    first = sample_ids(app)[0]
    row = app.index.sample(first)
    assert app.sample_id == first and app.message == "" and app.busy is False
    assert app.view.result.tokens == sharp_pair.run(row["sentence_a"], row["sentence_b"]).tokens
    card = app._sample_card.object
    assert html.escape(first) in card and html.escape(row["label_name"]) in card
    fine = app.result.finetuned
    assert fine.label in card and f"{fine.probs[fine.label]:.2f}" in card  # prediction with probability
    for name, p in fine.probs.items():  # and every other class's, on the same short line
        assert f"{html.escape(name)} {p:.2f}" in card or name == fine.label
    assert "no classification head" in card  # the bare pre-trained encoder says so
    # the pair in use, τ, mode and level are in the sidebar; the browser shows the same sample
    assert "L = 2 layers × H = 4 heads" in app._pair_info.object
    # the sidebar's controls are the view's own, made from its parameters: one owner of the state
    assert app._controls is app.view.parts().controls
    assert app.view._tau_slider.value == pytest.approx(app.view.tau) and app.view._mode_buttons.value == app.view.mode
    assert app.browser.selected_id == first and len(app.browser.results) > 0


def test_tau_mode_and_level_reach_the_views(app):
    from attnflows_panel.graph import AttentionGraph

    before = sum(len(lv) for lv in app.view.data.levels)
    app.view.tau = 0.05
    assert app.tau == 0.05  # the app's tau is an alias of the view's
    assert app.view.tau == pytest.approx(0.05) and app.view.data.tau == pytest.approx(0.05)
    # the drawn rings are the union of both models' levels at the new τ (§4.3.3)
    pre = AttentionGraph.build(app.result.pretrained.attentions, 0.05)
    fine = AttentionGraph.build(app.result.finetuned.attentions, 0.05)
    for k, ring in enumerate(app.view.data.levels):
        np.testing.assert_array_equal(np.sort(ring), np.union1d(pre.levels[k], fine.levels[k]))
    assert sum(len(lv) for lv in app.view.data.levels) > before  # a lower τ keeps more tokens
    app.view._mode_buttons.value = "finetuned"  # what a click on the button does
    assert app.view.mode == "finetuned" and app.view.data.mode == "finetuned"
    with param.edit_constant(app.view._level_slider):
        app.view._level_slider.param.update(value=1, value_throttled=1)  # what releasing the slider sends
    assert app.view.level == 1
    app.view.level = 0  # ... and the other way: the parameter moves its slider
    assert app.view._level_slider.value == 0
    app.view.level = 1
    assert "tau=0.05" in app.url_query() and "mode=finetuned" in app.url_query()
    # the URL carries a level the user chose, 0 (the input) included, and leaves out the level the view
    # opens at by itself (the informative one), so that either link restores what is shown
    auto = app.view.informative_level()
    for level in (0, 1, auto):
        app.view.level = level
        assert ("level=" in app.url_query()) == (level != auto)
        other = AttnFlowsApp(app.config, registry=app.registry, query=app.url_query())
        assert other.view.level == level and other.url_query() == app.url_query()


def test_help_text_uses_the_view_colours():
    from attnflows_panel import FINETUNED_COLOR, PRETRAINED_COLOR, SHARED_COLOR

    for color in (PRETRAINED_COLOR, FINETUNED_COLOR, SHARED_COLOR):
        assert color in HELP_HTML
    for term in ("τ", "I<sub>l</sub>", "head glyph", "sparkline", "[CLS]"):
        assert term in HELP_HTML


def test_picking_a_sample_in_the_browser_shows_it(app):
    target = sample_ids(app)[4]
    app.browser.pick(target)  # what a click in the corpus table does
    assert app.sample_id == target
    row = app.index.sample(target)
    assert app.result.sentence_a == row["sentence_a"]
    assert html.escape(row["sentence_b"]) in app._sample_card.object
    assert app.url_query().startswith(f"sample={target}")


# ----------------------------------------------------------------------------------------------------
# URL state round trip
# ----------------------------------------------------------------------------------------------------


def test_a_shared_url_restores_sample_tau_mode_level_and_selection(app, config, registry):
    target = sample_ids(app)[3]
    app.show_sample(target)
    app.view.param.update(tau=0.12, mode="pretrained", level=1)
    L = app.pair.num_layers
    node = [L - 1, int(app.view.data.levels[L - 1][0])]
    app.view.selection = [[L, 0], node]  # paths between the root and a token of level L-1
    hl = app.view.highlight()
    query = app.url_query()
    assert "sel=" in query

    other = AttnFlowsApp(config, registry=registry, query=query)
    assert other.message == ""
    assert (other.sample_id, other.tau, other.mode, other.level) == (target, 0.12, "pretrained", 1)
    assert other.selection == [[L, 0], node] and other.view.selection == [[L, 0], node]
    np.testing.assert_array_equal(other.view.highlight().nodes, hl.nodes)
    assert other.url_query() == query


def test_a_typed_pair_round_trips_through_the_url(app, config, registry):
    app.run_pair("Stocks fell sharply.", "Shares dropped a lot.")
    query = app.url_query()
    other = AttnFlowsApp(config, registry=registry, query=query)
    assert other.sample_id == ""
    assert (other.sentence_a, other.sentence_b) == ("Stocks fell sharply.", "Shares dropped a lot.")
    assert other.result.tokens == app.result.tokens
    # the link's pair fills the form: "Run" without editing runs it (the box's typed text is "" until typed)
    other._on_run_click(None)
    assert other.message == "" and (other.sentence_a, other.sentence_b) == ("Stocks fell sharply.",
                                                                            "Shares dropped a lot.")
    other._a_w.value_input = "Stocks rose."  # typed, the box not left yet: that runs
    other._on_run_click(None)
    assert other.sentence_a == "Stocks rose." and other._a_w.value == "Stocks rose."


def test_the_edge_weights_selector_runs_the_pair_again_and_lives_in_the_url(app, config, registry):
    """Issue 27 (3): raw | norm | attattr in the sidebar; the graph follows the chosen weights, the URL
    keeps them (``w``), a link restores them, and the corpus browser still searches with the index's."""
    from attnflows_panel.graph import AttentionGraph

    target = sample_ids(app)[2]
    app.show_sample(target)
    raw = app.result
    assert app._weights_w.value == "raw" and "w=" not in app.url_query()
    assert app._weights_note.object == "Edges: raw attention."
    app._weights_w.value = "norm"  # the user's click
    assert app.weights == "norm" and app.sample_id == target
    assert app.result is not raw and app.result.finetuned.weights == "norm" == app.result.pretrained.weights
    assert not np.allclose(app.result.finetuned.attentions, raw.finetuned.attentions)
    # the view draws the norm-weighted graph
    want = AttentionGraph.build(app.result.finetuned.attentions, tau=app.view.tau)
    assert [len(lv) for lv in app.view.data.graphs[2].levels] == [len(lv) for lv in want.levels]
    assert "norm-weighted" in app._weights_note.object
    query = app.url_query()
    assert "w=norm" in query and f"sample={target}" in query
    other = AttnFlowsApp(config, registry=registry, query=query)
    assert other.weights == "norm" and other._weights_w.value == "norm"
    assert other.result.finetuned.weights == "norm" and other.url_query() == query
    # attribution: the bare pre-trained encoder has no classification head, and the note says so
    app.set_weights("attattr")
    assert app.result.finetuned.weights == "attattr" and app.result.pretrained.weights == "norm"
    assert "no classification head" in app._weights_note.object
    # a typed pair with norm weights: the browser searches with the index's raw ones (no refusal)
    app.set_weights("norm")
    app.run_pair("Stocks fell sharply.", "Shares dropped a lot.")
    assert app.result.finetuned.weights == "norm" and app.message == ""
    assert app.browser.result is not None and app.browser.result.finetuned.weights == "raw"
    assert len(app.browser.results) > 0
    # Back to raw through the history: the pair runs again with raw attention
    app.restore(AttnFlowsApp(config, registry=registry, query="a=Stocks+fell+sharply.&b=Shares+dropped+a+lot.")
                .url_query())
    assert app.weights == "raw" and app.result.finetuned.weights == "raw" and app._weights_w.value == "raw"
    with pytest.raises(ValueError, match="weights"):
        app.set_weights("gradient")
    assert AttnFlowsApp(config, registry=registry, query="w=bogus").weights == "raw"


def test_unknown_sample_id_in_the_url_is_a_clear_message_and_the_session_works(config, registry):
    app = AttnFlowsApp(config, registry=registry, query="sample=no-such-sample&tau=0.2")
    assert app._alert.visible and "Unknown sample id &#x27;no-such-sample&#x27;" in app._alert.object
    assert "Unknown sample id 'no-such-sample'" in app.message
    assert "12 samples" in app.message
    assert app.sample_id == sample_ids(app)[0] and app.view.tau == pytest.approx(0.2)  # the rest of the link applies
    app.show_sample(sample_ids(app)[2])  # still works
    assert app.sample_id == sample_ids(app)[2]
    app.show_sample("also <b>missing</b>")
    assert "Unknown sample id" in app.message and "<b>" not in app._alert.object
    assert app.sample_id == sample_ids(app)[2]


def test_bad_url_values_are_named_and_ignored(config, registry):
    app = AttnFlowsApp(config, registry=registry, query="tau=lots&mode=x&level=9&sel=1:999")
    msg = app.message
    assert "τ in the link" in msg and "mode in the link" in msg and "level 9 in the link is out of range" in msg
    assert "selection in the link does not fit" in msg
    assert app.view.tau == pytest.approx(config.tau) and app.view.mode == "combined" and app.view.selection == []
    assert app.view is not None and app.view.selection == []


def test_an_html_id_in_the_url_is_shown_as_text(config, registry):
    app = AttnFlowsApp(config, registry=registry, query="sample=" + SCRIPT)
    assert "Unknown sample id" in app.message
    shown = app._alert.object
    assert "<" not in shown.replace("<br>", "")  # no tag can come out of it (the pane is HTML, not Markdown)
    assert SCRIPT in html.unescape(shown)  # ... and it reads as the text it is


# ----------------------------------------------------------------------------------------------------
# typed pairs and bad input
# ----------------------------------------------------------------------------------------------------


def test_a_typed_pair_is_run_shown_escaped_and_used_as_the_similarity_query(app):
    app.run_pair(SCRIPT + " The cat sat.", "A cat was sitting.")
    assert app.sample_id == "" and app.message == ""
    card = app._sample_card.object
    assert "<script>" not in card and "<img" not in card
    assert html.escape(SCRIPT, quote=True) in card
    assert "not in the corpus" in card
    assert app.browser.selected_id is None and app.browser.result is app.result
    res = app.browser.results
    assert len(res) > 0 and set(res["id"]) <= set(sample_ids(app))


def test_empty_sentences_give_a_message_and_keep_the_view(app):
    before = app.result
    for a, b in (("", "x"), ("x", "   "), ("", "")):
        app.run_pair(a, b)
        assert app.result is before and "Please type both sentences" in app.message
        assert "empty" in app._form_note.object
    app.run_pair("A dog.", "A puppy.")  # the session keeps working
    assert app.result is not before and app.message == ""


def test_over_long_text_is_cut_and_truncated_with_visible_notes(app):
    long_a = "word " * (MAX_CHARS // 5 + 100)
    app.run_pair(long_a, "A short one.")
    assert len(app.sentence_a) == MAX_CHARS
    assert f"cut to {MAX_CHARS} characters" in app.message
    assert app.result.truncated and app.result.n <= app.pair.max_length
    assert "truncated" in app.message and "truncated" in app._sample_card.object
    assert app._alert.visible


def test_model_paths_cannot_be_set_without_the_flag(app, config, registry, sharp_bert_dirs):
    assert app._model_pre_w is None and app._model_fine_w is None
    texts = list(app._layout.select(lambda o: getattr(o, "css_classes", None) and "af-model-pre" in o.css_classes))
    assert texts == []
    allowed = AttnFlowsApp(AppConfig(**{**config.__dict__, "allow_model_paths": True}), registry=registry)
    assert allowed._model_pre_w is not None
    allowed._model_pre_w.value = "/definitely/not/a/model"
    allowed._model_fine_w.value = "/definitely/not/a/model/either"
    allowed._on_load_models(None)
    assert allowed.message and allowed._alert.styles["background"] == "#fde8ea"  # the danger colours
    allowed._model_pre_w.value, allowed._model_fine_w.value = str(sharp_bert_dirs[0]), str(sharp_bert_dirs[1])
    allowed._on_load_models(None)
    assert allowed.view is not None and allowed.pair is registry.cached_pair(*sharp_bert_dirs)


# ----------------------------------------------------------------------------------------------------
# sessions share models, never state
# ----------------------------------------------------------------------------------------------------


def test_two_sessions_share_models_and_index_but_not_state(config, registry):
    one = AttnFlowsApp(config, registry=registry)
    two = AttnFlowsApp(config, registry=registry)
    assert one.pair is two.pair and one.index is two.index
    assert one.view is not two.view and one.browser is not two.browser
    ids = sample_ids(one)
    one.show_sample(ids[5])
    one.view.param.update(tau=0.1, mode="finetuned", selection=[[one.pair.num_layers, 0]])
    one.browser.space = "diff"
    two.run_pair("Two says hello.", "Hello from two.")
    assert (two.view.tau, two.view.mode, two.view.selection, two.browser.space) == (config.tau, "combined", [], "all")
    assert one.sample_id == ids[5] and one.result.sentence_a == one.index.sample(ids[5])["sentence_a"]
    assert two.sample_id == "" and two.result.sentence_a == "Two says hello."
    assert one.view.selection == [[one.pair.num_layers, 0]] and two.view.selection == []
    assert registry.loads["pair"] == 0  # both used the pair registered up front


def test_a_session_is_freed_when_dropped(config, registry):
    import gc

    app = AttnFlowsApp(config, registry=registry)
    ref = weakref.ref(app)
    del app
    gc.collect()
    assert ref() is None  # the registry holds no reference to sessions


# ----------------------------------------------------------------------------------------------------
# configuration and the CLI
# ----------------------------------------------------------------------------------------------------


def test_config_from_env(tmp_path, demo_index):
    cfg = AppConfig.from_env({"ATTNFLOWS_PRETRAINED": "a", "ATTNFLOWS_FINETUNED": "b",
                              "ATTNFLOWS_INDEX": str(demo_index),
                              "ATTNFLOWS_TAU": "0.25", "ATTNFLOWS_ALLOW_MODEL_PATHS": "yes"})
    got = (cfg.pretrained, cfg.finetuned, cfg.index, cfg.tau, cfg.allow_model_paths)
    assert got == ("a", "b", str(demo_index), 0.25, True)
    cfg = AppConfig.from_env({"ATTNFLOWS_INDEX": "none"})
    assert cfg.index is None and cfg.tau == DEFAULT_TAU and cfg.allow_model_paths is False
    assert AppConfig.from_env({"ATTNFLOWS_FINETUNED": "b", "ATTNFLOWS_INDEX": "none"}).tau == PAPER_TAU
    # no ATTNFLOWS_TAU: the index's τ (demo_index was built at 0.3; its manifest says so)
    assert AppConfig.from_env({"ATTNFLOWS_INDEX": str(demo_index)}).tau == pytest.approx(0.3)
    with pytest.raises(ValueError, match="ATTNFLOWS_TAU must be a number"):
        AppConfig.from_env({"ATTNFLOWS_TAU": "high"})
    with pytest.raises(ValueError, match="tau must lie in"):
        AppConfig(tau=1.5)


def _index_with_tau(folder: Path, tau) -> Path:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"tau": tau}))
    return folder


def test_one_rule_for_the_initial_tau(tmp_path, sharp_bert_dirs):
    """initial_tau: the index's τ, else 0.15 for the offline default pair, else the paper's 0.3."""
    from attnflows_panel import defaults
    from attnflows_panel.app import initial_tau

    pre, fine = (str(d) for d in sharp_bert_dirs)
    at_012 = _index_with_tau(tmp_path / "i012", 0.12)
    assert initial_tau(pre, fine, at_012) == pytest.approx(0.12)
    assert initial_tau(None, None, at_012) == pytest.approx(0.12)
    assert initial_tau() == DEFAULT_TAU == 0.15
    assert initial_tau(str(defaults.pretrained_path()), str(defaults.finetuned_path())) == DEFAULT_TAU
    assert initial_tau(pre, fine) == PAPER_TAU == 0.3
    assert initial_tau(str(defaults.pretrained_path()), fine) == PAPER_TAU  # only one of the default pair
    # an index whose manifest has no usable τ falls back to the pair's rule
    for bad in ("{not json", '{"tau": "x"}', '{"tau": 7}', "{}"):
        (tmp_path / "bad").mkdir(exist_ok=True)
        (tmp_path / "bad" / "manifest.json").write_text(bad)
        assert initial_tau(pre, fine, tmp_path / "bad") == PAPER_TAU
    assert initial_tau(pre, fine, tmp_path / "no-such-index") == PAPER_TAU
    # AppConfig applies it when tau is not given, and an explicit tau wins
    assert AppConfig(pretrained=pre, finetuned=fine, index=str(at_012)).tau == pytest.approx(0.12)
    assert AppConfig(pretrained=pre, finetuned=fine, index=str(at_012), tau=0.2).tau == pytest.approx(0.2)
    assert AppConfig(pretrained=pre, finetuned=fine).tau == PAPER_TAU
    # an index built at a τ the slider does not reach opens at the nearest end of it
    assert AppConfig(pretrained=pre, finetuned=fine, index=str(_index_with_tau(tmp_path / "i097", 0.97))).tau == 0.95


def test_serve_opens_at_the_index_tau_unless_tau_is_given(monkeypatch, tmp_path, sharp_bert_dirs):
    from attnflows_panel import app as app_mod
    from attnflows_panel.cli import main

    index = _index_with_tau(tmp_path / "idx", 0.12)
    seen = []
    monkeypatch.setattr(app_mod, "serve", lambda config, **kw: seen.append(config))
    assert main(["serve", "--index", str(index), "--port", "0"]) == 0
    assert main(["serve", "--index", str(index), "--port", "0", "--tau", "0.25"]) == 0
    assert [c.tau for c in seen] == [pytest.approx(0.12), pytest.approx(0.25)]


def test_an_index_names_its_models(demo_index, sharp_bert_dirs):
    refs = AppConfig(index=str(demo_index)).model_refs()
    assert [Path(r).resolve() for r in refs] == [Path(d).resolve() for d in sharp_bert_dirs]
    assert AppConfig(index=None).model_refs() == (None, None)


def test_an_index_built_from_hub_names_opens_with_them(demo_index, tmp_path):
    """An index of hub models names them as hub ids: serve --index uses them (the hub cache serves them
    offline), while a folder that has gone away falls back to the offline default."""
    import json
    import shutil

    hub = tmp_path / "hub-index"
    shutil.copytree(demo_index, hub)
    manifest = json.loads((hub / "manifest.json").read_text())
    manifest["fingerprint"]["pretrained"]["name"] = "bert-base-uncased"
    manifest["fingerprint"]["finetuned"]["name"] = "textattack/bert-base-uncased-MRPC"
    (hub / "manifest.json").write_text(json.dumps(manifest))
    assert AppConfig(index=str(hub)).model_refs() == ("bert-base-uncased", "textattack/bert-base-uncased-MRPC")
    manifest["fingerprint"]["finetuned"]["name"] = str(tmp_path / "gone" / "model")
    (hub / "manifest.json").write_text(json.dumps(manifest))
    assert AppConfig(index=str(hub)).model_refs() == (None, None)


def test_an_index_of_other_models_turns_the_browser_off_with_a_message(sharp_bert_dirs, demo_index, tmp_path, registry):
    import json
    import shutil

    other = tmp_path / "other-index"
    shutil.copytree(demo_index, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["fingerprint"]["finetuned"]["weights_sha256"] = "0" * 64
    from attnflows_panel.index.format import write_manifest

    write_manifest(other / "manifest.json", manifest)  # an index a build wrote for other models
    app = AttnFlowsApp(AppConfig(pretrained=str(sharp_bert_dirs[0]), finetuned=str(sharp_bert_dirs[1]),
                                 index=str(other)),
                       registry=registry)
    assert app.browser is None and "corpus browser is off" in app.message
    assert app.view is not None  # the example pair is shown; typed pairs work
    app.run_pair("One.", "Two.")
    assert app.result.sentence_b == "Two."


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["serve", "--tau", "1.5"], "--tau must lie in"),
        (["serve", "--task", "mrpc"], "--task goes with --data"),
        (["serve", "--index", "/no/such/index"], "no index folder"),
        (["serve", "--data", "demo", "--limit", "0"], "--limit must be a positive"),
        (["demo", "--tau", "0"], "--tau must lie in"),
    ],
)
def test_cli_rejects_bad_arguments_with_a_clear_message(argv, fragment, capsys):
    from attnflows_panel.cli import main

    assert main(argv) == 1
    assert fragment in capsys.readouterr().err


def test_cli_help_lists_the_server_options(capsys):
    from attnflows_panel.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for option in ("--pretrained", "--finetuned", "--index", "--data", "--task", "--tau", "--port", "--address",
                   "--allow-websocket-origin", "--allow-model-paths"):
        assert option in out


def test_demo_prepares_then_serves_the_offline_default(monkeypatch, tmp_path, capsys):
    """`attnflows demo` wiring: prepare() with --data, then serve() on the packaged MiniLM, the cached
    fine-tune and the demo index (prepare itself is tested with the finetune module)."""
    from attnflows_panel import app as app_mod
    from attnflows_panel import defaults
    from attnflows_panel import prepare as prepare_mod
    from attnflows_panel.cli import main

    monkeypatch.setenv("ATTNFLOWS_CACHE_DIR", str(tmp_path))
    index = defaults.index_path("demo")
    index.mkdir(parents=True)
    (index / "manifest.json").write_text('{"tau": 0.15}')
    calls = {}
    prepared = {"pretrained": "/pkg/minilm", "finetuned": str(tmp_path / "models" / "fine"),
                "data_source": {"source": "demo"}}
    monkeypatch.setattr(prepare_mod, "prepare", lambda data=None, progress=True, force=False:
                        calls.setdefault("prepare", (data, progress, force)) and prepared)
    monkeypatch.setattr(app_mod, "serve", lambda config, **kw: calls.setdefault("serve", (config, kw)))
    assert main(["demo", "--prepare-only", "--data", "some/folder"]) == 0
    assert calls.pop("prepare") == ("some/folder", True, False) and "serve" not in calls
    assert main(["demo", "--prepare-only", "--rebuild"]) == 0
    assert calls.pop("prepare") == (None, True, True) and "serve" not in calls
    assert main(["demo", "--port", "0", "--address", "127.0.0.1"]) == 0
    config, kw = calls["serve"]
    assert config.index == str(index) and config.pretrained == "/pkg/minilm"
    assert config.tau == pytest.approx(0.15)  # the demo index's τ
    assert kw["port"] == 0 and kw["address"] == "127.0.0.1"
    assert "Preparing the offline default" in capsys.readouterr().err


def test_attnflows_serve_prints_the_url_and_serves_the_app(demo_index, tmp_path):
    """The console script end to end: `attnflows serve --index DIR` loads the models the index names,
    prints the URL, and serves the page."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import urllib.request

    log = tmp_path / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "attnflows_panel", "serve", "--index", str(demo_index), "--port", "0",
             "--address", "127.0.0.1", "--tau", "0.25"],
            stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None:
            match = re.search(r"Attention Flows is served at (http://127\.0\.0\.1:\d+/)", log.read_text())
            url = match.group(1) if match else None
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        page = urllib.request.urlopen(url, timeout=60).read().decode()
        assert "<title>Attention Flows</title>" in page
        assert "fonts.googleapis" not in page and "cdn.jsdelivr" not in page  # everything served locally
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


# ----------------------------------------------------------------------------------------------------
# the defects of issue 10, as Bokeh-model tests (no browser)
# ----------------------------------------------------------------------------------------------------


def _model_texts(root, css_class: str) -> list[str]:
    return [m.text for m in root.select({"css_classes": [css_class]}) if hasattr(m, "text")]


def test_picking_a_similar_sample_moves_views_panel_and_url_together(app):
    from bokeh.document import Document

    doc = Document()
    root = app.__panel__().get_root(doc)
    results = app.browser.results
    target = str(results["id"].iloc[1])
    from panel.models.tabulator import CellClickEvent

    table = app.browser.results_table  # what a click on the second similar sample sends
    table._process_event(CellClickEvent(model=table.get_root(), column="id", row=1))
    assert app.sample_id == target and app.browser.selected_id == target
    assert app.view.result is app.result and app.result.sentence_a == app.index.sample(target)["sentence_a"]
    # the sentence view opened at the new sample's informative level, which a link restores by itself
    assert app.view.level == app.view.informative_level() and app.url_query() == f"sample={target}"
    # the Bokeh models the page shows: the sample card and the panel's "current" label name it
    assert any(html.escape(target) in t for t in _model_texts(root, "af-sample"))
    assert any(target in t for t in _model_texts(root, "af-current"))
    # the similar samples are now those of the picked sample
    want = app.index.query(sample_id=target, k=app.browser.k, exclude_self=True)
    assert list(app.browser.results["id"]) == list(want["id"])


def test_a_head_mask_typed_in_the_similar_samples_box_gives_results(app):
    first = sample_ids(app)[0]
    app.browser._heads_w.value = "2:*"  # typed in the box, counted from 1: layer 2 = the last of the tiny model
    want = app.index.query(sample_id=first, heads="1:*", k=app.browser.k, exclude_self=True)  # the index: 0-based
    assert app.browser.heads == "2:*" and app.browser.message == ""
    assert list(app.browser.results["id"]) == list(want["id"]) and len(want) > 0
    # the mask stays from one sample to the next, and says so beside the current sample
    app.show_sample(sample_ids(app)[3])
    assert app.browser.heads == "2:*" and "searching on 4 of 8 heads: 2:*" in app.browser._current.object
    app.show_sample(first)
    app.browser._heads_w.value = "5:*"  # out of range for 2 layers: a message, no exception
    assert app.browser.results.empty and "out of range" in app.browser.message
    assert app.browser._status.visible and app.sample_id == first


def test_a_callback_error_is_logged_and_shown_to_the_user(app, caplog):
    with caplog.at_level("ERROR", logger="attnflows_panel"):
        app.report_error(RuntimeError("boom <b>bold</b> https://example.com"))
    assert any(r.levelname == "ERROR" and "boom" in r.getMessage() for r in caplog.records)
    assert app._alert.visible and "RuntimeError: boom" in app.message
    assert "<b>" not in app._alert.object and "&lt;b&gt;" in app._alert.object
    assert "<a" not in app._alert.object  # an HTML pane of escaped text: a URL stays text
    app.show_sample(sample_ids(app)[1])  # the session keeps working
    assert app.sample_id == sample_ids(app)[1] and app.message == ""


def test_the_browser_current_label_escapes_ids(app):
    nasty = "x` ![img](https://e.com/i.png) <b>"
    from attnflows_panel.views.corpus_browser import CorpusBrowser

    browser = CorpusBrowser(app.index, selected_id=nasty)  # e.g. set from elsewhere: unknown, the label stays text
    label = browser._current.object
    assert "<b>" not in label.replace("<b>current:</b>", "") and html.escape(nasty) in label
    assert "unknown sample id" in browser.message and "<b>" not in browser._status.object
    app.browser.pick(nasty)  # in the app: a message, and the browser keeps the sample shown
    assert "Unknown sample id" in app.message and app.browser.selected_id == app.sample_id


def test_the_sidebar_names_models_by_hub_or_folder_name(app, sharp_bert_dirs):
    from attnflows_panel.app import model_label

    assert model_label("bert-base-uncased") == "bert-base-uncased"
    assert model_label("textattack/bert-base-uncased-MRPC") == "textattack/bert-base-uncased-MRPC"
    assert model_label(str(sharp_bert_dirs[1])) == Path(sharp_bert_dirs[1]).name
    # folders whose own name says nothing: the packaged MiniLM, a hub cache snapshot
    from attnflows_panel.defaults import pretrained_path

    assert model_label(pretrained_path()) == "all-MiniLM-L6-v2"
    snap = Path("/srv/hf/hub/models--textattack--bert-base-uncased-MRPC/snapshots/0123abc")
    assert model_label(snap) == "textattack/bert-base-uncased-MRPC"
    card = app._pair_info.object
    assert str(Path(sharp_bert_dirs[1]).parent) not in card and Path(sharp_bert_dirs[1]).name in card


@pytest.fixture(scope="module")
def demo_index_all_tasks(sharp_pair, tmp_path_factory):
    """An index over the whole bundled demo set: MRPC, RTE and QNLI pairs."""
    from attnflows_panel.index import build_index

    out = tmp_path_factory.mktemp("demo-all") / "demo"
    return build_index(sharp_pair, "demo", None, out, tau=0.3, progress=False)


def test_the_demo_corpus_is_scoped_to_the_model_task(sharp_pair, demo_index_all_tasks, sharp_bert_dirs, registry):
    from attnflows_panel.app import model_task
    from attnflows_panel.views.corpus_browser import row_tasks

    cfg = AppConfig(pretrained=str(sharp_bert_dirs[0]), finetuned=str(sharp_bert_dirs[1]),
                    index=str(demo_index_all_tasks))
    app = AttnFlowsApp(cfg, registry=registry)
    assert model_task(sharp_pair) == "mrpc" == app.task  # an MRPC classifier (its label names)
    tasks = row_tasks(app.index)
    assert set(tasks) == {"mrpc", "rte", "qnli"}  # the corpus holds all three
    b = app.browser
    shown = set(b.table.value["id"])
    assert shown == {str(i) for i, t in zip(app.index.metadata["id"], tasks, strict=False) if t == "mrpc"}
    assert set(b.param.label.objects) == {"any", "equivalent", "not_equivalent"}  # no RTE/QNLI labels
    assert set(b.results["id"]) <= shown and len(b.results) > 0  # similar samples of the task only
    assert "task MRPC" in b._count.object
    # a sample of another task (from a link): shown, but without the classifier's prediction
    rte = next(str(i) for i, t in zip(app.index.metadata["id"], tasks, strict=False) if t == "rte")
    app.show_sample(rte)
    assert app.sample_id == rte and "No prediction" in app._sample_card.object
    assert "predicts" not in app._sample_card.object


def test_view_state_given_to_the_app_goes_to_its_view(config, registry):
    app = AttnFlowsApp(config, registry=registry, tau=0.2, mode="finetuned")  # as a notebook does
    assert app.view.tau == pytest.approx(0.2) and app.view.mode == "finetuned" and app.tau == pytest.approx(0.2)


def test_serve_listens_on_this_machine_only_by_default(config, registry):
    """`attnflows serve` / `demo` without --address: 127.0.0.1, not every interface."""
    from attnflows_panel.app import serve

    thread, server = serve(config, registry=registry, port=0, threaded=True, preload_resources=False)
    try:
        assert server.address == "127.0.0.1"
        import urllib.request

        page = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=120).read().decode()
        assert "<title>Attention Flows</title>" in page
    finally:
        thread.stop()
    assert not thread.is_alive()


def test_the_head_panel_follows_the_sample_and_a_head_click_restricts_the_flow_view(app):
    """Issue #12's head panel under the corpus browser: it knows the current sample, averages over the
    similar samples as its subset, and a clicked head restricts the flow view's trace to that head."""
    from bokeh.document import Document

    from attnflows_panel import heads as head_measures

    app.__panel__().get_root(Document())
    panel = app.head_panel
    assert panel is not None and len(app.head_panel_slot.objects) == 1  # drawn under the browser
    first = sample_ids(app)[0]
    assert panel.sample_id == first and panel.sample == (app.result.sentence_a, app.result.sentence_b)
    assert panel.subset_ids == [str(x) for x in app.browser.results["id"]] and panel.subset_ids
    panel.scope = "subset"
    rows = app.index.rows_of(panel.subset_ids)
    np.testing.assert_allclose(panel.values(), head_measures.aggregate(*app.index.head_change(rows)).cosine, atol=1e-7)
    # a click on head 3 of layer 1: the view traces from [CLS] through that head only
    panel.selected_head = (1, 3)
    assert app.view.head == [1, 3] and app.view.selection == [[app.pair.num_layers, 0]]
    assert "head 3 of layer 1" in app.view.status or "head 4" in app.view.status
    # another sample: the panel follows
    other = sample_ids(app)[2]
    app.show_sample(other)
    assert panel.sample_id == other and panel.sample[0] == app.index.sample(other)["sentence_a"]


# ----------------------------------------------------------------------------------------------------
# issue 25: the head panel covers the browser's scope; training pairs are marked
# ----------------------------------------------------------------------------------------------------


def test_the_head_panel_covers_the_browsers_scope_names_labels_and_opens_samples(demo_index_all_tasks,
                                                                                   sharp_bert_dirs, registry):
    """Defect 3: the head panel averaged over all 306 demo samples while the browser showed the 102 MRPC
    ones, listed raw column names (label_name, pred_fine), and its rows could not be opened."""
    from bokeh.document import Document
    from panel.models.tabulator import CellClickEvent

    from attnflows_panel.views.corpus_browser import row_tasks

    cfg = AppConfig(pretrained=str(sharp_bert_dirs[0]), finetuned=str(sharp_bert_dirs[1]),
                    index=str(demo_index_all_tasks))
    app = AttnFlowsApp(cfg, registry=registry)
    app.__panel__().get_root(Document())
    panel = app.head_panel
    mrpc = np.flatnonzero(row_tasks(app.index) == "mrpc")
    assert 0 < len(mrpc) < len(app.index) and list(app.browser.filtered_rows()) == list(mrpc)
    np.testing.assert_allclose(panel.values(), app.index.head_change_summary(mrpc).cosine, atol=1e-7)
    assert f"mean over {len(mrpc)} samples (MRPC corpus)" in panel.title()
    panel.selected_head = (1, 2)  # around the current sample: the browser's task only
    listed = panel._query_result
    assert len(listed) and set(listed["id"]) <= set(app.browser.table.value["id"])
    table = next(o for o in panel._details.objects if hasattr(o, "on_click"))
    titles = table.titles
    assert titles["label_name"] == "label" and titles["pred_fine"] == "fine-tuned"  # the browser's names
    assert "head 3 of layer 2" in panel._details.objects[0].object
    target = str(listed["id"].iloc[1])
    table._process_event(CellClickEvent(model=table.get_root(Document()), column="id", row=1))  # a click opens it
    assert app.sample_id == target and app.result.sentence_a == app.index.sample(target)["sentence_a"]
    assert panel.sample_id == target and panel.sample == (app.result.sentence_a, app.result.sentence_b)
    # without a current sample: the lowest cosines of that head, of the task's samples only
    from attnflows_panel.views.head_panel import HeadPanel

    alone = HeadPanel(app.index, task="mrpc", k=8).head_query(1, 2)
    assert set(alone["id"]) <= set(app.browser.table.value["id"]) and "label_name" in alone


@pytest.fixture(scope="module")
def demo_model_index(sharp_bert_dirs, tmp_path_factory):
    """A fine-tuned model folder with the metrics.json that `attnflows demo` writes (fine-tuned on the
    bundled demo set's MRPC training split) and an index of the demo's MRPC pairs made with it."""
    from attnflows_panel.index import build_index
    from attnflows_panel.models import ModelPair

    fine = tmp_path_factory.mktemp("demo-model") / "fine"
    shutil.copytree(sharp_bert_dirs[1], fine)
    metrics = {"task": "mrpc", "data": "demo", "split": {"train": "train", "eval": "dev"},
               "settings": {"seed": 42, "train_limit": None}}
    (fine / "metrics.json").write_text(json.dumps(metrics))
    pair = ModelPair.load(str(sharp_bert_dirs[0]), str(fine), device="cpu")
    out = tmp_path_factory.mktemp("demo-model-index") / "demo"
    return build_index(pair, "demo", "mrpc", out, tau=0.3, progress=False)


def test_the_demo_models_training_pairs_are_marked_and_kept_out_of_its_accuracy(demo_model_index, capsys):
    """Defect 5: the demo's "correct" filter and `index info` accuracy counted mostly the pairs the default
    model was fine-tuned on (82 of 102); nothing marked them."""
    from attnflows_panel.app.training import training_mask
    from attnflows_panel.cli import main
    from attnflows_panel.corpus import load_corpus
    from attnflows_panel.index import SignatureIndex
    from attnflows_panel.views.corpus_browser import CorpusBrowser

    idx = SignatureIndex.open(demo_model_index)
    corpus = load_corpus("demo")
    train = {(a, b) for a, b, t, sp in zip(corpus["sentence_a"], corpus["sentence_b"], corpus["task"], corpus["split"],
                                           strict=True) if t == "mrpc" and sp == "train"}
    mask = training_mask(idx)  # from the fine-tuned model the index names
    md = idx.metadata
    assert len(md) == 102 and int(mask.sum()) == len(train) == 82
    assert all(m == ((a, b) in train) for m, a, b in zip(mask, md["sentence_a"], md["sentence_b"], strict=True))
    browser = CorpusBrowser(idx, task="mrpc", training=mask)
    shown = browser.table.value
    assert (shown["split"] == "training").sum() == 82 and (shown["split"] == "held-out").sum() == 20
    browser.split = "held-out"  # the filter
    assert len(browser.table.value) == 20 and set(browser.table.value["split"]) == {"held-out"}
    held = md["correct_fine"][~mask].astype(bool).mean()
    trained = md["correct_fine"][mask].astype(bool).mean()
    text = (f"fine-tuned accuracy {held:.3f} on 20 held-out pairs ({trained:.3f} on the 82 training pairs it "
            "was fine-tuned on)")
    assert text in browser._count.object
    assert main(["index", "info", "--index", str(demo_model_index)]) == 0
    assert f"accuracy   {text}" in capsys.readouterr().out
