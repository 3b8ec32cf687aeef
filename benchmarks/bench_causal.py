"""P9: a decoder pair at prompt length: the Attention Graph from the root vs. the two models' forward passes.

For each shape, two random-initialised models of one shape (a "base" and an "instruct" with another seed) run
over a prompt of random token ids, and the script measures, interleaved in one process with pinned threads:

- ``forward``: both models' own SDPA forward passes with the next-token logits at the last position
  (``logits_to_keep=1``), nothing recorded: the reference;
- ``run``: the same passes with q/k recorded (:meth:`CausalPair.run`);
- ``graph``: the rows the two Attention Graphs need, from the root (the last token) at ``tau_min``
  (:meth:`ModelRun.trace`, both models), then both graphs built at τ = 0.1.

Targets (DESIGN.md P9, issue #28): graph ≤ 1.5 × forward, and peak memory ≤ 2 × the forward's. Memory is
measured in fresh processes (one only loads the models and runs the plain forwards, one runs the whole
analysis, :meth:`CausalPair.analyse`: recorded forwards, traces, predictions, then both graphs) as the
peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` once the models are loaded, since
loading peaks higher than a forward pass), reported whole and above the resident set after loading: the
median of ``--memory-repeats`` fresh processes per side, alternating (a small model's forward pass peaks at
12-20 MB above the loaded models from one process to the next).

Shapes: ``tiny12``: a Llama of 12 layers, 4 heads (2 key-value heads), hidden 128; ``minilm``: the
packaged MiniLM's shape as a random Llama (6 layers × 12 heads, hidden 384, intermediate 1536, vocabulary
30,522), with weights drawn at initializer range 0.2 (``--init-range``): peaked attention, so that the
graph at τ = 0.01 reaches most of the prompt (with HF's default 0.02 attention is near uniform and the graph
is empty: no measure at all). Lengths 1,024 (``--lengths``) and, recorded, 4,096. The machine's ``uptime``
load is printed with each result: measure on a quiet machine.

Run: ``python benchmarks/bench_causal.py [--lengths 1024,4096] [--shapes tiny12,minilm] [--tau-min 0.01]
[--repeats 3] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _threads() -> str:
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
    return "1"


for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = _threads()

import numpy as np  # noqa: E402
import torch  # noqa: E402

SHAPES = {
    "tiny12": dict(num_hidden_layers=12, num_attention_heads=4, num_key_value_heads=2, hidden_size=128,
                   intermediate_size=512, vocab_size=1000),
    "minilm": dict(num_hidden_layers=6, num_attention_heads=12, num_key_value_heads=12, hidden_size=384,
                   intermediate_size=1536, vocab_size=30522),
}


def _uptime() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Start the peak resident set (VmHWM) afresh: loading the models peaks higher than their forward pass."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def write_pair(shape: str, folder: Path, init_range: float = 0.2) -> tuple[Path, Path]:
    """Two random models of ``shape`` (seeds 0 and 1) with a word-level tokenizer, saved under ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    cfg = SHAPES[shape]
    vocab = {f"t{i}": i for i in range(cfg["vocab_size"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", eos_token="t1")
    out = []
    for seed, name in ((0, "base"), (1, "instruct")):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(LlamaConfig(**cfg, max_position_embeddings=8192, tie_word_embeddings=False,
                                             initializer_range=init_range))
        model.save_pretrained(folder / name)
        fast.save_pretrained(folder / name)
        out.append(folder / name)
    return out[0], out[1]


def _encoded(pair, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    vocab = int(pair.pretrained.config.vocab_size)
    ids = rng.integers(2, vocab, size=n).tolist()
    return pair._encoded(ids, [("prompt", 0, n)], n)


def _plain_forward(pair, enc) -> None:
    """Both models' own forward passes, as one runs a causal LM for its next token: SDPA, logits at the last
    position only (``logits_to_keep=1``), nothing recorded."""
    ids = torch.tensor([enc.ids])
    with torch.inference_mode():
        for model in (pair.pretrained, pair.finetuned):
            model(input_ids=ids, use_cache=False, logits_to_keep=1)


def _graph(pair, runs, root: int, tau_min: float):
    edges = [run.trace(root, tau_min) for run in runs]
    from attnflows_panel.causal_graph import CausalAttentionGraph

    graphs = [CausalAttentionGraph(e, tau=max(0.1, tau_min)) for e in edges]
    return edges, graphs


def time_one(folder: Path, n: int, tau_min: float, repeats: int) -> dict:
    from attnflows_panel.causal import CausalPair

    pair = CausalPair.load(folder / "base", folder / "instruct")
    enc = _encoded(pair, n)
    root = n - 1
    _plain_forward(pair, enc)  # warm-up
    fwd, run_t, graph_t = [], [], []
    edges = graphs = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        _plain_forward(pair, enc)
        t1 = time.perf_counter()
        runs = pair.run(enc)
        t2 = time.perf_counter()
        edges, graphs = _graph(pair, runs, root, tau_min)
        t3 = time.perf_counter()
        fwd.append(t1 - t0)
        run_t.append(t2 - t1)
        graph_t.append(t3 - t2)
        del runs
    return {
        "forward_s": min(fwd), "run_s": min(run_t), "graph_s": min(graph_t),
        "forward_median_s": statistics.median(fwd), "graph_median_s": statistics.median(graph_t),
        "graph_over_forward": min(graph_t) / min(fwd),
        "run_plus_graph_over_forward": (min(run_t) + min(graph_t)) / min(fwd),
        "rows_computed": [e.num_rows for e in edges], "weights_kept": [e.num_weights for e in edges],
        "level_sizes_tau_0.1": [[len(lv) for lv in g.levels] for g in graphs],
    }


def memory_one(folder: Path, n: int, tau_min: float, mode: str) -> dict:
    from attnflows_panel.causal import CausalPair

    pair = CausalPair.load(folder / "base", folder / "instruct")
    enc = _encoded(pair, n)
    import gc

    gc.collect()
    loaded = _rss_mb()
    load_peak = _status_mb("VmHWM")
    _reset_peak()
    if mode == "forward":
        _plain_forward(pair, enc)
    else:  # the whole analysis as CausalPair.analyse does it (one model's q/k at a time), then both graphs
        ana = pair.analyse(enc, root=n - 1, tau_min=tau_min)
        [ana.graph(w, max(0.1, tau_min)) for w in ("pretrained", "finetuned")]
    return {"loaded_mb": loaded, "load_peak_mb": load_peak, "peak_mb": _status_mb("VmHWM")}


def _memory(folder: Path, n: int, tau_min: float, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", mode, "--folder", str(folder), "--lengths", str(n),
           "--tau-min", str(tau_min), "--threads", _threads()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="1024,4096")
    ap.add_argument("--shapes", default="tiny12,minilm")
    ap.add_argument("--tau-min", type=float, default=0.01, help="the smallest τ offered (the app's slider: 0.01)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--init-range", type=float, default=0.2,
                    help="initializer range of the random weights: 0.2 gives peaked attention, so that the graph at "
                         "τ 0.01 spans most of the prompt (HF's default 0.02 gives near-uniform attention and an "
                         "empty graph)")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--memory-repeats", type=int, default=5,
                    help="fresh processes per side for peak memory (the ratio is of the medians)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(int(args.threads))
    lengths = [int(x) for x in args.lengths.split(",")]
    if args.memory_child:
        print(json.dumps(memory_one(Path(args.folder), lengths[0], args.tau_min, args.memory_child)))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-causal-") as tmp:
        for shape in args.shapes.split(","):
            folder = Path(tmp) / shape
            write_pair(shape, folder, args.init_range)
            for n in lengths:
                reps = args.repeats if n <= 1024 else 1
                r = {"shape": shape, "n": n, "tau_min": args.tau_min, "threads": args.threads,
                     "load_before": _uptime(), **time_one(folder, n, args.tau_min, reps)}
                # fresh processes, alternating: a forward pass of a small model peaks at 12-20 MB above the
                # loaded models from one process to the next (the allocator), so the ratio is of medians
                above = {"forward": [], "graph": []}
                peaks = {"forward": [], "graph": []}
                for _ in range(args.memory_repeats):
                    for mode in ("forward", "graph"):
                        m = _memory(folder, n, args.tau_min, mode)
                        above[mode].append(m["peak_mb"] - m["loaded_mb"])
                        peaks[mode].append(m["peak_mb"])
                fwd_above, all_above = statistics.median(above["forward"]), statistics.median(above["graph"])
                r.update(
                    forward_peak_mb=statistics.median(peaks["forward"]),
                    analysis_peak_mb=statistics.median(peaks["graph"]),
                    forward_above_loaded_mb=above["forward"], analysis_above_loaded_mb=above["graph"],
                    peak_ratio=statistics.median(peaks["graph"]) / statistics.median(peaks["forward"]),
                    peak_above_loaded_ratio=all_above / max(1e-9, fwd_above),
                    load_after=_uptime(),
                )
                results.append(r)
                print(json.dumps(r), flush=True)
    print(f"{'shape':8} {'n':>5} {'fwd s':>7} {'run s':>7} {'graph s':>8} {'graph/fwd':>9} "
          f"{'(run+graph)/fwd':>15} {'peak MB':>8} {'fwd peak':>8} {'ratio':>6} {'above-load':>10}  load")
    for r in results:
        print(f"{r['shape']:8} {r['n']:5d} {r['forward_s']:7.3f} {r['run_s']:7.3f} {r['graph_s']:8.3f} "
              f"{r['graph_over_forward']:9.2f} {r['run_plus_graph_over_forward']:15.2f} {r['analysis_peak_mb']:8.0f} "
              f"{r['forward_peak_mb']:8.0f} {r['peak_ratio']:6.2f} {r['peak_above_loaded_ratio']:10.2f}  "
              f"{r['load_before']}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
