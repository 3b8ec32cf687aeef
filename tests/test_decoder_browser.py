"""The decoder app walked in Chromium (issue #28, 6): ``attnflows serve`` on a tiny base/instruct pair of
causal LMs named by hub id (served by tests/hub_server.py's loopback hub), at 1280×800 and 1600×1000.

The user opens the page (the example chat, traced from the prompt's last token), freezes a token and traces
from it, goes Back and Forward, clicks a head glyph, types a prompt with a continuation by the fine-tuned
model, opens a prompt of the corpus browser (an index of `attnflows causal index`), and types a broken chat.
After every step: no server-side error and no browser error (console, page, failed or offsite request).
"""

from __future__ import annotations

import os
import re

import pytest

from attnflows_panel.causal import CausalPair
from attnflows_panel.causal_heads import Prompt
from attnflows_panel.index.build_causal import build_causal_index
from browser_support import (
    SCROLL_INTO_VIEW,
    TIMEOUT_S,
    PageProblems,
    ServedApp,
    settled_points,
    wait_for,
)
from causal_models import SENTENCES, instruct_from, write_family
from hub_server import LoopbackHub

pytestmark = [pytest.mark.browser]

from playwright.sync_api import expect  # noqa: E402  (a test extra: never skipped)

expect.set_options(timeout=TIMEOUT_S * 1000)
PRE, FINE = "org/tiny-qwen2", "org/tiny-qwen2-instruct"
PROMPTS = {f"p{i}": text for i, text in enumerate(SENTENCES)}
NODES = "attnflows-node-targets"
GLYPHS = "attnflows-glyph-targets"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``attnflows serve`` on two hub names, downloaded from the loopback hub into a fresh HF_HOME."""
    root = tmp_path_factory.mktemp("decoder_browser")
    base = write_family("qwen2", root / "base", layers=4, hidden=64, heads=8, kv=2)
    fine = instruct_from(base, root / "instruct")
    index = build_causal_index(CausalPair.load(base, fine), [Prompt(i, text=t) for i, t in PROMPTS.items()],
                               root / "index", tau=0.1)
    hub = LoopbackHub()
    hub.add_model(PRE, base)
    hub.add_model(FINE, fine)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    with hub:
        env.update(HF_HOME=str(root / "hf"), HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="1")
        srv = ServedApp(["--pretrained", PRE, "--finetuned", FINE, "--index", str(index), "--num-procs", "1"],
                        root / "server", env=env)
        fetched = [p for m, p in hub.requests if m == "GET" and "/resolve/" in p]
        assert any(p.endswith("model.safetensors") and FINE in p for p in fetched)
        yield srv
        srv.stop()


def _card(page) -> tuple[int, int]:
    card = page.locator(".af-sequence-card")
    expect(card).to_be_visible()
    return int(card.get_attribute("data-root")), int(card.get_attribute("data-n"))


def _wait_root(page, root: int) -> None:
    wait_for(lambda: page.locator(".af-sequence-card").count() and _card(page)[0] == root,
             what=f"the sequence card to name root {root}")


@pytest.mark.parametrize("viewport", [(1280, 800), (1600, 1000)])
def test_walk_a_decoder_pair(browser, server, viewport, output_dir):
    ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = ctx.new_page()
    page.set_default_timeout(TIMEOUT_S * 1000)
    problems = PageProblems(page, server.url)

    def clean(step: str) -> None:
        errors, page_errors = server.new_errors(), problems.take()
        assert not errors, f"server-side error during {step}:\n{errors}"
        assert not page_errors, f"browser errors during {step}:\n" + "\n".join(page_errors)

    try:
        # open: the example chat, its roles, the root at the prompt's last token (the assistant's turn)
        page.goto(server.url)
        root, n = _card(page)
        assert root == n - 1
        card = page.locator(".af-sequence")
        for role in ("system", "user", "assistant"):
            expect(card).to_contain_text(role)
        expect(card).to_contain_text("KL(fine-tuned")
        expect(page.locator(".af-root input")).to_have_value(str(root + 1))
        # the sentence view: one line per role, its tokens underlined in the role's colour
        bands = wait_for(lambda: page.locator(".attnflows-sentence").evaluate(
            "el => el.getAttribute('data-ready') === '1' ? el.attnflowsBands() : null"), what="the sentence view")
        assert len(bands) == n and bands[0] == 0 and bands[-1] == 2 and sorted(set(bands)) == [0, 1, 2]
        assert page.locator(".attnflows-sentence").get_attribute("data-rows") not in (None, "", "1")
        # the radial view's centre is the root
        page.evaluate(SCROLL_INTO_VIEW, NODES)
        pts = settled_points(page, NODES, ["token", "level", "pos"], "the radial view's tokens")
        top = max(p["level"] for p in pts)
        assert [p["pos"] for p in pts if p["level"] == top] == [root]
        # the rings are tinted by role; the info line names the roles in their colours
        info = page.locator(".attnflows-radial-info")
        expect(info).to_contain_text("ring tint: system · user · assistant")
        page.screenshot(path=str(output_dir / f"decoder-rings-{viewport[0]}.png"))
        clean("open")

        # freeze a token of the ring next to the root and trace from it
        ring = [p for p in pts if p["level"] == top - 1 and p["pos"] != root]
        tok = ring[len(ring) // 2]
        page.mouse.click(tok["x"], tok["y"])
        button = page.locator(".af-root-from-selection button")
        expect(button).to_be_enabled()
        button.click()
        _wait_root(page, tok["pos"])
        expect(page.locator(".af-root input")).to_have_value(str(tok["pos"] + 1))
        pts = settled_points(page, NODES, ["token", "level", "pos"], "the tokens traced from the new root")
        assert [p["pos"] for p in pts if p["level"] == top] == [tok["pos"]]
        wait_for(lambda: f"root={tok['pos'] + 1}" in page.evaluate("() => window.location.search"),
                 what="the new root in the address")
        clean("trace from a token")

        # Back and Forward: the address names the root, the view follows (the models do not run again)
        page.go_back()
        _wait_root(page, root)
        page.go_forward()
        _wait_root(page, tok["pos"])
        clean("Back and Forward")

        # a head glyph: click it, the status names the head
        glyph = settled_points(page, GLYPHS, ["head", "node"], "the head glyphs")[0]
        page.mouse.click(glyph["x"], glyph["y"])
        expect(page.get_by_text(re.compile(rf"head {glyph['head'] + 1} of layer \d+")).filter(visible=True).first
               ).to_be_visible()
        page.locator(".af-tool-reset").click()
        clean("a head glyph")

        # a typed prompt, continued by the fine-tuned model
        page.locator(".af-prompt textarea").fill("The cat sat on the mat and looked at the door.")
        page.locator(".af-generate input").fill("3")
        page.locator(".af-generate input").press("Enter")
        page.locator(".af-analyse button").click()
        expect(card).to_contain_text(re.compile(r"prompt 1–\d+"))
        prompt_len = int(re.search(r"prompt 1–(\d+)", page.locator(".af-sequence-card").text_content()).group(1))
        root2, n2 = _card(page)
        assert root2 == prompt_len - 1  # the prompt's last token, before the continuation
        assert prompt_len <= n2 <= prompt_len + 3
        clean("a typed prompt")

        # the corpus browser: a prompt of the index opens at its last token
        row = page.get_by_role("row", name=re.compile(r"^p3 "))
        row.scroll_into_view_if_needed()
        row.click()
        expect(card).to_contain_text("Prompt p3 of the index")
        expect(page.locator(".af-prompt textarea")).to_have_value(PROMPTS["p3"])
        root3, n3 = _card(page)
        assert root3 == n3 - 1
        expect(page.get_by_text(re.compile(r"^current: p3$"))).to_be_visible()
        page.evaluate("() => window.scrollTo(0, 0)")
        clean("a prompt of the index")

        # a broken chat: a message, the sequence stays
        before = _card(page)
        page.locator(".af-prompt textarea").fill('[{"role": "user", "content": "hi"')
        page.locator(".af-analyse button").click()
        expect(page.locator(".af-message")).to_contain_text("not valid JSON")
        assert _card(page) == before
        clean("a broken chat")
    finally:
        ctx.close()

