"""The served app in a real headless Chromium (Playwright + Debian chromium), on the real MiniLM pair.

One server per module (a thread of this process, so the tests can also look at each session's app
object), a small index over the bundled demo corpus, one browser. Every test fails on a browser console
error, an uncaught page error, a failed request, a request that leaves the server (all assets must be
served locally: the app works offline), or an ERROR logged on the server (the 'bokeh', 'tornado',
'panel' and 'attnflows_panel' loggers: a callback's exception is one). Tests wait on conditions, never
on fixed sleeps.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.real_model]

from playwright.sync_api import expect  # noqa: E402  (a test extra: never skipped)

from browser_support import REPO, PageProblems, free_port  # noqa: E402

TIMEOUT_MS = 60_000  # a loaded 2-core CI machine: generous, but every wait ends on its condition
expect.set_options(timeout=TIMEOUT_MS)
N_SAMPLES = 16
TAU = 0.2
SCRIPT = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">A cat sat.'


def wait_for(condition, timeout: float = TIMEOUT_MS / 1000, what: str = "condition"):
    """Poll ``condition`` (server-side state) until it holds; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# ----------------------------------------------------------------------------------------------------
# fixtures: one served app, one browser
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_index(minilm_pair, tmp_path_factory):
    from attnflows_panel.index import build_index

    out = tmp_path_factory.mktemp("browser-index") / "demo"
    return build_index(minilm_pair, "demo", None, out, limit=N_SAMPLES, tau=TAU, progress=False)


SERVER_LOGGERS = ("bokeh", "tornado", "panel", "attnflows_panel")


class ServerErrors(logging.Handler):
    """Collects the ERROR records of the server's loggers (exceptions in session callbacks included)."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.records: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record):
        text = self.format(record)
        if record.exc_info and record.exc_info[1] is not None:
            text += f" [{type(record.exc_info[1]).__name__}: {record.exc_info[1]}]"
        self.records.append(text)

    def take(self) -> list[str]:
        out, self.records = self.records, []
        return out


@pytest.fixture(scope="module")
def server_errors():
    handler = ServerErrors()
    for name in SERVER_LOGGERS:
        logging.getLogger(name).addHandler(handler)
    yield handler
    for name in SERVER_LOGGERS:
        logging.getLogger(name).removeHandler(handler)


@pytest.fixture(scope="module")
def served(minilm_pair, minilm_path, minilm_finetuned_dir, demo_index, server_errors):
    from attnflows_panel.app import AppConfig, serve
    from attnflows_panel.registry import Registry

    registry = Registry()
    registry.add_pair(minilm_pair, minilm_path, minilm_finetuned_dir)
    config = AppConfig(pretrained=str(minilm_path), finetuned=str(minilm_finetuned_dir), index=str(demo_index), tau=TAU)
    apps = []
    # keep_alive_milliseconds=0: Bokeh's keep-alive ping, when it meets a socket the browser is closing,
    # detaches the session, and the close that follows then fails in Bokeh's WSHandler.on_close
    # ("assert self._session is not None", bokeh/server/connection.py): a race in Bokeh, not in the app,
    # that a page closed at a test's end can hit. Local pages need no pings; every other error still counts.
    thread, server = serve(config, registry=registry, port=0, address="127.0.0.1", threaded=True, on_create=apps.append,
                           keep_alive_milliseconds=0)
    url = f"http://127.0.0.1:{server.port}/"
    yield SimpleNamespace(url=url, apps=apps, registry=registry, config=config,
                          index=registry.cached_index(demo_index, minilm_pair), errors=server_errors)
    thread.stop()


@pytest.fixture
def page(browser, served):
    context = browser.new_context(viewport={"width": 1500, "height": 1300})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.problems = PageProblems(pg, served.url.rstrip("/"))
    served.errors.take()
    yield pg
    try:
        problems = pg.problems.take()
        assert problems == [], "\n".join(problems)
        errors = served.errors.take()
        assert errors == [], "errors on the server:\n" + "\n".join(errors)
    finally:
        context.close()


def open_app(page, served, query: str = "", expect_id: str | None = None):
    """Open the app and wait until its first view is there; return this session's app object."""
    n = len(served.apps)
    page.goto(served.url + (f"?{query}" if query else ""))
    app = wait_for(lambda: served.apps[n] if len(served.apps) > n else None, what="the session's app")
    expect(page.locator(".af-sample")).to_be_visible()
    if expect_id is not None:
        expect(page.locator(".af-sample-id")).to_have_text(expect_id)
    expect(page.locator(".af-flow-view canvas").first).to_be_visible()
    page.wait_for_function("() => window.Bokeh !== undefined && Bokeh.documents.length > 0")
    return app


