"""The τ profile chart (views/tau_profile, issue 27) on real MiniLM attentions: what the page counts per
level at the current τ and at a hovered τ equals bottleneck.tau_profile (and so the Attention Graph at
that τ), a click on the chart sets τ in Python, and the browser logs no error. Bad widths are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attnflows_panel.bottleneck import bottleneck, tau_profile
from attnflows_panel.compare import FINE, PRE
from attnflows_panel.graph import AttentionGraph
from attnflows_panel.views.tau_profile import TauProfile, pack_widths
from browser_support import launch_chromium, served_panel, wait_for

A = "The company said it expects the deal to close in the third quarter."
B = "The deal is expected to close in the third quarter, the company said."


@pytest.fixture(scope="module")
def widths(minilm_pair):
    r = minilm_pair.run(A, B)
    return {PRE: bottleneck(r.pretrained.attentions).node, FINE: bottleneck(r.finetuned.attentions).node}, r


def test_pack_widths_sorts_each_level_and_leaves_out_the_root(widths):
    w, _ = widths
    packed = pack_widths(w)
    L, n = w[PRE].shape[0] - 1, w[PRE].shape[1]
    assert packed["L"] == L and packed["n"] == n and packed["models"] == [PRE, FINE]
    body = packed[f"w{PRE}"].reshape(L, n)
    assert (np.diff(body, axis=1) >= 0).all()
    np.testing.assert_array_equal(body, np.sort(w[PRE][:-1], axis=1).astype(np.float32))
    with pytest.raises(ValueError, match=r"\[L \+ 1, n\]"):
        pack_widths({PRE: np.zeros(5)})
    bad = w[PRE].copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="not finite"):
        pack_widths({PRE: bad})


@pytest.mark.browser
@pytest.mark.real_model
def test_the_chart_counts_what_the_graph_holds_and_a_click_sets_tau(widths):
    from playwright.sync_api import sync_playwright

    w, result = widths
    chart = TauProfile.from_widths(w, tau=0.15, width=360, height=150)
    with served_panel(lambda: chart) as port, sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 500, "height": 300})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{port}/")
        el = page.locator(".attnflows-tau-profile")
        wait_for(lambda: el.count() and el.get_attribute("data-ready") == "1", 30, "the tau profile")

        def counts(attr="data-counts"):
            return json.loads(el.get_attribute(attr))

        for tau in (0.15, 0.3):
            chart.tau = tau
            wait_for(lambda t=tau: el.get_attribute("data-tau") == str(t), 10, f"tau {tau} drawn")
            got = counts()
            for code, name, attn in ((PRE, "pre", result.pretrained.attentions),
                                     (FINE, "fine", result.finetuned.attentions)):
                want = tau_profile(w[code], [tau])[0][:-1]
                assert got[name] == want.tolist()
                graph = AttentionGraph(attn, tau)
                assert got[name] == [len(graph.levels[k]) for k in range(graph.L)]  # the graph at that tau
        box = el.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        wait_for(lambda: el.get_attribute("data-hover-tau") is not None, 10, "the hover readout")
        hover_tau = float(el.get_attribute("data-hover-tau"))
        hc = counts("data-hover-counts")
        assert hc["pre"] == tau_profile(w[PRE], [np.float32(hover_tau)])[0][:-1].tolist()
        page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        wait_for(lambda: abs(chart.tau - hover_tau) < 2e-3, 10, "tau set by the click")
        wait_for(lambda: el.get_attribute("data-tau") == str(chart.tau), 10, "the new tau drawn")
        page.screenshot(path="test-output/tau-profile.png")
        browser.close()
    assert not errors, errors


def test_the_view_shows_the_profile_of_its_result_and_follows_it(widths):
    """AttentionFlowsView's controls hold the τ profile of its result: the widths of both models (one
    in a single-model mode), τ kept in step both ways, a τ set from the chart clamped to the slider's
    bounds."""
    from attnflows_panel.views.attention_flows import TAU_BOUNDS, AttentionFlowsView

    w, result = widths
    view = AttentionFlowsView(result, tau=0.15)
    chart = next(o for o in view.parts().controls.objects if isinstance(o, TauProfile))
    want = pack_widths(w)
    assert chart.data["models"] == [PRE, FINE] and chart.tau == 0.15
    np.testing.assert_array_equal(chart.data[f"w{FINE}"], want[f"w{FINE}"])
    view.tau = 0.3
    assert chart.tau == 0.3
    chart.tau = 0.2  # a click on the chart
    assert view.tau == 0.2
    fine = AttentionGraph(result.finetuned.attentions, 0.2)
    assert view.data.graphs[FINE].member.tolist() == fine.member.tolist()  # the view redrew at that τ
    chart.tau = 0.999  # beyond the slider
    assert view.tau == TAU_BOUNDS[1]
    view.mode = "pretrained"
    assert chart.data["models"] == [PRE]
    np.testing.assert_array_equal(chart.data[f"w{PRE}"], want[f"w{PRE}"])
