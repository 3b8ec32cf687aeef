"""The served app (attnflows_panel/app/server.py): what a new session's first document holds (the first
view, built with Bokeh's model index frozen; benchmarks/README.md, P5)."""

from __future__ import annotations

import contextlib
import re
from collections import Counter

import pytest

from attnflows_panel.app import AppConfig, serve
from attnflows_panel.registry import Registry


@pytest.fixture
def config(sharp_bert_dirs, demo_index):
    return AppConfig(pretrained=str(sharp_bert_dirs[0]), finetuned=str(sharp_bert_dirs[1]), index=str(demo_index))


@pytest.fixture
def registry(sharp_pair, sharp_bert_dirs):
    reg = Registry()
    reg.add_pair(sharp_pair, sharp_bert_dirs[0], sharp_bert_dirs[1])
    return reg


def _pulled(config, registry) -> tuple[list, object]:
    """One session pulled from a freshly served app: (its document's models, the app behind it)."""
    import panel  # noqa: F401  (Panel's Bokeh models)
    from bokeh.client import pull_session

    apps = []
    thread, server = serve(config, registry=registry, port=0, address="127.0.0.1", threaded=True,
                           on_create=apps.append)
    try:
        session = pull_session(url=f"http://127.0.0.1:{server.port}/")
        models = list(session.document.models)
        session.close()
    finally:
        thread.stop()
    return models, apps[-1]


def _shape(models) -> Counter:
    """What a document is made of, independent of model ids."""
    def key(m):
        classes = tuple(sorted(getattr(m, "css_classes", None) or []))
        name = getattr(m, "name", None)
        if name and re.fullmatch(r"[A-Za-z]+-?\d+", name):  # numbered names (Row00793, main-1400043…)
            name = type(m).__name__
        return type(m).__name__, name, classes

    return Counter(key(m) for m in models)


def test_a_new_session_gets_its_first_view_in_its_first_document(config, registry):
    """The first view (sample card, radial view with its token nodes, sentence view) is in the document
    a browser pulls first, not sent afterwards as patches."""
    models, app = _pulled(config, registry)
    card = next(m for m in models if "af-sample" in (getattr(m, "css_classes", None) or []))
    assert app.sample_id and app.sample_id in card.text
    nodes = next(m for m in models if getattr(m, "name", None) == "attnflows-nodes")
    assert len(nodes.data["level"]) == len(app.view.flow.sources["nodes"].data["level"]) > 0
    assert any(type(m).__name__ == "Location" for m in models)  # the page URL is synchronised


def test_the_frozen_build_makes_the_same_document(config, registry, monkeypatch):
    """The page built with Bokeh's model index frozen equals the page built without the freeze."""
    from attnflows_panel.app import server

    frozen, _ = _pulled(config, registry)
    monkeypatch.setattr(server, "_frozen", lambda doc: contextlib.nullcontext())
    plain, _ = _pulled(config, registry)
    assert _shape(frozen) == _shape(plain)
    assert len(frozen) == len(plain) > 100


def test_a_threaded_server_leaves_the_garbage_collector_alone_unless_asked(config, registry):
    import gc

    from attnflows_panel.app import server

    before = gc.get_threshold()
    thread, _ = serve(config, registry=registry, port=0, address="127.0.0.1", threaded=True)
    thread.stop()
    assert gc.get_threshold() == before  # a notebook's or a test's process is not retuned
    try:
        server.tune_gc_for_serving()
        assert gc.get_threshold() == server.GC_THRESHOLDS
        assert gc.get_freeze_count() > 0  # what was loaded is out of the collector's walks
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_server_process_skips_bokehs_document_check_unless_the_environment_keeps_it(monkeypatch):
    from bokeh.settings import settings

    from attnflows_panel.app import server

    monkeypatch.delenv("BOKEH_VALIDATE_DOC", raising=False)
    try:
        assert settings.perform_document_validation()  # the test suite's own servers check every document
        server.skip_document_validation()
        assert not settings.perform_document_validation()
        settings.perform_document_validation.unset_value()
        monkeypatch.setenv("BOKEH_VALIDATE_DOC", "true")
        server.skip_document_validation()
        assert settings.perform_document_validation()  # the user's setting wins
    finally:
        settings.perform_document_validation.unset_value()
