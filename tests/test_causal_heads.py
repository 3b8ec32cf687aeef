"""Head change of a decoder pair over prompts (attnflows_panel.causal_heads, `attnflows causal heads`, issue 28):
the chunked cosine and JSD equal the encoder definitions (heads.sample_change) on the models' full eager
attentions; the usage equals the signature's head usage of the AttentionGraph from the last token; the CLI
reads texts and chats from JSONL and refuses bad files in one line.

Tiny random decoders (tests/causal_models.py) and a few steps of "instruction tuning", so the two models differ.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attnflows_panel.causal import CausalPair
from attnflows_panel.causal_heads import Prompt, corpus_change, graph_usage, read_prompts, run_change
from attnflows_panel.graph import AttentionGraph
from attnflows_panel.heads import sample_change
from attnflows_panel.signatures import head_usage
from causal_models import CHATS, SENTENCES, instruct_from, write_family


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal_heads")
    base = write_family("llama", root / "base")  # grouped-query attention: 4 query heads on 2 key-value heads
    return {"base": base, "instruct": instruct_from(base, root / "instruct"),
            "gemma2": write_family("gemma2", root / "gemma2")}  # soft-capped scores, sliding window of 8


def _eager_attn(folder, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(torch.tensor([list(ids)]), output_attentions=True)
    return np.stack([a[0].numpy() for a in out.attentions])


@pytest.mark.parametrize("which", ["instruct", "gemma2"])
def test_change_and_usage_equal_the_encoder_definitions_on_eager_attention(dirs, which):
    pair = CausalPair.load(dirs["base"] if which == "instruct" else dirs["gemma2"], dirs[which])
    enc = pair.encode(text=" ".join(SENTENCES[:3]))
    pre_attn, fine_attn = (_eager_attn(f, enc.ids) for f in (pair.names[0], pair.names[1]))
    runs = pair.run(enc)
    cos, js = run_change(*runs)
    want_cos, want_js = sample_change(pre_attn, fine_attn)
    np.testing.assert_allclose(cos, want_cos, atol=2e-5)
    np.testing.assert_allclose(js, want_js, atol=2e-5)
    if which == "instruct":
        assert cos.min() < 0.999 and js.max() > 1e-4  # the tuning changed some heads: the test can see a change
    analysis = pair.analyse(enc, tau_min=0.1, runs=runs)
    for attn, role in ((pre_attn, "pretrained"), (fine_attn, "finetuned")):
        want = head_usage(AttentionGraph(attn, tau=0.1, root=enc.n - 1))
        np.testing.assert_allclose(graph_usage(analysis.graph(role, 0.1)), want, atol=1e-6)
        assert want.sum() > 0


def test_the_same_model_twice_changes_nothing(dirs):
    pair = CausalPair.load(dirs["base"], dirs["base"])
    change = corpus_change(pair, [Prompt("0", text=SENTENCES[0]), Prompt("1", chat=CHATS[0][:2])], tau=0.1)
    np.testing.assert_allclose(change.cosine, 1.0, atol=1e-5)
    np.testing.assert_allclose(change.jsd, 0.0, atol=1e-5)
    np.testing.assert_array_equal(change.usage[:, 0], change.usage[:, 1])
    np.testing.assert_allclose(change.kl, 0.0, atol=1e-6)
    summary = change.summary()
    assert summary.n_samples == 2 and summary.sample_ids == ["0", "1"]
    np.testing.assert_array_equal(summary.usage_change, 0.0)


def test_cli_reports_texts_and_chats(dirs, tmp_path, capsys):
    from attnflows_panel.cli import main

    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"id": f"t{i}", "text": s}) + "\n" for i, s in enumerate(SENTENCES[:4])))
    out = tmp_path / "reports" / "texts.json"
    argv = ["causal", "heads", "--pretrained", str(dirs["base"]), "--finetuned", str(dirs["instruct"]),
            "--data", str(texts), "--tau", "0.1", "--no-progress", "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "head change over 4 samples" in printed and "most changed by cosine" in printed
    assert "root: each prompt's last token" in printed
    report = json.loads(out.read_text())
    assert report["n_samples"] == 4 and report["sample_ids"] == ["t0", "t1", "t2", "t3"]
    assert np.asarray(report["cosine"]).shape == (2, 4) and report["source"]["kind"] == "text"
    assert len(report["kl_finetuned_pretrained"]["per_prompt"]) == 4

    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CHATS))
    argv = ["causal", "heads", "--pretrained", str(dirs["base"]), "--finetuned", str(dirs["instruct"]),
            "--data", str(chats), "--chat-column", "messages", "--limit", "2", "--no-progress", "--json", "-"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_samples"] == 2 and report["source"]["kind"] == "chat"
    # a chat goes through the chat template: more tokens than its messages' words
    assert all(n > 8 for n in report["tokens"])


@pytest.mark.parametrize("content, extra, message", [
    ('{"prompt": "hello"}\n', [], "line 1: no 'text' column (found 'prompt'); name the column with --text-column"),
    ('{"text": "ok"}\nnot json\n', [], "line 2: not JSON"),
    ('{"text": "  "}\n', [], "line 1: 'text' must be a non-empty string"),
    ('{"m": "hello"}\n', ["--chat-column", "m"], "line 1: 'm' must be a list of messages"),
    ("\n\n", [], "holds no prompts"),
])
def test_cli_refuses_bad_prompt_files_in_one_line(dirs, tmp_path, capsys, content, extra, message):
    from attnflows_panel.cli import main

    data = tmp_path / "bad.jsonl"
    data.write_text(content)
    argv = ["causal", "heads", "--pretrained", str(dirs["base"]), "--finetuned", str(dirs["instruct"]),
            "--data", str(data), "--no-progress", *extra]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err


def test_read_prompts_missing_file_and_limit(tmp_path):
    with pytest.raises(FileNotFoundError, match="no prompt file"):
        read_prompts(tmp_path / "absent.jsonl")
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"text": s}) + "\n" for s in SENTENCES))
    got = read_prompts(data, limit=2)
    assert [p.id for p in got] == ["0", "1"] and got[1].text == SENTENCES[1]


# ------------------------------------------------------------------------------------------- ablation


def _loss_with_hook(folder, ids, start, layer, head, proj):
    """The reference: an eager model whose output projection of ``layer`` gets head ``head``'s slice of
    its input zeroed by a forward pre-hook (on our own model object), then the continuation's mean NLL."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    d = model.config.hidden_size // model.config.num_attention_heads
    d = getattr(model.config, "head_dim", None) or d
    module = proj(model, layer)

    def zero(mod, args):
        x = args[0].clone()
        x[..., head * d:(head + 1) * d] = 0
        return (x,)

    handle = module.register_forward_pre_hook(zero)
    try:
        with torch.no_grad():
            logits = model(torch.tensor([list(ids)])).logits[0].float()
    finally:
        handle.remove()
    cap = getattr(model.config, "final_logit_softcapping", None)
    assert not cap or abs(logits).max() <= cap  # the model applies its own cap
    logp = torch.log_softmax(logits[start - 1:-1], -1)
    return float(-logp.gather(-1, torch.tensor(ids[start:])[:, None]).mean())


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_a_head_switched_off_equals_zeroing_its_slice_before_the_output_projection(family, dirs, tmp_path):
    from attnflows_panel.causal_heads import continuation_loss, loss_input

    folder = dirs["instruct"] if family == "llama" else dirs["gemma2"] if family == "gemma2" else \
        write_family("gpt2", tmp_path / "gpt2")
    pair = CausalPair.load(folder, folder)
    ids, start = loss_input(pair, Prompt("0", text=SENTENCES[0], continuation=" " + SENTENCES[1]))
    proj = (lambda m, k: m.transformer.h[k].attn.c_proj) if family == "gpt2" else \
        (lambda m, k: m.model.layers[k].self_attn.o_proj)
    whole = float(continuation_loss(pair.finetuned, ids, start)[0])
    assert whole == pytest.approx(_loss_with_hook(folder, ids, start, 0, 0, lambda m, k: torch.nn.Identity()),
                                  abs=1e-5)  # (an unused hook: the whole model)
    masks = np.zeros((3, pair.L, pair.H), dtype=bool)
    cases = [(0, 1), (1, 0), (1, 3)]
    for i, (k, h) in enumerate(cases):
        masks[i, k, h] = True
    batched = continuation_loss(pair.finetuned, ids, start, masks)  # one batch, another head off in each row
    for i, (k, h) in enumerate(cases):
        want = _loss_with_hook(folder, ids, start, k, h, proj)
        assert batched[i] == pytest.approx(want, abs=1e-5), (k, h)
        assert float(continuation_loss(pair.finetuned, ids, start, masks[i:i + 1])[0]) == pytest.approx(want, abs=1e-5)
    assert not np.allclose(batched, whole)  # switching a head off changes the loss