def ids(served) -> list[str]:
    return [str(x) for x in served.index.metadata["id"]]


def flow_pixels(page) -> str:
    return page.locator(".af-flow-view canvas").first.evaluate("c => c.toDataURL()")


# ----------------------------------------------------------------------------------------------------
# tests
# ----------------------------------------------------------------------------------------------------


def test_pick_a_sample_and_the_flow_view_updates(page, served):
    first, target = ids(served)[0], ids(served)[5]
    app = open_app(page, served, expect_id=first)
    before = flow_pixels(page)
    page.locator(".af-browser .tabulator-row").filter(has_text=target).first.click()
    expect(page.locator(".af-sample-id")).to_have_text(target)
    row = served.index.sample(target)
    expect(page.locator(".af-text-a")).to_have_text(row["sentence_a"])
    wait_for(lambda: flow_pixels(page) != before, what="the radial view to redraw")
    assert app.sample_id == target and app.result.sentence_b == row["sentence_b"]
    assert app.view.result is app.result  # the flow view draws the picked sample
    # label and both predictions with probabilities
    card = page.locator(".af-sample")
    expect(card).to_contain_text(f"gold label: {row['label_name']}")
    fine = app.result.finetuned
    expect(card).to_contain_text(f"fine-tuned predicts {fine.label}")
    expect(card).to_contain_text(f"{fine.probs[fine.label]:.2f}")
    expect(page).to_have_url(f"{served.url}?sample={target}")


def test_type_a_pair_and_search_similar_samples(page, served):
    app = open_app(page, served, expect_id=ids(served)[0])
    page.locator(".af-input-a textarea").fill("The committee approved the new budget on Monday.")
    page.locator(".af-input-b textarea").fill("On Monday the new budget was approved by the committee.")
    page.locator(".af-run button").click()
    expect(page.locator(".af-text-b")).to_have_text("On Monday the new budget was approved by the committee.")
    expect(page.locator(".af-sample")).to_contain_text("not in the corpus")
    wait_for(lambda: app.browser.result is app.result and app.browser.results is not None, what="the similarity query")
    results = app.browser.results
    assert len(results) > 0 and set(results["id"]) <= set(ids(served))
    # the similar-samples table in the page lists those results, best first
    first_hit = str(results["id"].iloc[0])
    expect(page.locator(".af-browser").get_by_text("a pair that is not in the index")).to_be_visible()
    expect(page.locator(".af-browser .tabulator-row").filter(has_text=first_hit).first).to_be_visible()
    assert "a=The+committee" in page.url


def test_a_shared_url_restores_the_same_state(page, browser, served):
    target = ids(served)[3]
    app = open_app(page, served, expect_id=ids(served)[0])
    page.locator(".af-browser .tabulator-row").filter(has_text=target).first.click()
    expect(page.locator(".af-sample-id")).to_have_text(target)
    # mode: click "Fine-tuned"; τ: keyboard on the slider; selection: click [CLS] at the centre of the rings
    page.locator(".bk-btn-group button", has_text="Fine-tuned").first.click()
    wait_for(lambda: app.mode == "finetuned", what="the mode to change")
    handle = page.locator(".noUi-handle").first
    handle.focus()
    handle.press("ArrowLeft")
    wait_for(lambda: app.tau < TAU, what="τ to change")
    tau = app.tau
    L = app.pair.num_layers
    # click [CLS], the root, where the radial component draws it (its test hook, views/radial.py)
    radial = page.locator(".attnflows-radial")
    radial.scroll_into_view_if_needed()
    point = next(p for p in radial.evaluate("(el) => el.attnflowsPoints('nodes')") if (p["level"], p["pos"]) == (L, 0))
    page.mouse.click(point["x"], point["y"])
    # the tap freezes a token there ([CLS], or a token of the innermost ring whose halo lies on top)
    selection = wait_for(lambda: app.selection, what="the click to freeze a selection")
    assert len(selection) == 1 and selection[0][0] in (L, L - 1) and app.view.selection == selection
    sel = f"{selection[0][0] + 1}%3A{selection[0][1] + 1}"  # the link counts levels and tokens from 1
    # the level the view kept from τ 0.2 is in the link unless it is also the informative level at τ
    level = "" if app.view.level == app.view.informative_level() else f"&level={app.view.level + 1}"
    expect(page).to_have_url(f"{served.url}?sample={target}&tau={tau:g}&mode=finetuned{level}&sel={sel}")
    shared = page.url

    page.reload()  # the same URL in a fresh session
    restored = wait_for(lambda: served.apps[-1] if served.apps[-1] is not app else None, what="a new session")
    expect(page.locator(".af-sample-id")).to_have_text(target)
    wait_for(lambda: restored.result is not None and restored.view is not None, what="the restored view")
    got = (restored.sample_id, restored.tau, restored.mode, restored.selection)
    assert got == (target, tau, "finetuned", selection)
    assert restored.view.selection == selection and restored.view.mode == "finetuned"
    np.testing.assert_array_equal(restored.view.highlight().nodes, app.view.highlight().nodes)
    assert restored.message == ""
    assert page.url == shared
    query = parse_qs(urlparse(shared).query)
    assert query == {"sample": [target], "tau": [f"{tau:g}"], "mode": ["finetuned"],
                     "sel": [f"{selection[0][0] + 1}:{selection[0][1] + 1}"],
                     **({"level": [level[7:]]} if level else {})}
    assert restored.view.level == app.view.level


