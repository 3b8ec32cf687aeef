"""Speed of ``attnflows heads report`` (issue 12, target: at most 1.3x the two models' raw forward passes).

    python benchmarks/bench_heads.py                              # 400 MRPC dev pairs, 3 rounds
    python benchmarks/bench_heads.py --quick                      # smoke run: 32 pairs, 1 round
    python benchmarks/bench_heads.py --finetuned models/minilm-mrpc --threads 2

The report without ``--ablate`` (:func:`attnflows_panel.cli.heads.build_report`: both models over the
corpus in length-sorted batches, every sample's cosine, JSD and head usage, the corpus means, the JSON
dict) is timed against the raw batched forward passes of the same two models over the same pairs
(length-sorted batches of ``--batch-size``, padded per batch, eager attention with
``output_attentions=True``: the least the report needs). The two alternate, ``--repeats`` rounds, in
one process with the same torch thread count. Reported ratios: median wall time report / raw, best /
best, CPU seconds; and, inside each report run, the share of its wall time spent in the models' own
forward passes (forward hooks), which is the ratio least disturbed by other jobs on a shared machine
(report time / the forward time of that very run).

Results go to stdout and ``benchmarks/results/bench_heads.json``. benchmarks/README.md lists the last
figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # the shared reference side, benchmarks/raw_forward.py
from raw_forward import raw_forward  # noqa: E402

TARGET = 1.3


class ForwardClock:
    """Wall time spent inside the two models' forward calls (pre/post forward hooks)."""

    def __init__(self, pair):
        self.total = 0.0
        self._t = None
        self._handles = []
        for model in (pair.pretrained_model, pair.finetuned_model):
            self._handles.append(model.register_forward_pre_hook(self._start))
            self._handles.append(model.register_forward_hook(self._stop))

    def _start(self, *_):
        self._t = time.perf_counter()

    def _stop(self, *_):
        self.total += time.perf_counter() - self._t

    def remove(self):
        for h in self._handles:
            h.remove()


def run_report(pair, args, data: str) -> tuple[float, float, float, dict]:
    """(wall, CPU, forward wall) seconds of one report, and the report."""
    from attnflows_panel.cli import heads as cli_heads

    ns = argparse.Namespace(index=None, pretrained=None, finetuned=None, data=data, task="mrpc", split="dev",
                      limit=args.n, max_length=None, tau=args.tau, ids=None, json=None, ablate=False,
                      ablation_mode="mask", batch_size=args.batch_size, top=5, device="cpu", no_progress=True)
    clock = ForwardClock(pair)
    # build_report loads the pair itself; hand it ours so that only the report is timed
    original = cli_heads._load_pair
    cli_heads._load_pair = lambda *_a, **_k: pair
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        report = cli_heads.build_report(ns)
        json.dumps(report)  # what --json writes
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        cli_heads._load_pair = original
        clock.remove()
    return wall, cpu, clock.total, report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pretrained", default=None, help="default: the packaged all-MiniLM-L6-v2")
    p.add_argument("--finetuned", default=None,
                   help="default: the offline default fine-tune (attnflows demo --prepare-only)")
    p.add_argument("--n", type=int, default=400, help="MRPC dev pairs (default 400)")
    p.add_argument("--repeats", type=int, default=3, help="rounds of (raw, report) (default 3)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's)")
    p.add_argument("--tau", type=float, default=0.15)
    p.add_argument("--quick", action="store_true", help="smoke run: 32 pairs, 1 round")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.repeats = 32, 1

    import torch

    from attnflows_panel.corpus import load_corpus
    from attnflows_panel.models import ModelPair

    if args.threads:
        torch.set_num_threads(args.threads)
    glue = Path(os.environ.get("ATTNFLOWS_GLUE_DIR", REPO.parent / "shared" / "data" / "glue"))
    data = str(glue / "MRPC")
    if not (glue / "MRPC" / "dev.tsv").exists():
        print(f"GLUE MRPC not found under {glue} (set ATTNFLOWS_GLUE_DIR)", file=sys.stderr)
        return 2
    pair = ModelPair.load(args.pretrained, args.finetuned, device="cpu")
    ds = load_corpus(data, task="mrpc", split="dev", limit=args.n)
    pairs = list(zip(ds["sentence_a"], ds["sentence_b"], strict=True))

    raw_forward(pair, pairs[:8], args.batch_size)  # warm-up
    rows = []
    for r in range(args.repeats):
        raw_wall, raw_cpu = raw_forward(pair, pairs, args.batch_size)
        rep_wall, rep_cpu, fwd, report = run_report(pair, args, data)
        rows.append({"raw_wall": raw_wall, "raw_cpu": raw_cpu, "report_wall": rep_wall, "report_cpu": rep_cpu,
                     "report_forward_wall": fwd, "inside_ratio": rep_wall / fwd})
        print(f"round {r + 1}: raw {raw_wall:.2f} s (cpu {raw_cpu:.2f}), report {rep_wall:.2f} s "
              f"(cpu {rep_cpu:.2f}; forward passes inside it {fwd:.2f} s)", flush=True)
    med = lambda k: statistics.median(x[k] for x in rows)  # noqa: E731
    result = {
        "n_pairs": len(pairs), "repeats": args.repeats, "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "models": {"pretrained": pair.pretrained_name, "finetuned": pair.finetuned_name},
        "ratio_median_wall": med("report_wall") / med("raw_wall"),
        "ratio_best_wall": min(x["report_wall"] for x in rows) / min(x["raw_wall"] for x in rows),
        "ratio_cpu": med("report_cpu") / med("raw_cpu"),
        "ratio_inside_report": med("inside_ratio"),
        "target": TARGET,
        "load_average": list(os.getloadavg()),
        "rounds": rows,
        "n_samples_reported": report["n_samples"],
    }
    result["met"] = result["ratio_inside_report"] <= TARGET and result["ratio_best_wall"] <= TARGET
    print(f"{len(pairs)} pairs, {result['threads']} threads, load avg {result['load_average'][0]:.1f}")
    for key in ("ratio_median_wall", "ratio_best_wall", "ratio_cpu", "ratio_inside_report"):
        print(f"  {key:<22} {result[key]:.3f}  (target <= {TARGET})")
    out = HERE / "results" / "bench_heads.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