def test_cli_ablation_over_chats_and_texts(dirs, tmp_path, capsys):
    from attnflows_panel.cli import main

    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CHATS))
    argv = ["causal", "heads", "--pretrained", str(dirs["base"]), "--finetuned", str(dirs["instruct"]),
            "--data", str(chats), "--chat-column", "messages", "--ablate", "--batch-size", "3", "--no-progress",
            "--json", str(tmp_path / "r.json")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "ablation: base next-token loss" in printed and "largest rise per layer" in printed
    report = json.loads((tmp_path / "r.json").read_text())
    delta = np.asarray(report["ablation"]["loss_delta"])
    assert delta.shape == (2, 4) and np.abs(delta).max() > 0
    assert len(report["ablation"]["base_loss"]["per_prompt"]) == len(CHATS)

    texts = tmp_path / "texts.jsonl"
    texts.write_text(json.dumps({"text": SENTENCES[0], "next": " " + SENTENCES[1]}) + "\n")
    base = ["causal", "heads", "--pretrained", str(dirs["base"]), "--finetuned", str(dirs["instruct"]),
            "--data", str(texts), "--ablate", "--no-progress"]
    assert main([*base, "--continuation-column", "next", "--json", "-"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert np.asarray(one["ablation"]["loss_delta"]).shape == (2, 4)
    # a text without a continuation, a chat that does not end with the answer: one line, before any model runs
    assert main([*base, "--continuation-column", "missing"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "line 1: no continuation in 'missing'" in err, err
    assert main(base) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs a continuation for every text prompt" in err, err
    unanswered = tmp_path / "unanswered.jsonl"
    unanswered.write_text(json.dumps({"messages": CHATS[0][:2]}) + "\n")
    assert main(["causal", "heads", "--pretrained", str(dirs["base"]), "--finetuned", str(dirs["instruct"]),
                 "--data", str(unanswered), "--chat-column", "messages", "--ablate", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ends with the assistant's answer" in err, err


# ------------------------------------------------------------------------------------------- the index


def test_a_causal_index_is_searched_like_an_encoder_index(dirs, tmp_path, capsys):
    """`attnflows causal index` over chats and texts: the usual index files, readable by `index info`,
    `index verify` and `index query`; stored usage and head change equal causal_heads' values."""
    from attnflows_panel.cli import main
    from attnflows_panel.heads import decode
    from attnflows_panel.index import SignatureIndex

    data = tmp_path / "prompts.jsonl"
    rows = [{"id": f"s{i}", "text": s} for i, s in enumerate(SENTENCES)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "idx"
    argv = ["causal", "index", "--pretrained", str(dirs["base"]), "--finetuned", str(dirs["instruct"]),
            "--data", str(data), "--tau", "0.1", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert f"indexed {len(SENTENCES)} prompts into {out}" in capsys.readouterr().out

    idx = SignatureIndex.open(out)
    assert len(idx) == len(SENTENCES) and idx.manifest["model_kind"] == "causal"
    pair = CausalPair.load(dirs["base"], dirs["instruct"])
    want = corpus_change(pair, read_prompts(data), tau=0.1)
    np.testing.assert_allclose(idx.usage(), want.usage, atol=1e-3)  # stored as float16
    cos, js = decode(np.load(out / "head_change.npy"))
    np.testing.assert_allclose(cos, want.cosine, atol=0.01)
    np.testing.assert_allclose(js, want.jsd, atol=0.01)
    assert idx.metadata["sentence_a"].tolist() == SENTENCES

    assert main(["index", "verify", "--index", str(out)]) == 0
    assert "ok:" in capsys.readouterr().out
    assert main(["index", "info", "--index", str(out)]) == 0
    assert f"{len(SENTENCES)}" in capsys.readouterr().out
    assert main(["index", "query", "--index", str(out), "--id", "s3", "--k", "3"]) == 0
    printed = capsys.readouterr().out
    assert "3 results" in printed and "s3" in printed
    hits = idx.query(sample_id="s3", k=len(SENTENCES))
    assert hits["id"].iloc[0] == "s3"  # the prompt itself first

    # an existing index is kept unless --overwrite; a folder of other files is never overwritten
    assert main(argv) == 1
    assert "is not empty: pass --overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--limit", "3"]) == 0
    assert len(SignatureIndex.open(out)) == 3
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main([*argv[:-3], "--out", str(other), "--overwrite", "--no-progress"]) == 1
    assert "holds other files than an index" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "keep me"
