"""Fine-tuning quality: full default runs on real GLUE from the packaged all-MiniLM-L6-v2.

Issue 2's bars: MRPC dev accuracy >= 0.78 and RTE dev accuracy >= 0.55, reached with the *default*
settings of ``attnflows finetune`` (``attnflows_panel.finetune.TASK_DEFAULTS``). Each run trains on the
task's full train.tsv and evaluates on the full dev.tsv (QNLI: a seeded 80/20 split of dev.tsv, since
the shared folder has no train.tsv).

    python benchmarks/bench_finetune.py                  # MRPC and RTE (minutes each on 2 CPU cores)
    python benchmarks/bench_finetune.py --tasks rte --seeds 42 0 1
    python benchmarks/bench_finetune.py --tasks qnli --train-limit 2000

Writes ``benchmarks/results/finetune_<task>[_seed<seed>].json`` (git-ignored): the full metrics of each
run plus the bar and whether it was met. The GLUE folder comes from ``--glue-dir``, else
``$ATTNFLOWS_GLUE_DIR``, else ``../shared/data/glue``. Exit status 1 if a default-seed run misses its bar.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BARS = {"mrpc": 0.78, "rte": 0.55, "qnli": None}


def main(argv: list[str] | None = None) -> int:
    from attnflows_panel.defaults import pretrained_path
    from attnflows_panel.finetune import TASK_DEFAULTS, finetune

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["mrpc", "rte"], choices=sorted(TASK_DEFAULTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42], help="default 42, the CLI default")
    parser.add_argument("--glue-dir", type=Path, default=None)
    parser.add_argument("--train-limit", type=int, default=None, help="subsample training (QNLI runs)")
    parser.add_argument("--eval-limit", type=int, default=None, help="subsample evaluation (smoke runs only)")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--keep-models", action="store_true", help="keep the model folders under --results")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    glue = args.glue_dir or Path(os.environ.get("ATTNFLOWS_GLUE_DIR") or REPO.parent / "shared" / "data" / "glue")
    if not glue.is_dir():
        parser.error(f"GLUE folder not found: {glue} (use --glue-dir or ATTNFLOWS_GLUE_DIR)")
    args.results.mkdir(parents=True, exist_ok=True)
    base = pretrained_path()

    rows, failed = [], False
    for task in args.tasks:
        for seed in args.seeds:
            suffix = "" if seed == 42 and len(args.seeds) == 1 else f"_seed{seed}"
            with tempfile.TemporaryDirectory(dir=args.results) as tmp:
                out = (args.results / f"model_{task}{suffix}") if args.keep_models else Path(tmp) / "model"
                t0 = time.perf_counter()
                metrics = finetune(
                    base,
                    str(glue / task.upper()),
                    task,
                    out,
                    seed=seed,
                    train_limit=args.train_limit,
                    eval_limit=args.eval_limit,
                    overwrite=True,
                    eval_each_epoch=True,  # a learning curve for free: evaluation does not change training
                    progress=not args.quiet,
                )
                wall = time.perf_counter() - t0
            bar = BARS[task]
            met = None if bar is None else metrics["accuracy"] >= bar
            record = {
                "benchmark": "finetune",
                "task": task,
                "seed": seed,
                "bar_accuracy": bar,
                "bar_met": met,
                "wall_seconds": round(wall, 1),
                "cpu_count": os.cpu_count(),
                "metrics": metrics,
            }
            path = args.results / f"finetune_{task}{suffix}.json"
            path.write_text(json.dumps(record, indent=2) + "\n")
            rows.append((task, seed, metrics, bar, met, wall, path))
            if met is False and seed == 42 and args.train_limit is None and args.eval_limit is None:
                failed = True

    print()
    print(f"{'task':<6}{'seed':>6}{'n_train':>9}{'n_eval':>8}{'accuracy':>10}{'F1':>8}  {'F1 of':<14}{'bar':>6}  "
          f"{'met':<5}{'minutes':>8}")
    for task, seed, m, bar, met, wall, _path in rows:
        print(
            f"{task:<6}{seed:>6}{m['n_train']:>9}{m['n_eval']:>8}{m['accuracy']:>10.4f}{m['f1']:>8.4f}  "
            f"{m['f1_label']:<14}{bar if bar is not None else '-':>6}  {str(met):<5}{wall / 60:>8.1f}"
        )
    print(f"\nresults: {args.results}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