def test_a_script_sentence_is_shown_as_text_and_never_runs(page, served):
    open_app(page, served, expect_id=ids(served)[0])
    page.locator(".af-input-a textarea").fill(SCRIPT)
    page.locator(".af-input-b textarea").fill("A cat was sitting.")
    page.locator(".af-run button").click()
    expect(page.locator(".af-text-a")).to_have_text(SCRIPT)  # the markup is visible as text
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator(".af-main img[src='x']").count() == 0
    # the shared link of that pair restores it, still as text
    page.reload()
    expect(page.locator(".af-text-a")).to_have_text(SCRIPT)
    assert page.evaluate("() => window.__pwned") is None


def test_bad_input_gives_visible_messages_and_the_session_keeps_working(page, served):
    app = open_app(page, served, query="sample=no-such-id&tau=abc", expect_id=ids(served)[0])
    message = page.locator(".af-message")
    expect(message).to_be_visible()
    expect(message).to_contain_text("Unknown sample id 'no-such-id'")
    expect(message).to_contain_text("τ in the link must be a number")
    page.locator(".af-input-a textarea").fill("   ")
    page.locator(".af-input-b textarea").fill("Only the second sentence.")
    page.locator(".af-run button").click()
    expect(page.locator(".af-form-note")).to_contain_text("sentence A is empty")
    target = ids(served)[2]
    page.locator(".af-browser .tabulator-row").filter(has_text=target).first.click()
    expect(page.locator(".af-sample-id")).to_have_text(target)
    expect(message).to_be_hidden()
    assert app.sample_id == target


def similar_table(page):
    """The similar-samples table: the second Tabulator of the corpus browser."""
    return page.locator(".af-browser .tabulator").nth(1)


def test_pick_a_similar_sample_views_panel_and_url_agree(page, served):
    """The defect of issue 10: picking a similar sample raised in the server (a Bokeh model changed
    outside the document lock); the panel then named one sample and the views another."""
    app = open_app(page, served, expect_id=ids(served)[0])
    wait_for(lambda: app.browser is not None and app.browser.results is not None and len(app.browser.results) > 1,
             what="the similar samples")
    target = str(app.browser.results["id"].iloc[1])
    row = similar_table(page).locator(".tabulator-row").filter(has_text=target).first
    row.click()
    expect(page.locator(".af-sample-id")).to_have_text(target)  # the views' sample card
    expect(page.locator(".af-browser .af-current")).to_contain_text(target)  # the similar-samples panel
    expect(page).to_have_url(f"{served.url}?sample={target}")  # the URL
    wait_for(lambda: app.view.result is app.result and app.browser.selected_id == target, what="the views to follow")
    assert app.sample_id == target and app.result.sentence_a == served.index.sample(target)["sentence_a"]
    # the table in the page lists the picked sample's similar samples, not the old ones
    wait_for(lambda: app.browser.results is not None and len(app.browser.results) > 1, what="the new similar samples")
    shown = [str(x) for x in app.browser.results["id"].iloc[:3]]
    for rank, sid in enumerate(shown):
        expect(similar_table(page).locator(".tabulator-row").nth(rank)).to_contain_text(sid)
    # and the next pick works too (the session is intact)
    nxt = str(app.browser.results["id"].iloc[0])
    similar_table(page).locator(".tabulator-row").filter(has_text=nxt).first.click()
    expect(page.locator(".af-sample-id")).to_have_text(nxt)
    expect(page).to_have_url(f"{served.url}?sample={nxt}")


