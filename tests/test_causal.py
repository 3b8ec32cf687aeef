"""Decoder pairs (attnflows_panel.causal): rows from SDPA's q/k equal eager attention, the graph from rows
equals AttentionGraph on the full attentions, predictions at the root, chats, generation, bad input.

Tiny random models of each family (tests/causal_models.py), written with save_pretrained, loaded from
folders; no internet.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attnflows_panel.causal import CausalInputError, CausalPair, recording
from attnflows_panel.causal_graph import CausalAttentionGraph, trace_rows
from attnflows_panel.graph import AttentionGraph, Edge
from attnflows_panel.models import ModelLoadError, ModelPairError
from causal_models import CHATS, FAMILIES, instruct_from, write_family

TEXT = "The cat sat on the mat and the fox jumps over the lazy dog. What is the capital of France?"


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal_families")
    return {fam: write_family(fam, root / fam) for fam in FAMILIES}


@pytest.fixture(scope="module")
def instruct_dirs(family_dirs, tmp_path_factory):
    base = family_dirs["llama"]
    return base, instruct_from(base, tmp_path_factory.mktemp("causal_instruct") / "llama-instruct")


@pytest.fixture(scope="module")
def instruct_pair(instruct_dirs):
    return CausalPair.load(*instruct_dirs)


def _eager(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()


def _eager_out(model, ids):
    with torch.no_grad():
        out = model(torch.tensor([list(ids)]), output_attentions=True)
    return np.stack([a[0].numpy() for a in out.attentions]), out.logits[0].float()


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_equal_eager_attention(family, family_dirs):
    """Every row the graph computes equals eager attention within 1e-5; the kept weights are exactly the
    eager weights above tau_min on those rows; grouped-query keys are kept once per key-value head."""
    folder = family_dirs[family]
    pair = CausalPair.load(folder, folder)
    enc = pair.encode(text=TEXT)
    assert enc.n > 16  # longer than the sliding windows of the Mistral and Gemma-2 configs (8)
    attn, logits = _eager_out(_eager(folder), enc.ids)
    runs = pair.run(enc)
    kv = runs[0].layers[0].k.shape[0]
    assert kv == (4 if family == "gpt2" else 2) and runs[0].H == 4
    for root in (enc.n - 1, enc.n // 2):
        edges = runs[0].trace(root, 0.05)
        assert edges.num_rows > 2
        for k in range(edges.L):
            rows = edges.rows[k]
            got = runs[0].layers[k].rows(rows).numpy()
            np.testing.assert_allclose(got, attn[k][:, rows], atol=1e-5, rtol=0)
            h, i, b = np.nonzero(attn[k][:, rows] > 0.05)
            want = sorted(zip(rows[i].tolist(), b.tolist(), h.tolist(), strict=True))
            assert sorted(zip(edges.a[k].tolist(), edges.b[k].tolist(), edges.h[k].tolist(), strict=True)) == want
            np.testing.assert_allclose(edges.w[k], attn[k][edges.h[k], edges.a[k], edges.b[k]], atol=1e-5)
        np.testing.assert_allclose(pair.next_token_logits(pair.pretrained, runs[0], root).numpy(),
                                   logits[root].numpy(), atol=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "mistral", "gemma2"])
def test_graph_from_rows_equals_attention_graph(family, family_dirs):
    """CausalAttentionGraph from the rows = AttentionGraph from the full eager attentions, same root:
    levels, counts (eq. 3), influence (eq. 4, α = 0.5), edges with their heads, glyphs; for several roots,
    τ values and a head mask."""
    folder = family_dirs[family]
    pair = CausalPair.load(folder, folder)
    enc = pair.encode(text=TEXT)
    attn, _ = _eager_out(_eager(folder), enc.ids)
    run = pair.run(enc)[0]
    rng = np.random.default_rng(0)
    mask = rng.random((run.L, run.H)) < 0.6
    checked_edges = 0
    for root in (enc.n - 1, 9, 0):
        edges = run.trace(root, 0.05)
        for tau, heads in ((0.05, None), (0.1, None), (0.2, mask), (0.3, None)):
            want = AttentionGraph(attn, tau=tau, heads=heads, root=root)
            got = CausalAttentionGraph(edges, tau=tau, heads=heads)
            assert got.root == root and got.L == want.L and got.n == want.n
            for k in range(want.L + 1):
                np.testing.assert_array_equal(got.levels[k], want.levels[k])
            np.testing.assert_array_equal(got.member, want.member)
            np.testing.assert_array_equal(got.counts, want.counts)
            np.testing.assert_allclose(got.influence(0.5), want.influence(0.5))
            np.testing.assert_array_equal(got.out_degree, want.out_degree)
            for k in range(want.L):
                assert got.edges(k) == want.edges(k)
                checked_edges += len(want.edges(k))
            assert got.edge_count() == want.edge_count()
            assert np.array_equal(got.glyphs(want.L), want.glyphs(want.L))
    assert checked_edges > 50


def test_traces_equal_attention_graph_traces():
    """Ancestors and descendants of single tokens and brushes, with and without a head, equal
    AttentionGraph.trace's on the same attentions (causal, peaked)."""
    rng = np.random.default_rng(5)
    L, H, n = 4, 3, 24
    attn = rng.dirichlet(np.full(n, 0.15), size=(L, H, n)) * np.tril(np.ones((n, n)))
    attn = (attn / attn.sum(-1, keepdims=True)).astype(np.float32)
    graph = AttentionGraph(attn, tau=0.12, root=n - 1)
    got = CausalAttentionGraph(trace_rows(lambda k, pos: attn[k][:, pos], L, H, n, n - 1, 0.05), tau=0.12)
    checked = 0
    for level in range(L + 1):
        toks = graph.levels[level]
        for sel in [[t] for t in toks[:4]] + ([toks[:2].tolist()] if toks.size > 1 else []):
            for head in (None, (max(level - 1, 0), 1), (min(level, L - 1), 0)):
                want = graph.trace(level, sel, head)
                down, up = got.trace_masks(level, sel, head)
                np.testing.assert_array_equal(down, want.ancestor_mask)
                np.testing.assert_array_equal(up, want.descendant_mask)
                checked += int(want.ancestor_mask.any() or want.descendant_mask.any())
    assert checked > 20
    with pytest.raises(ValueError, match="select tokens of level"):
        got.trace_masks(L, [0])


