"""The served app (attnflows_panel/app/server.py): what a new session's first document holds, and the
``num_procs`` option of ``serve`` / ``attnflows serve|demo --num-procs`` (benchmarks/README.md, P5)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from attnflows_panel.app import AppConfig, serve
from attnflows_panel.app.server import check_num_procs
from attnflows_panel.registry import Registry


@pytest.fixture(scope="module")
def tiny_pair(sharp_bert_dirs):
    from attnflows_panel.models import ModelPair

    return ModelPair.load(str(sharp_bert_dirs[0]), str(sharp_bert_dirs[1]), device="cpu")


@pytest.fixture(scope="module")
def tiny_index(tiny_pair, tmp_path_factory):
    from attnflows_panel.index import build_index

    out = tmp_path_factory.mktemp("server-index") / "demo"
    return build_index(tiny_pair, "demo", None, out, limit=6, tau=0.3, progress=False)


@pytest.fixture
def config(sharp_bert_dirs, tiny_index):
    return AppConfig(pretrained=str(sharp_bert_dirs[0]), finetuned=str(sharp_bert_dirs[1]), index=str(tiny_index))


@pytest.fixture
def registry(tiny_pair, sharp_bert_dirs):
    reg = Registry()
    reg.add_pair(tiny_pair, sharp_bert_dirs[0], sharp_bert_dirs[1])
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


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "2"])
def test_num_procs_must_be_a_positive_whole_number(value):
    with pytest.raises(ValueError, match="positive whole number"):
        check_num_procs(value)


def test_num_procs_is_refused_on_windows_and_on_a_thread(monkeypatch, config, registry):
    assert check_num_procs(None) == 1 and check_num_procs(3) == 3
    with pytest.raises(ValueError, match="cannot run on a thread"):
        serve(config, registry=registry, port=0, threaded=True, num_procs=2)
    assert registry.loads["index"] == 0  # refused before anything was loaded
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(ValueError, match="Windows"):
        check_num_procs(2)
    assert check_num_procs(1) == 1


def test_cli_rejects_a_bad_num_procs_with_a_clear_message(capsys):
    from attnflows_panel.cli import main

    assert main(["serve", "--num-procs", "0"]) == 1
    assert "--num-procs: must be a positive whole number, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "--num-procs" in capsys.readouterr().out


@pytest.mark.skipif(sys.platform == "win32", reason="num_procs > 1 forks (documented: not on Windows)")
def test_attnflows_serve_from_two_processes_serves_first_views(tiny_index, tmp_path):
    """`attnflows serve --num-procs 2`: the weights are loaded before the fork, each process runs the
    models itself; sessions from both processes get their first view (no hang in a forked forward)."""
    import panel  # noqa: F401
    from bokeh.client import pull_session

    log = tmp_path / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "attnflows_panel", "serve", "--index", str(tiny_index), "--port", "0",
             "--address", "127.0.0.1", "--num-procs", "2"],
            stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        url = None
        while url is None:
            match = re.search(r"Attention Flows is served at (http://127\.0\.0\.1:\d+/)", log.read_text())
            url = match.group(1) if match else None
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert "Serving from 2 processes" in log.read_text()
        for _ in range(4):  # the connections land on either process
            session = pull_session(url=url)
            models = list(session.document.models)
            session.close()
            nodes = next(m for m in models if getattr(m, "name", None) == "attnflows-nodes")
            assert len(nodes.data["level"]) > 0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the supervising process and the two it forked
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
