"""The served app (attnflows_panel/app/server.py): what a new session's first document holds (the first
view, built with Bokeh's model index frozen; benchmarks/README.md, P5), and, in a headless Chromium on the
tiny model pair, the journey defects of issue 25 that live in the page itself: Back and Forward, the
tables at a laptop's width, the notice of a lost server."""

from __future__ import annotations

import contextlib
import re
import threading
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
    # the radial view's drawing (its component's packed data) is there too
    # (the radial component's model: the one with a frozen highlight; the sentence view has a pick too)
    radial = next(m for m in models if "frozen" in getattr(getattr(m, "data", None), "properties", set)())
    assert radial.data.data and set(radial.data.data) == set(app.view.flow.data)
    assert any(type(m).__name__ == "Location" for m in models)  # the page's URL is read at the start
    # the address the first view writes (replacing the bare address: no history entry) is in it too
    history = next(m for m in models if "entry" in getattr(getattr(m, "data", None), "properties", set)())
    assert history.data.entry["search"] == f"?sample={app.sample_id}" and history.data.entry["push"] is False


def test_the_frozen_build_makes_the_same_document(config, registry, monkeypatch):
    """The page built with Bokeh's model index frozen equals the page built without the freeze."""
    from attnflows_panel.app import server

    frozen, _ = _pulled(config, registry)
    monkeypatch.setattr(server, "_frozen", lambda doc: contextlib.nullcontext())
    plain, _ = _pulled(config, registry)
    assert _shape(frozen) == _shape(plain)
    assert len(frozen) == len(plain) > 40  # a whole page (its views are components: ~70 models on 2026-12-07)


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


# ----------------------------------------------------------------------------------------------------
# in Chromium (the tiny pair, a server thread of this process): issue 25's page defects
# ----------------------------------------------------------------------------------------------------

# JavaScript: [scrollWidth, clientWidth] of every Tabulator table body of the page (through shadow roots)
TABLE_WIDTHS = """() => { const out = []; const walk = (root) => root.querySelectorAll('*').forEach(e => {
  if (e.classList && e.classList.contains('tabulator-tableholder')) out.push([e.scrollWidth, e.clientWidth]);
  if (e.shadowRoot) walk(e.shadowRoot); }); walk(document); return out; }"""


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium for this module's browser tests (each test gets a fresh context of its own)."""
    from playwright.sync_api import expect, sync_playwright

    from browser_support import TIMEOUT_S, launch_chromium

    expect.set_options(timeout=TIMEOUT_S * 1000)  # a loaded 2-core machine; every wait ends on its condition
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@contextlib.contextmanager
def _page(browser, config, registry, width: int = 1500, height: int = 1000):
    """A served app and a page on it, in a context of its own: yields (page, apps, url, thread); no page
    error allowed."""
    from browser_support import PageProblems

    apps = []
    thread, server = serve(config, registry=registry, port=0, address="127.0.0.1", threaded=True,
                           on_create=apps.append, keep_alive_milliseconds=0)  # a Bokeh race: see test_app_browser
    url = f"http://127.0.0.1:{server.port}/"
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        page.set_default_timeout(90_000)
        problems = PageProblems(page, url)
        yield page, apps, url, thread
        assert problems.take() == []
    finally:
        context.close()
        thread.stop()


def _history_length(page) -> int:
    return page.evaluate("() => window.history.length")


@pytest.mark.browser
def test_back_and_forward_restore_the_state_the_address_shows(chromium, config, registry, demo_index):
    """Defect 1: Back and Forward changed the address bar and not the view, and every τ step added a
    history entry. A discrete change (a sample, a mode) adds an entry, a continuous one (τ) replaces it."""
    from playwright.sync_api import expect

    from browser_support import wait_for

    ids = [str(x) for x in registry.index(demo_index).metadata["id"]]
    first, target = ids[0], ids[4]
    with _page(chromium, config, registry) as (page, apps, url, _):
        page.goto(url)
        expect(page.locator(".af-sample-id")).to_have_text(first)
        expect(page).to_have_url(f"{url}?sample={first}")  # the first state replaces the bare address
        app = wait_for(lambda: apps[-1] if apps else None, what="the session")
        start = _history_length(page)
        page.locator(".af-browser .tabulator-row").filter(has_text=target).first.click()
        expect(page).to_have_url(f"{url}?sample={target}")
        assert _history_length(page) == start + 1
        handle = page.locator(".noUi-handle").first  # τ, by keyboard: three steps, one entry
        for step in range(1, 4):  # each step once the last has reached the server (a loaded machine lags)
            handle.focus()
            handle.press("ArrowLeft")
            wait_for(lambda step=step: app.tau < config.tau - 0.01 * step + 0.005, what=f"τ step {step} to arrive")
        tau = app.tau
        assert tau < config.tau - 0.025
        expect(page).to_have_url(f"{url}?sample={target}&tau={tau:g}")
        assert _history_length(page) == start + 1
        page.locator(".bk-btn-group button", has_text="Fine-tuned").first.click()
        expect(page).to_have_url(f"{url}?sample={target}&tau={tau:g}&mode=finetuned")
        assert _history_length(page) == start + 2

        page.go_back()  # the mode goes, τ stays
        expect(page).to_have_url(f"{url}?sample={target}&tau={tau:g}")
        wait_for(lambda: app.mode == "combined" and app.sample_id == target and app.tau == tau, what="the mode back")
        page.go_back()  # the first sample, at the link's τ
        expect(page).to_have_url(f"{url}?sample={first}")
        expect(page.locator(".af-sample-id")).to_have_text(first)
        wait_for(lambda: app.sample_id == first and app.tau == config.tau and app.view.result is app.result,
                 what="the first sample back")
        assert app.browser.selected_id == first and app.head_panel.sample_id == first  # everything follows
        page.go_forward()
        expect(page.locator(".af-sample-id")).to_have_text(target)
        wait_for(lambda: app.sample_id == target and app.tau == tau and app.mode == "combined", what="forward")
        page.go_forward()
        wait_for(lambda: app.mode == "finetuned", what="the mode forward")
        expect(page).to_have_url(f"{url}?sample={target}&tau={tau:g}&mode=finetuned")
        assert _history_length(page) == start + 2  # going back and forth added nothing