def test_a_head_mask_typed_in_the_similar_samples_box_gives_results(page, served):
    app = open_app(page, served, expect_id=ids(served)[0])
    box = page.get_by_placeholder("all heads, e.g. 6:*,5:3")
    box.fill("6:*")  # the last layer, counted from 1 as the box's label says
    box.press("Enter")
    wait_for(lambda: app.browser.heads == "6:*", what="the head mask to arrive")
    want = served.index.query(sample_id=ids(served)[0], heads="5:*", k=app.browser.k, exclude_self=True,
                              filters={"rows": app.browser._scope} if app.browser._scope is not None else None)
    wait_for(lambda: list(app.browser.results["id"]) == list(want["id"]), what="the masked search")
    expect(similar_table(page).locator(".tabulator-row").filter(has_text=str(want["id"].iloc[0])).first).to_be_visible()
    # a bad mask: a visible message, no exception
    box.fill("99:*")
    box.press("Enter")
    expect(page.locator(".af-browser-message")).to_contain_text("out of range")


def test_a_url_value_is_shown_as_text_never_as_a_link(page, served):
    open_app(page, served, query="sample=https://example.com/x", expect_id=ids(served)[0])
    message = page.locator(".af-message")
    expect(message).to_contain_text("Unknown sample id 'https://example.com/x'")
    assert message.locator("a").count() == 0 and message.locator("img").count() == 0


def test_panel_serve_app_py_works_on_a_cold_server(browser, minilm_path, minilm_finetuned_dir, demo_index, tmp_path):
    """`panel serve attnflows_panel/app/app.py`, configured by ATTNFLOWS_* variables: the first session shows
    a busy indicator while the models load, then the first sample."""
    port = free_port()
    env = dict(os.environ, ATTNFLOWS_PRETRAINED=str(minilm_path), ATTNFLOWS_FINETUNED=str(minilm_finetuned_dir),
               ATTNFLOWS_INDEX=str(demo_index), ATTNFLOWS_TAU=str(TAU))
    log = open(tmp_path / "panel-serve.log", "w")  # noqa: SIM115 - the server's output, closed in the finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "panel", "serve", str(REPO / "attnflows_panel" / "app" / "app.py"), "--port", str(port),
         "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )
    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    try:
        url = f"http://127.0.0.1:{port}/app"
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while True:  # wait for the server to listen
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "panel-serve.log").read_text()
                assert time.monotonic() < deadline, "panel serve did not start"
                time.sleep(0.1)
        pg = context.new_page()
        pg.set_default_timeout(2 * TIMEOUT_MS)
        problems = PageProblems(pg, f"http://127.0.0.1:{port}")
        pg.goto(url)
        first = str(__import__("pandas").read_parquet(Path(demo_index) / "metadata.parquet")["id"].iloc[0])
        expect(pg.locator(".af-sample-id")).to_have_text(first)
        expect(pg.locator(".af-flow-view canvas").first).to_be_visible()
        expect(pg.locator(".af-browser .tabulator-row").filter(has_text=first).first).to_be_visible()
        expect(pg.locator(".af-busy")).to_have_text("")  # the busy note is gone once loaded
        assert problems.take() == []
        log.flush()
        server_log = (tmp_path / "panel-serve.log").read_text()
        assert "Traceback" not in server_log and "ERROR" not in server_log, server_log
    finally:
        context.close()
        proc.terminate()
        proc.wait(30)
        log.close()


@pytest.mark.parametrize("width,height", [(1280, 800), (1600, 1000), (1920, 1080)])
def test_every_plot_of_the_app_fits_the_window_width(browser, served, width, height):
    """Nothing is cut off at a laptop's width: the flow and context views, the corpus browser's heatmap
    and signature map all lie inside the window, and the page does not scroll sideways (the browser's
    plots used to sit beyond the right edge, out of reach, at all three sizes). The radial view is
    whole above the fold on opening, and taller on a taller window."""
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        app = open_app(page, served)
        wait_for(lambda: app.browser is not None, what="the corpus browser")
        canvases = page.locator(".af-main canvas, .af-browser canvas")
        expect(page.locator(".af-browser canvas").first).to_be_visible()
        plots = 0
        for i in range(canvases.count()):
            # no scrolling into view: an inner box that scrolls sideways would bring the plot in, and
            # hide that it is out of the window
            box = canvases.nth(i).bounding_box()
            if box is None or box["width"] < 100:  # small canvases (a glyph swatch) are not plots
                continue
            plots += 1
            assert box["x"] >= 0 and box["x"] + box["width"] <= width + 1, (i, box, width)
        assert plots >= 4  # radial and context views, heatmap, map
        # the radial view is whole above the fold when the page opens, and grows with the window's height
        # (APP_FLOW_HEIGHT); in a column Bokeh kept it at its design height, 43 px below the fold at 1280×800
        flow = page.locator(".af-flow-view canvas").first.bounding_box()
        assert flow["y"] + flow["height"] <= height + 1, (flow, height)
        assert flow["height"] >= 0.55 * height, (flow, height)
        scroll = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert scroll[0] <= scroll[1], scroll
    finally:
        context.close()