def test_trace_rows_asks_only_for_the_levels_rows():
    """trace_rows fetches layer k's rows only for level k+1's tokens, in chunks of at most `chunk`."""
    rng = np.random.default_rng(3)
    L, H, n = 4, 3, 30
    attn = rng.dirichlet(np.full(n, 0.2), size=(L, H, n)).astype(np.float32)
    asked = []

    def rows(k, pos):
        asked.append((k, pos.copy()))
        return attn[k][:, pos]

    edges = trace_rows(rows, L, H, n, root=n - 1, tau_min=0.1, chunk=4)
    graph = AttentionGraph(attn, tau=0.1, root=n - 1)
    for k in range(L):
        got = np.concatenate([p for kk, p in asked if kk == k])
        np.testing.assert_array_equal(got, graph.levels[k + 1])
        assert all(p.size <= 4 for kk, p in asked if kk == k)
    assert edges.num_rows == sum(graph.levels[k + 1].size for k in range(L))
    g = CausalAttentionGraph(edges, tau=0.25)
    np.testing.assert_array_equal(g.counts, AttentionGraph(attn, tau=0.25, root=n - 1).counts)


@pytest.mark.parametrize(("n", "dtype"), [(200, np.uint8), (300, np.uint16), (70_000, np.uint32)])
def test_edges_are_kept_compact_without_losing_a_position(n, dtype):
    """RowEdges keep positions in the narrowest type that holds them (the first model's edges are held while
    the second model runs), and every position survives it, past 256 and 65,536 tokens too: each token a
    attends with weight 0.5 to itself and to a // 3 (1.0 to itself where a // 3 == a), in both heads."""
    L, H = 3, 2

    def rows(k, pos):
        width = int(pos.max()) + 1
        out = np.zeros((H, pos.size, width), dtype=np.float32)
        for i, a in enumerate(pos):
            out[:, i, a] += 0.5
            out[:, i, a // 3] += 0.5
        return out

    edges = trace_rows(rows, L, H, n, root=n - 1, tau_min=0.3)
    assert all(x.dtype == dtype for x in (*edges.a, *edges.b)) and all(x.dtype == np.uint8 for x in edges.h)
    want, level = [], {n - 1}
    for _ in range(L):
        level = {a for a in level} | {a // 3 for a in level}
        want.append(sorted(level))
    graph = CausalAttentionGraph(edges, tau=0.3)
    assert [graph.levels[L - 1 - i].tolist() for i in range(L)] == want
    assert graph.edges(L - 1) == [Edge(L - 1, n - 1, (n - 1) // 3, (0, 1)), Edge(L - 1, n - 1, n - 1, (0, 1))]


def test_an_empty_level_ends_the_graph_as_in_attention_graph():
    """Uniform attention over 10 keys stays below τ = 0.2: level L-1 is empty, and so is every level under it."""
    attn = np.tril(np.ones((10, 10), dtype=np.float32))
    attn = np.broadcast_to(attn / attn.sum(-1, keepdims=True), (3, 2, 10, 10)).copy()
    edges = trace_rows(lambda k, pos: attn[k][:, pos], 3, 2, 10, root=9, tau_min=0.2)
    assert edges.num_rows == 1 and edges.num_weights == 0
    got, want = CausalAttentionGraph(edges, tau=0.2), AttentionGraph(attn, tau=0.2, root=9)
    assert [lv.tolist() for lv in got.levels] == [lv.tolist() for lv in want.levels] == [[], [], [], [9]]
    assert got.edges(2) == [] and got.edge_count() == 0
    np.testing.assert_array_equal(got.influence(), want.influence())


def test_trace_rows_and_graph_reject_bad_input():
    attn = np.full((1, 1, 3, 3), 1 / 3, dtype=np.float32)

    def rows(k, pos):
        return attn[k][:, pos]

    with pytest.raises(ValueError, match="root 3 is out of range"):
        trace_rows(rows, 1, 1, 3, root=3, tau_min=0.1)
    with pytest.raises(ValueError, match=r"tau_min must lie in \[0, 1\)"):
        trace_rows(rows, 1, 1, 3, root=2, tau_min=1.5)
    with pytest.raises(ValueError, match="returned shape"):
        trace_rows(lambda k, pos: attn[k], 1, 1, 3, root=2, tau_min=0.1)
    edges = trace_rows(rows, 1, 1, 3, root=2, tau_min=0.1)
    with pytest.raises(ValueError, match="below the smallest τ"):
        CausalAttentionGraph(edges, tau=0.05)
    with pytest.raises(ValueError, match="boolean mask"):
        CausalAttentionGraph(edges, tau=0.2, heads=np.ones((2, 1), dtype=bool))
    with pytest.raises(ValueError, match="layer 1 is out of range"):
        CausalAttentionGraph(edges, tau=0.2).edges(1)


def test_instruct_pair_predictions_and_kl(instruct_pair, instruct_dirs):
    """The fine-tuned pair differs in attention; top-5 and KL at the root equal the eager models' logits."""
    pair = instruct_pair
    enc = pair.encode(chat=CHATS[0][:2])
    ana = pair.analyse(enc)
    assert ana.root == enc.prompt_len - 1 == enc.n - 1
    attn_pre, logits_pre = _eager_out(_eager(instruct_dirs[0]), enc.ids)
    attn_fine, logits_fine = _eager_out(_eager(instruct_dirs[1]), enc.ids)
    assert np.abs(attn_pre - attn_fine).max() > 0.05  # the fine-tuning changed attention
    lp, lf = (torch.log_softmax(x[ana.root], -1) for x in (logits_pre, logits_fine))
    assert ana.kl == pytest.approx(float((lf.exp() * (lf - lp)).sum()), rel=1e-4, abs=1e-6)
    assert ana.kl_reverse == pytest.approx(float((lp.exp() * (lp - lf)).sum()), rel=1e-4, abs=1e-6)
    assert ana.kl > 1e-3
    for pred, lg in ((ana.pretrained, lp), (ana.finetuned, lf)):
        assert len(pred.top) == 5
        assert [i for _, i, _ in pred.top] == torch.topk(lg, 5).indices.tolist()
        assert [t for t, _, _ in pred.top] == pair.tokenizer.convert_ids_to_tokens([i for _, i, _ in pred.top])
        np.testing.assert_allclose([p for _, _, p in pred.top], torch.topk(lg.exp(), 5).values.numpy(), rtol=1e-4)
    g_pre, g_fine = ana.graph("pretrained", 0.1), ana.graph("finetuned", 0.1)
    assert not np.array_equal(g_pre.counts, g_fine.counts)


def test_chat_segments_follow_the_roles(instruct_pair):
    pair = instruct_pair
    chat = CHATS[0]
    enc = pair.encode(chat=chat[:2])
    # system, user, and the generation prompt that opens the assistant's turn (the root predicts its first word)
    assert [s[0] for s in enc.segments] == ["system", "user", "assistant"]
    assert enc.segments[0][1] == 0 and enc.segments[-1][2] == enc.n
    assert all(a[2] == b[1] for a, b in zip(enc.segments, enc.segments[1:], strict=False))
    _, s, e = enc.segments[-1]
    assert pair.tokenizer.decode(list(enc.ids[s:e])) == "<|im_start|>assistant\n"
    for (role, s, e), msg in zip(enc.segments, chat[:2], strict=False):
        assert role == msg["role"]
        text = pair.tokenizer.decode(list(enc.ids[s:e]))
        assert text == f"<|im_start|>{role}\n{msg['content']}<|im_end|>\n"
    full = pair.encode(chat=chat)
    assert [s[0] for s in full.segments] == ["system", "user", "assistant"]
    assert pair.tokenizer.decode(list(full.ids)).endswith("<|im_end|>\n")
    assert full.segment_of()[-1] == "assistant"
    cont = pair.encode(text="The cat sat", continuation=" on the mat.")
    assert [s[0] for s in cont.segments] == ["prompt", "continuation"]
    assert pair.check_root(cont, None) == cont.prompt_len - 1 < cont.n - 1


def test_generate_is_the_fine_tuned_models_greedy_continuation(instruct_pair, instruct_dirs):
    pair = instruct_pair
    enc = pair.encode(chat=CHATS[1][:1])
    gen = pair.generate(enc, 4)
    assert gen.ids[: enc.n] == enc.ids and gen.prompt_len == enc.n
    new = gen.ids[enc.n:]
    assert 1 <= len(new) <= 4
    model = _eager(instruct_dirs[1])
    ids = list(enc.ids)
    with torch.no_grad():
        for _ in range(len(new)):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    assert tuple(ids) == gen.ids
    assert gen.segments[-1] == ("continuation", enc.n, gen.n)
    ana = pair.analyse(gen, root=-1)
    assert ana.root == gen.n - 1
    assert ana.graph("finetuned", 0.05).levels[-1].tolist() == [gen.n - 1]


def test_recording_outside_leaves_models_plain(instruct_pair):
    """Outside `recording`, the registered attention keeps nothing; inside it keeps one entry per layer."""
    ids = torch.tensor([[5, 6, 7]])
    with torch.inference_mode(), recording() as seen:
        instruct_pair.pretrained.base_model(input_ids=ids, use_cache=False)
    assert sorted(seen) == [0, 1]
    with torch.inference_mode():
        instruct_pair.pretrained.base_model(input_ids=ids, use_cache=False)
    assert sorted(seen) == [0, 1]


def test_mismatched_pairs_are_refused_in_one_line(family_dirs, tmp_path, tiny_bert_dirs):
    llama = family_dirs["llama"]
    with pytest.raises(ModelPairError, match="differ in model type") as e:
        CausalPair.load(family_dirs["gpt2"], llama)
    assert "\n" not in str(e.value)
    deeper = write_family("llama", tmp_path / "deeper", layers=3)
    with pytest.raises(ModelPairError, match=r"differ in number of layers \(num_hidden_layers\): 2 vs 3"):
        CausalPair.load(llama, deeper)
    wider = write_family("llama", tmp_path / "kv", kv=4)
    with pytest.raises(ModelPairError, match="number of key-value heads"):
        CausalPair.load(llama, wider)
    swapped = write_family("llama", tmp_path / "swapped")  # same shape, two token ids swapped in the tokenizer
    spec = json.loads((swapped / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    (swapped / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ModelPairError, match="tokenizers differ in vocabulary"):
        CausalPair.load(llama, swapped)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CausalPair.load(llama, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        CausalPair.load(tmp_path / "empty", llama)
    with pytest.raises(ModelPairError, match="not causal attention|not a causal language model") as e:
        CausalPair.load(tiny_bert_dirs[0], tiny_bert_dirs[0])
    assert "\n" not in str(e.value)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="could not load the fine-tuned model config") as e:
        CausalPair.load(llama, tmp_path / "broken")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("chat, message", [
    ("[{]", "the chat is not valid JSON"),
    ("[]", "non-empty JSON list"),
    ('[{"role": "user"}]', "string 'role' and 'content'"),
    ('[{"role": "robot", "content": "hi"}]', "has role 'robot'"),
])
def test_bad_chats_are_refused(instruct_pair, chat, message):
    with pytest.raises(CausalInputError, match=message) as e:
        instruct_pair.encode(chat=chat)
    assert "\n" not in str(e.value)


def test_bad_text_root_and_generate_are_refused(instruct_pair):
    pair = instruct_pair
    with pytest.raises(CausalInputError, match="the text is empty"):
        pair.encode(text="  ")
    with pytest.raises(CausalInputError, match="either a text or a chat"):
        pair.encode()
    enc = pair.encode(text="The cat sat")
    with pytest.raises(CausalInputError, match=f"root {enc.n} is out of range"):
        pair.analyse(enc, root=enc.n)
    with pytest.raises(CausalInputError, match="root must be a token index"):
        pair.analyse(enc, root="last")
    with pytest.raises(CausalInputError, match="tau must lie"):
        pair.analyse(enc, tau_min=1.0)
    with pytest.raises(CausalInputError, match="positive number of tokens"):
        pair.generate(enc, 0)