@pytest.mark.browser
def test_the_tables_fit_a_laptop_window_and_cut_sentences_have_a_tooltip(chromium, config, registry, demo_index):
    """Defect 7: the corpus and similar-samples tables scrolled sideways at 1280 px, cut sentences had
    no tooltip, and a one-row result left 250 px of blank table."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect

    from browser_support import wait_for

    with _page(chromium, config, registry, width=1280, height=800) as (page, apps, url, _):
        page.goto(url)
        rows = page.locator(".af-browser .tabulator-row")
        expect(rows.first).to_be_visible()
        app = wait_for(lambda: apps[-1] if apps else None, what="the session")
        widths = page.evaluate(TABLE_WIDTHS)
        assert len(widths) >= 2 and all(scroll <= client + 1 for scroll, client in widths), widths
        cell = rows.first.locator(".tabulator-cell[tabulator-field=sentence_a]")

        def hovered() -> bool:  # the table may redraw its rows meanwhile (the similar samples arriving)
            try:
                cell.hover(timeout=5_000)
            except PlaywrightError:
                return False
            return True

        wait_for(hovered, what="a hover on the first sentence of the corpus table")
        full = str(app.index.metadata["sentence_a"].iloc[0])
        expect(page.locator(".tabulator-tooltip")).to_have_text(full)
        app.browser.k = 1  # one similar sample: a table of one row
        similar = page.locator(".af-browser .tabulator").nth(1)
        expect(similar.locator(".tabulator-row")).to_have_count(1)
        wait_for(lambda: similar.bounding_box()["height"] < 120, what="a short table for one row")


@pytest.mark.browser
def test_a_page_that_loses_its_server_says_so(chromium, sharp_bert_dirs, demo_index, tmp_path):
    """Defect 10: a page left open across a server restart showed no "disconnected" notice. The server
    runs as a user runs it (`attnflows serve`, a process) and is stopped under the open page."""
    from playwright.sync_api import expect

    from attnflows_panel.app.server import DISCONNECTED
    from browser_support import TIMEOUT_S, PageProblems, ServedApp

    server = ServedApp(["--pretrained", str(sharp_bert_dirs[0]), "--finetuned", str(sharp_bert_dirs[1]),
                        "--index", str(demo_index)], tmp_path / "server")
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        problems = PageProblems(page, server.url)
        page.goto(server.url)
        expect(page.locator(".af-browser .tabulator-row").first).to_be_visible(timeout=TIMEOUT_S * 1000)
        assert server.new_errors() == "" and problems.take() == []
        server.stop()  # the server goes away under the open page
        expect(page.locator(".notyf__message")).to_have_text(DISCONNECTED, timeout=TIMEOUT_S * 1000)
    finally:
        context.close()
        server.stop()


class _RecordingRegistry(Registry):
    """A registry that notes the thread of every call that may run the models (its result not in the
    cache when called). Two calls for one pair can overlap (a second pick while the first runs): both are
    noted, the second waits for the first and takes its result; ``loads["run"]`` counts the model runs."""

    def __init__(self):
        super().__init__()
        self.run_threads: list[str] = []

    def run(self, pair, sentence_a: str, sentence_b: str, weights: str = "raw"):
        if self.cached_result(pair, sentence_a, sentence_b, weights=weights) is None:
            self.run_threads.append(threading.current_thread().name)
        return super().run(pair, sentence_a, sentence_b, weights=weights)


@pytest.mark.browser
def test_no_model_runs_on_the_event_loop(chromium, config, sharp_pair, sharp_bert_dirs, demo_index):
    """Issue 25: "Load model pair" and the first view ran the models inside a locked callback, holding the
    event loop. A link to a sample never run, a pick in the table and Back each run the models in an
    executor thread (asyncio's), and the page shows the result."""
    from playwright.sync_api import expect

    registry = _RecordingRegistry()
    registry.add_pair(sharp_pair, sharp_bert_dirs[0], sharp_bert_dirs[1])
    ids = [str(x) for x in registry.index(demo_index).metadata["id"]]
    with _page(chromium, config, registry) as (page, _apps, url, _):
        before = len(registry.run_threads)  # the server's warm-up ran the first sample in this thread
        runs_before = registry.loads["run"]
        page.goto(f"{url}?sample={ids[7]}")
        expect(page.locator(".af-sample-id")).to_have_text(ids[7])
        page.locator(".af-browser .tabulator-row").filter(has_text=ids[3]).first.click()
        expect(page.locator(".af-sample-id")).to_have_text(ids[3])
        page.go_back()
        expect(page.locator(".af-sample-id")).to_have_text(ids[7])
        # the link and the pick run the models once each; Back takes the link's result from the cache
        assert registry.loads["run"] - runs_before == 2
        runs = registry.run_threads[before:]
        assert len(runs) >= 2 and all(name.startswith("asyncio") for name in runs), runs
