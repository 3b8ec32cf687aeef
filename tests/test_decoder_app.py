"""The decoder app (issue #28, 4): a base/instruct pair of causal LMs served with a root the user picks.

Python-side: the view's result holds exactly the weights of the causal graph (the graphs the views build
from it equal :class:`CausalAttentionGraph` at every τ, head mask and root), a new root re-uses the
recorded q/k (no model run), bad input is a message and the shown sequence stays. The CLI tells a decoder
pair from an encoder pair and refuses a mixed one. The browser walk is in test_decoder_browser.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from attnflows_panel.app.config import AppConfig
from attnflows_panel.app.decoder import DecoderApp, sequence_html
from attnflows_panel.causal import CausalPair, is_causal_lm
from attnflows_panel.causal_view import dense_weights, display_tokens, view_result
from attnflows_panel.cli import main
from attnflows_panel.graph import AttentionGraph
from attnflows_panel.registry import Registry
from attnflows_panel.views.attention_flows import AttentionFlowsView
from causal_models import SENTENCES, instruct_from, write_family

TEXT = " ".join(SENTENCES)


@pytest.fixture(scope="module")
def decoder_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoder_app")
    base = write_family("qwen2", root / "base", layers=4, hidden=64, heads=8, kv=2)
    return base, instruct_from(base, root / "instruct")


@pytest.fixture(scope="module")
def pair(decoder_dirs):
    return CausalPair.load(*decoder_dirs)


class CountingPair:
    """The pair, counting its forward passes (``run``)."""

    def __init__(self, pair):
        self._pair, self.runs = pair, 0

    def run(self, encoded):
        self.runs += 1
        return self._pair.run(encoded)

    def __getattr__(self, name):
        return getattr(self._pair, name)


def _config(dirs, **kw) -> AppConfig:
    return AppConfig(pretrained=str(dirs[0]), finetuned=str(dirs[1]), decoder=True, tau=0.1, **kw)


@pytest.mark.parametrize("root", [None, 9, 30])
def test_the_views_graphs_equal_the_causal_graph(pair, root):
    enc = pair.encode(text=TEXT)
    an = pair.analyse(enc, root=root, tau_min=0.01)
    res = view_result(enc, an, pair.tokenizer)
    assert res.cls_position == an.root == (enc.n - 1 if root is None else root)
    rng = np.random.default_rng(0)
    for which in ("pretrained", "finetuned"):
        w = getattr(res, which).attentions
        assert w.shape == (pair.L, pair.H, enc.n, enc.n) and w.dtype == np.float32
        for tau in (0.01, 0.08, 0.3):
            for heads in (None, rng.random((pair.L, pair.H)) < 0.6):
                g = AttentionGraph.build(w, tau, heads=heads, root=an.root)
                c = an.graph(which, tau, heads=heads)
                assert all(np.array_equal(a, b) for a, b in zip(g.levels, c.levels, strict=True))
                assert np.array_equal(g.counts, c.counts)
                assert np.array_equal(g.out_degree, c.out_degree)
                assert np.allclose(g.influence(), c.influence())
    # the view traces from the root: its centre is the root, its rings are the causal graph's levels
    view = AttentionFlowsView(result=res, tau=0.08)
    c = an.graph("finetuned", 0.08)
    assert view.data.levels[-1].tolist() == [an.root]
    assert set(view.data.levels[0].tolist()) >= set(c.levels[0].tolist())


def test_the_rings_are_tinted_by_role(pair, decoder_dirs):
    """Each ring cell carries its token's role (the component tints it in the role's colour); the root none."""
    from attnflows_panel.causal_view import ROLE_COLORS

    app = DecoderApp(_config(decoder_dirs), registry=Registry(), pair=pair)
    d = app.view.flow.data
    roles = app.result.encoded.segment_of()
    assert d["role_names"] == [s[0] for s in app.result.encoded.segments] == ["system", "user", "assistant"]
    assert d["role_colors"] == [ROLE_COLORS[r] for r in d["role_names"]]
    lv, pos, role = (np.asarray(d[k]) for k in ("n_level", "n_pos", "n_role"))
    below = lv < app.view.data.L
    assert below.sum() > 10 and (role[~below] == 255).all()
    assert [d["role_names"][r] for r in role[below]] == [roles[p] for p in pos[below]]
    assert np.allclose(np.asarray(d["n_half"])[below], np.asarray(app.view.data.nodes["half"])[below])
    assert len(set(role[below].tolist())) >= 2  # the rings hold more than one role
    # a role with several turns is one role (one colour, named once): the spans map to it
    from attnflows_panel.views.radial import pack_flow, pack_roles

    n, cut = app.result.n, app.result.n // 3
    turns = [("user", 0, cut, "#111111"), ("assistant", cut, 2 * cut, "#222222"), ("user", 2 * cut, n, "#111111")]
    again = pack_roles(app.view.data, turns, d)
    assert again["role_names"] == ["user", "assistant"] and again["role_colors"] == ["#111111", "#222222"]
    want = np.where((pos >= cut) & (pos < 2 * cut), 1, 0)
    assert np.array_equal(again["n_role"][below], want[below]) and (again["n_role"][~below] == 255).all()
    # a sentence pair's view has no roles
    assert "n_role" not in pack_flow(app.view.data)


def test_a_new_root_re_uses_the_shown_tokens_of_the_same_sequence_only(pair):
    enc = pair.encode(text=TEXT)
    first = view_result(enc, pair.analyse(enc, root=9, tau_min=0.01), pair.tokenizer)
    again = view_result(enc, pair.analyse(enc, root=20, tau_min=0.01), pair.tokenizer, same_sequence=first)
    assert again.tokens is first.tokens and again.text == first.text and again.root == 20
    assert again.tokens == display_tokens(pair.tokenizer, enc.ids)
    other = pair.encode(text="Another text.")
    with pytest.raises(ValueError, match="another sequence"):
        view_result(other, pair.analyse(other, tau_min=0.01), pair.tokenizer, same_sequence=first)
    # the top tokens are the predictions' own, most likely first
    assert [t for t, _ in again.top_tokens["finetuned"]] == list(again.finetuned.probs)
    assert again.top_tokens["pretrained"][0][1] >= again.top_tokens["pretrained"][-1][1]


def test_dense_weights_refuses_what_the_view_cannot_hold(pair):
    from attnflows_panel.causal import CausalInputError

    enc = pair.encode(text=TEXT)
    edges = pair.analyse(enc, tau_min=0.05).edges["pretrained"]
    with pytest.raises(CausalInputError, match="too many for the view.*attnflows causal inspect"):
        dense_weights(edges, max_bytes=1000)


def test_display_tokens_join_word_pieces(pair):
    ids = pair.tokenizer("The capital of France summarises", add_special_tokens=False)["input_ids"]
    shown = display_tokens(pair.tokenizer, ids)
    assert len(shown) == len(ids)
    # the pieces of a word read ##piece after its first piece, so the words come back when joined
    words, cur = [], ""
    for t in shown:
        if t.startswith("##"):
            cur += t[2:]
        else:
            if cur:
                words.append(cur)
            cur = t
    words.append(cur)
    assert words == ["The", "capital", "of", "France", "summarises"]
    assert display_tokens(pair.tokenizer, pair.tokenizer("a\nb", add_special_tokens=False)["input_ids"])[1] == "⏎"


def test_is_causal_lm(decoder_dirs, minilm_path, tmp_path):
    assert is_causal_lm(decoder_dirs[0]) and is_causal_lm(str(decoder_dirs[1]))
    assert not is_causal_lm(minilm_path)
    assert not is_causal_lm(None) and not is_causal_lm(tmp_path / "missing")


def test_app_picks_roots_without_running_the_models_again(pair, decoder_dirs):
    counting = CountingPair(pair)
    app = DecoderApp(_config(decoder_dirs), registry=Registry(), pair=counting)
    r = app.result
    assert r is not None and counting.runs == 1
    assert r.root == r.encoded.prompt_len - 1  # the default root: the prompt's last token (the template's)
    assert [s[0] for s in r.encoded.segments] == ["system", "user", "assistant"]
    assert app.view.data.levels[-1].tolist() == [r.root]
    assert f'data-root="{r.root}"' in app._card.object and "KL(fine-tuned" in app._card.object
    # the sentence view: one line per role, every token underlined in its role's colour
    from attnflows_panel.causal_view import ROLE_COLORS

    sent = app.view.parts().sentence.data
    want = np.concatenate([np.full(e - s, i) for i, (_, s, e) in enumerate(r.encoded.segments)])
    assert np.array_equal(sent["band"], want)
    assert sent["band_labels"] == ["system", "user", "assistant"]
    assert sent["band_colors"] == [ROLE_COLORS[x] for x in sent["band_labels"]]
    # a sentence pair has none
    from attnflows_panel.views.sentence import pack_sentence

    assert "band" not in pack_sentence(app.view.data, 0)
    # a frozen token becomes the root; the models do not run again
    tok = int(app.view.data.levels[-2][0])
    app.view.selection = [[app.view.data.L - 1, tok]]
    assert not app._root_sel_w.disabled
    app.root_from_selection()
    assert app.result.root == tok and counting.runs == 1
    assert app.view.data.levels[-1].tolist() == [tok] and app.view.selection == []
    assert app.result.tokens is r.tokens and app.result.text == r.text  # not decoded again for a new root
    assert app._root_w.value == tok + 1  # the widget counts from 1
    # the root typed in the widget (1-based)
    app._root_w.value = 3
    assert app.result.root == 2 and counting.runs == 1
    # a new prompt runs the models; a continuation by the fine-tuned model is analysed with it
    app._prompt_w.value = "The cat sat on the mat."
    app._generate_w.value = 3
    app.analyse()
    assert counting.runs == 2
    assert [s[0] for s in app.result.encoded.segments] == ["prompt", "continuation"]
    assert app.result.encoded.prompt_len < app.result.n <= app.result.encoded.prompt_len + 3  # it may stop at EOS
    assert "continuation" in sequence_html(app.result)


@pytest.mark.parametrize("prompt, message", [
    ("   ", "the prompt is empty"),
    ('[{"role": "user", "content": "hi"', "not valid JSON"),
    ('[{"role": "robot", "content": "hi"}]', "role 'robot'"),
    ("[]", "non-empty JSON list"),
])
def test_bad_prompts_are_messages_and_the_sequence_stays(pair, decoder_dirs, prompt, message):
    app = DecoderApp(_config(decoder_dirs), registry=Registry(), pair=pair)
    shown = app.result
    app._prompt_w.value = prompt
    app.analyse()
    assert message in app.message
    assert app.result is shown and app.view.result is shown
    app._prompt_w.value = "The cat sat on the mat."  # and the session keeps working
    app.analyse()
    assert app.message == "" and app.result.n > 3


def test_analyse_takes_what_is_typed_before_the_box_loses_the_focus(pair, decoder_dirs):
    app = DecoderApp(_config(decoder_dirs), registry=Registry(), pair=pair)
    app._prompt_w.value_input = "The cat sat on the mat."
    app.analyse()
    assert app.result.text == "The cat sat on the mat." and app._prompt_w.value == "The cat sat on the mat."


def test_a_text_that_opens_with_a_bracket_is_a_text(pair, decoder_dirs):
    app = DecoderApp(_config(decoder_dirs), registry=Registry(), pair=pair)
    app._prompt_w.value = "[1] The cat sat on the mat."
    app.analyse()
    assert app.message == "" and [s[0] for s in app.result.encoded.segments] == ["prompt"]


def test_a_root_out_of_range_is_a_message(pair, decoder_dirs):
    app = DecoderApp(_config(decoder_dirs), registry=Registry(), pair=pair)
    shown = app.result
    app._root_w.end = None  # the widget bounds it; a value from elsewhere is checked again
    app._root_w.value = shown.n + 5
    assert "from 1 to" in app.message and app.result is shown
    app.root_from_selection()  # nothing frozen
    assert "Select one token" in app.message


def test_serve_tells_decoder_pairs_from_encoder_pairs(decoder_dirs, minilm_path, capsys):
    code = main(["serve", "--pretrained", str(decoder_dirs[0]), "--finetuned", str(minilm_path), "--port", "0"])
    err = capsys.readouterr().err
    assert code != 0 and "is a causal language model and" in err and "Traceback" not in err
    code = main(["serve", "--pretrained", str(decoder_dirs[0]), "--finetuned", str(decoder_dirs[1]),
                 "--data", "demo", "--port", "0"])
    err = capsys.readouterr().err
    assert code != 0 and "attnflows causal index" in err
    with pytest.raises(ValueError, match="both models named"):
        AppConfig(pretrained=str(decoder_dirs[0]), decoder=True)


# ---------------------------------------------------------------------------------------------------
# the corpus browser over a prompt index (`attnflows causal index`)
# ---------------------------------------------------------------------------------------------------

CHATS_AND_TEXTS = [
    {"id": "c0", "chat": [{"role": "system", "content": "You are helpful."},
                          {"role": "user", "content": "What is the capital of France?"}]},
    {"id": "c1", "chat": [{"role": "user", "content": "Summarise: the cat sat on the mat."}]},
    {"id": "t0", "text": "The cat sat on the mat and looked at the door."},
    {"id": "t1", "text": "A quick brown fox jumps over the lazy dog."},
    {"id": "t2", "text": "Attention flows from the last token back to the first one."},
]


@pytest.fixture(scope="module")
def prompt_index(pair, tmp_path_factory):
    from attnflows_panel.causal_heads import Prompt
    from attnflows_panel.index.build_causal import build_causal_index

    prompts = [Prompt(p["id"], text=p.get("text"), chat=p.get("chat")) for p in CHATS_AND_TEXTS]
    return build_causal_index(pair, prompts, tmp_path_factory.mktemp("prompt_index") / "idx", tau=0.1)


def test_the_browser_searches_the_prompt_index_and_opens_its_prompts(pair, decoder_dirs, prompt_index):
    app = DecoderApp(_config(decoder_dirs, index=str(prompt_index)), registry=Registry(), pair=pair)
    assert app.browser is not None and app.sample_id is None
    # the example chat is not in the index: searched by its own signature from its root
    assert app.browser.result is app.result and len(app.browser.results) == len(CHATS_AND_TEXTS)
    assert "a prompt that is not in the index" in app.browser._current.object
    # the table shows prompts and each model's next token as text, not sentence-pair columns
    from attnflows_panel.views.corpus_browser import PROMPT_COLUMNS

    table = app.browser.table.value
    assert list(table.columns) == list(PROMPT_COLUMNS)
    assert list(app.browser.results_table.value.columns) == ["rank", "score", "id", "sentence_a", "next_pre",
                                                             "next_fine"]
    # a pick opens the prompt at the index's root (its last token): the browser then uses the stored signature
    app.open_sample("c0")
    assert app.sample_id == "c0" and app.browser.selected_id == "c0" and app.browser.result is None
    assert json.loads(app._prompt_w.value) == CHATS_AND_TEXTS[0]["chat"]
    md = app.index.metadata.set_index("id")
    assert app.result.n == int(md.loc["c0", "n_tokens"]) and app.result.root == app.result.n - 1
    shown = table.set_index("id")
    for which, col in (("pretrained", "next_pre"), ("finetuned", "next_fine")):
        assert shown.loc["c0", col] == app.result.top_tokens[which][0][0]  # the same token as the card's
    assert "c0" not in app.browser.results["id"].tolist() and len(app.browser.results) == len(CHATS_AND_TEXTS) - 1
    # the stored signature is the one the app computes for the same prompt at the same root and τ
    from attnflows_panel.index.batches import result_usage

    q_index = app.index.query_vector("c0")
    q_app = app.index.embed_usage(result_usage(app.result, app.index.tau)[None])[0]
    assert np.allclose(q_index, q_app, atol=2e-3)  # the index stores usage in float16
    app._prompt_w.value_input = "Typed, the box not left yet."  # what the browser holds as typed
    app.open_sample("t1")  # a pick replaces it
    assert app._prompt_w.value == CHATS_AND_TEXTS[3]["text"] and app.sample_id == "t1"
    assert app.result.text == CHATS_AND_TEXTS[3]["text"]
    # another root: the browser searches from it, with the sequence shown
    app.set_root(3)
    assert app.sample_id is None and app.browser.result is app.result and len(app.browser.results)
    # an id that is not there is a message
    app.open_sample("nope")
    assert "no prompt 'nope'" in app.message


def test_an_index_of_other_models_is_refused_with_the_reason(decoder_dirs, tmp_path):
    from attnflows_panel.causal_heads import Prompt
    from attnflows_panel.index.build_causal import build_causal_index

    other = CausalPair.load(decoder_dirs[0], decoder_dirs[0])  # the base twice: another fine-tuned model
    idx = build_causal_index(other, [Prompt("t0", text="The cat sat on the mat.")], tmp_path / "idx", tau=0.1)
    app = DecoderApp(_config(decoder_dirs, index=str(idx)), registry=Registry())
    assert "another finetuned model" in app.message and app.browser is None and app.result is None


def test_prompt_of_row_reads_old_indexes_without_a_prompt_column():
    from attnflows_panel.causal_heads import Prompt
    from attnflows_panel.index.build_causal import prompt_json, prompt_of_row, prompt_text

    chat = Prompt("c", chat=CHATS_AND_TEXTS[0]["chat"])
    text = Prompt("t", text="Plain [user] text.")
    for p in (chat, text):
        new = prompt_of_row({"prompt": prompt_json(p), "sentence_a": prompt_text(p)})
        old = prompt_of_row({"sentence_a": prompt_text(p)})
        want = {"chat": p.chat} if p.chat else {"text": p.text}
        assert new == want and old == want


# ---------------------------------------------------------------------------------------------------
# the page's URL
# ---------------------------------------------------------------------------------------------------


def test_a_link_restores_the_prompt_root_and_view(pair, decoder_dirs):
    from urllib.parse import parse_qs

    app = DecoderApp(_config(decoder_dirs), registry=Registry(), pair=pair)
    app._prompt_w.value = "The cat sat on the mat and looked at the door."
    app._generate_w.value = 2
    app.analyse()
    app.set_root(4)
    L = app.view.data.L
    tok = int(app.view.data.levels[L - 1][0])
    app.view.param.update(tau=0.2, mode="finetuned", selection=[[L - 1, tok]])
    query = app.url_query()
    q = parse_qs(query)
    assert q["p"] == [app._prompt_w.value] and q["gen"] == ["2"] and q["root"] == ["5"] and q["tau"] == ["0.2"]
    # a new session from the link: the same sequence, root and view
    other = CountingPair(pair)
    app2 = DecoderApp(_config(decoder_dirs), registry=Registry(), pair=other, query=query)
    assert other.runs == 1 and app2.message == ""
    r, r2 = app.result, app2.result
    assert r2.input_ids == r.input_ids and r2.root == 4
    assert (app2.view.tau, app2.view.mode, app2.view.selection) == (0.2, "finetuned", [[L - 1, tok]])
    assert app2.url_query() == query
    # Back to an entry of the same prompt at another root: no model run, the graph is traced again
    app2.restore(query.replace("root=5", "root=3"))
    assert app2.result.root == 2 and other.runs == 1
    # bad values are named and left out; the session keeps its view
    app2.restore(query.replace("root=5", "root=x").replace("gen=2", "gen=999"))
    assert "root in the link" in app2.message and "gen in the link" in app2.message
    assert app2.result.root == 2


def test_the_address_bar_follows_the_view(pair, decoder_dirs):
    app = DecoderApp(_config(decoder_dirs), registry=Registry(), pair=pair, sync_url=True)
    first = app.history.entry
    assert first["push"] is False and "root" not in first["search"]  # the default root is left out
    app.set_root(3)
    assert app.history.entry["push"] is True and "root=4" in app.history.entry["search"]
    app.view.tau = 0.25  # a slider: in place
    assert app.history.entry["push"] is False and "tau=0.25" in app.history.entry["search"]
    app.view.mode = "pretrained"  # a discrete change: a new entry
    assert app.history.entry["push"] is True and "mode=pretrained" in app.history.entry["search"]


def test_a_link_to_an_index_prompt_opens_it(pair, decoder_dirs, prompt_index):
    app = DecoderApp(_config(decoder_dirs, index=str(prompt_index)), registry=Registry(), pair=pair,
                     query="sample=t2&tau=0.15")
    assert app.sample_id == "t2" and app._prompt_w.value == CHATS_AND_TEXTS[4]["text"] and app.view.tau == 0.15
    assert app.url_query().startswith("sample=t2")
    app2 = DecoderApp(_config(decoder_dirs, index=str(prompt_index)), registry=Registry(), pair=pair,
                      query="sample=t2&root=2")
    assert app2.result.root == 1 and app2.sample_id is None  # another root: searched from it
    assert "p=" in app2.url_query() and "root=2" in app2.url_query()
