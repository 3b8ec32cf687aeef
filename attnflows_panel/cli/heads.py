"""``attnflows heads report``: which heads did fine-tuning change, and does it matter?

::

    # over a model pair and a corpus (both models run once over it)
    attnflows heads report --data ../shared/data/glue/MRPC --task mrpc --split dev --json mrpc-heads.json
    attnflows heads report --pretrained bert-base-uncased --finetuned textattack/bert-base-uncased-MRPC \\
        --data glue/mrpc --task mrpc --limit 400 --max-length 128 --ablate
    # over a built index (no model runs, unless --ablate)
    attnflows heads report --index index/mrpc-dev --json mrpc-heads.json
    attnflows heads report --index index/mrpc-dev --ids 1355540,2029631 --json subset.json
    # on other edge weights (attnflows_panel.weights): norm (Kobayashi et al. 2020), attattr (Hao et al. 2021)
    attnflows heads report --data ../shared/data/glue/MRPC --task mrpc --limit 200 --weights norm
    attnflows heads report --index index/mrpc-dev-norm          # an index built with --weights norm

The JSON report holds ``layers``, ``heads``, ``n_samples``, ``cosine``, ``jsd``, ``usage_change`` and,
with ``--ablate``, ``ablation_accuracy_delta`` and ``importance`` (each an [L][H] list of floats,
0-based HF layer order), plus ``sample_ids``, ``weights`` (the edge weights that cosine, JSD and the
head usage were computed on: ``raw``, ``norm`` or ``attattr``) and ``usage`` (the mean head usage of
each model, ``{"pretrained": [L][H], "finetuned": [L][H]}``); the definitions are in
:mod:`attnflows_panel.heads` and :mod:`attnflows_panel.ablation` (README.md, "Which heads changed").

``--weights attattr`` needs a classification head on *both* models: Hao et al.'s attribution is taken
of the predicted class's probability, which a bare pre-trained encoder does not have. Comparing one
model's attribution with the other's ``norm`` weights would measure the change of kind, not what
fine-tuning changed, so such a pair is refused (the app's view may show that mix, and says so). With
``--index`` the weights are the index's (``--weights`` may only repeat them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from attnflows_panel.cli.finetune import _positive_int, finite_float

#: the edge weights a report compares (attnflows_panel.weights.WEIGHT_KINDS, without importing torch here)
WEIGHT_CHOICES = ("raw", "norm", "attattr")
#: Hao et al.'s default number of Riemann steps
DEFAULT_STEPS = 20


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "heads",
        help="which heads did fine-tuning change, and does it matter (cosine, JSD, ablation, importance)",
        description="Corpus-level comparison of the two models' heads, head ablation and importance.",
    )
    sub = p.add_subparsers(dest="heads_command", metavar="ACTION")
    sub.required = True
    r = sub.add_parser(
        "report",
        help="per-head cosine, JSD and usage change over a corpus (and, with --ablate, accuracy change and importance)",
        description="Per-head change between the pre-trained and the fine-tuned model over a corpus or an index: "
                    "Kovaleva's cosine, Jensen-Shannon divergence (base 2), head-usage change; with --ablate also the "
                    "accuracy change when each head is disabled and Michel's gradient importance.",
    )
    src = r.add_argument_group("source (a model pair and a corpus, or --index)")
    src.add_argument("--index", default=None, metavar="DIR",
                     help="a built index (attnflows index build): no model runs")
    src.add_argument("--pretrained", default=None,
                     help="pre-trained model: hub name or folder (default: packaged MiniLM)")
    src.add_argument("--finetuned", default=None,
                     help="fine-tuned model: hub name or folder (default: the cached fine-tuned MiniLM; with --index: "
                          "its manifest's)")
    from attnflows_panel.cli.finetune import GLUE_TASK_CHOICES

    src.add_argument("--data", default=None, metavar="SOURCE",
                     help="corpus: glue/<task> (hub), a GLUE task folder, a .csv/.jsonl file, or demo")
    src.add_argument("--task", default=None, type=str.lower, choices=GLUE_TASK_CHOICES,
                     help="the task (labels) of --data, as for `attnflows index build`")
    src.add_argument("--split", default=None, help="split of --data (default: the source's dev split)")
    src.add_argument("--limit", type=_positive_int, default=None, help="use at most this many samples")
    src.add_argument("--max-length", type=_positive_int, default=None,
                     help="tokens per pair, specials included; longer pairs are truncated as the tokenizer does with "
                          "truncation=True (default: the models' maximum)")
    src.add_argument("--tau", type=finite_float, default=None,
                     help="τ of the head usage (default: 0.15 for the offline default MiniLM pair, 0.3 otherwise)")
    src.add_argument("--ids", default=None,
                     help="with --index: only these sample ids (comma-separated, or @FILE with one id a line)")
    src.add_argument("--weights", default=None, choices=WEIGHT_CHOICES,
                     help="edge weights compared: raw attention, norm (Kobayashi et al. 2020) or attattr (Hao et "
                          "al. 2021; both models need a classification head) (default raw; with --index: the "
                          "index's)")
    src.add_argument("--steps", type=_positive_int, default=None,
                     help="with --weights attattr: Riemann steps m of the integrated gradients (default 20)")
    r.add_argument("--json", default=None, metavar="OUT", help="write the report as JSON to OUT ('-' = stdout)")
    r.add_argument("--ablate", action="store_true",
                   help="also disable each head in turn (accuracy change) and compute Michel's gradient importance")
    r.add_argument("--ablation-mode", default="mask", choices=("mask", "uniform"),
                   help="how --ablate disables a head: mask = its output zeroed (Michel), uniform = uniform attention "
                        "over the real tokens (Kovaleva) (default mask)")
    r.add_argument("--batch-size", type=_positive_int, default=32, help="pairs per forward batch (default 32)")
    r.add_argument("--top", type=_positive_int, default=5, help="heads listed as most changed (default 5)")
    r.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.set_defaults(func=run_report)


def _read_ids(spec: str) -> list[str]:
    if spec.startswith("@"):
        path = Path(spec[1:])
        if not path.exists():
            raise FileNotFoundError(f"--ids file {path} does not exist")
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        ids = [x.strip() for x in spec.split(",") if x.strip()]
    if not ids:
        raise ValueError("--ids names no sample id")
    return ids


def _check_args(args: argparse.Namespace) -> None:
    if args.index is not None:
        clash = [f"--{n.replace('_', '-')}" for n in ("data", "task", "split", "limit", "max_length", "tau")
                 if getattr(args, n) is not None]
        if clash:
            raise ValueError(f"{', '.join(clash)} cannot be combined with --index (the index fixes the corpus and τ)")
    else:
        if args.data is None:
            raise ValueError("give a corpus (--data SOURCE, with the models) or a built index (--index DIR)")
        if args.ids is not None:
            raise ValueError("--ids works with --index; with --data use --limit")
    if args.tau is not None and not 0.0 < args.tau < 1.0:
        raise ValueError(f"--tau must be in (0, 1), got {args.tau}")
    weights = getattr(args, "weights", None)
    if getattr(args, "steps", None) is not None and weights != "attattr":
        raise ValueError("--steps sets the Riemann steps of --weights attattr; it has no meaning for "
                         f"{weights or 'raw'} weights")
    if args.index is not None and weights == "attattr":
        raise ValueError("an index holds raw or norm edge weights (attattr needs gradients per pair): for attattr "
                         "give the corpus and the models (--data SOURCE) instead of --index")


def _check_index_weights(args: argparse.Namespace, idx) -> str:
    """The index's edge weights; a different ``--weights`` is refused with the reason."""
    weights = getattr(args, "weights", None)
    if weights is not None and weights != idx.weights:
        raise ValueError(f"the index at {args.index} counts {idx.weights} edge weights, not {weights}: leave out "
                         f"--weights (or give --weights {idx.weights}), or build an index with --weights {weights}")
    return idx.weights


def _check_attattr(pair) -> None:
    """``--weights attattr``: both models need a classification head (Hao et al.'s F), else one line says which."""
    from attnflows_panel.model_loading import is_classifier

    bare = [f"the {role} model {name!r}" for role, name, model in (
        ("pre-trained", pair.pretrained_name, pair.pretrained_model),
        ("fine-tuned", pair.finetuned_name, pair.finetuned_model)) if not is_classifier(model)]
    if bare:
        verb = "is a bare encoder" if len(bare) == 1 else "are bare encoders"
        raise ValueError(
            f"--weights attattr needs a classification head on both models (Hao et al. 2021 attribute the predicted "
            f"class's probability), but {' and '.join(bare)} {verb}: use --weights norm or raw for this pair")


def _load_pair(args, manifest: dict | None = None):
    from attnflows_panel.models import ModelPair

    pre, fine = args.pretrained, args.finetuned
    if manifest is not None:
        fp = manifest.get("fingerprint", {})
        pre = pre or fp.get("pretrained", {}).get("name")
        fine = fine or fp.get("finetuned", {}).get("name")
    pair = ModelPair.load(pre, fine, device=args.device)
    if getattr(args, "max_length", None) is not None:
        if args.max_length < 8:
            raise ValueError(f"--max-length must be at least 8 tokens, got {args.max_length}")
        if args.max_length > pair.max_length:
            raise ValueError(f"--max-length {args.max_length} exceeds the models' maximum of {pair.max_length} tokens")
        pair.max_length = int(args.max_length)
    return pair


def _check_classifier(pair) -> None:
    """--ablate scores the fine-tuned model's predictions: a bare encoder is refused before any work."""
    from attnflows_panel.ablation import AblationError, _no_head_message

    if not pair.labels:
        raise AblationError(_no_head_message(f"the fine-tuned model {pair.finetuned_name!r}"))


def _corpus_labels(tasks) -> dict[str, list[str]]:
    """Each GLUE task's label names (the others: the names its samples carry)."""
    from attnflows_panel.corpus import TASKS

    return {str(t): list(TASKS[str(t)].labels) for t in dict.fromkeys(tasks or []) if str(t) in TASKS}


def build_report(args: argparse.Namespace) -> dict[str, Any]:
    """The report as a dict (what --json writes); also used by the notebook and the tests."""
    from attnflows_panel import ablation as AB

    _check_args(args)
    progress = not args.no_progress
    if args.index is not None:
        from attnflows_panel.index import SignatureIndex

        idx = SignatureIndex.open(args.index)
        weights = _check_index_weights(args, idx)
        rows = None if args.ids is None else idx.rows_of(_read_ids(args.ids))
        summary = idx.head_change_summary(rows)
        usage = idx.usage(rows)
        md = idx.metadata if rows is None else idx.metadata.iloc[np.asarray(rows)]
        pairs = list(zip(md["sentence_a"].astype(str), md["sentence_b"].astype(str), strict=True))
        label_names = md["label_name"].tolist()
        scorable = md["correct_fine"].astype(object).where(md["correct_fine"].notna(), None).tolist()
        reconciliation = idx.manifest.get("label_reconciliation")
        source = {"index": str(idx.path), "tau": idx.tau, "data": idx.manifest.get("data"),
                  "task": idx.manifest.get("task"), "split": idx.manifest.get("split")}
        pair = _load_pair(args, idx.manifest) if args.ablate else None
        if pair is not None:
            _check_classifier(pair)
            idx.check_pair(pair)
    else:
        from attnflows_panel.defaults import initial_tau

        weights = getattr(args, "weights", None) or "raw"
        steps = getattr(args, "steps", None) or DEFAULT_STEPS
        pair = _load_pair(args)
        if weights == "attattr":
            _check_attattr(pair)
        if args.ablate:
            _check_classifier(pair)
        tau = args.tau if args.tau is not None else initial_tau(args.pretrained, args.finetuned)
        change = AB.corpus_change(pair, args.data, args.task, split=args.split, limit=args.limit, tau=tau,
                                  batch_size=args.batch_size, progress=progress, weights=weights, steps=steps)
        summary = change.summary()
        usage = change.usage
        pairs, label_names = change.pairs, change.label_names
        tasks = change.tasks
        source = {"data": args.data, "task": args.task, "split": args.split, "limit": args.limit, "tau": tau,
                  "max_length": pair.max_length}
        if weights == "attattr":
            source["steps"] = steps
    report = summary.to_dict()
    report["weights"] = weights
    mean_usage = np.asarray(usage, dtype=np.float64).mean(axis=0)  # [2, L, H]
    report["usage"] = {role: [[float(x) for x in row] for row in mean_usage[r]]
                       for r, role in enumerate(("pretrained", "finetuned"))}
    report["source"] = source
    if pair is not None:
        report["models"] = {"pretrained": pair.pretrained_name, "finetuned": pair.finetuned_name}
    if args.ablate:
        if args.index is not None:
            scored = AB.index_gold(pair.labels, label_names, scorable, reconciliation)
        else:
            scored = AB.label_correct_gold(pair.labels, label_names, tasks, _corpus_labels(tasks))
        gold = scored.gold
        abl = AB.corpus_ablation(pair, pairs, gold, args.ablation_mode, batch_size=args.batch_size, progress=progress)
        imp = AB.head_importance(pair, pairs, gold, batch_size=args.batch_size, progress=progress)
        report["ablation_mode"] = args.ablation_mode
        report["base_accuracy"] = float(abl.base_accuracy)
        report["n_labelled"] = int(abl.n_samples)
        report["ablation_scored"] = {"n_scored": scored.n_scored, "n_samples": scored.n_total,
                                     "tasks": scored.scored_tasks, "left_out": scored.skipped,
                                     "message": scored.message}
        report["ablation_accuracy_delta"] = [[float(x) for x in row] for row in abl.delta]
        report["importance"] = [[float(x) for x in row] for row in imp]
    return report


def format_report(report: dict[str, Any], top: int = 5) -> str:
    """A readable per-layer table. Layers and heads are counted from 1 in the text, as the app counts them
    (the JSON's arrays are 0-based: row ``k`` is layer ``k + 1``)."""
    from attnflows_panel import heads as HD

    L, H = report["layers"], report["heads"]
    cos, js = np.asarray(report["cosine"]), np.asarray(report["jsd"])
    uc = None if report.get("usage_change") is None else np.asarray(report["usage_change"])
    abl = report.get("ablation_accuracy_delta")
    imp = report.get("importance")
    src = report.get("source", {})
    where = src.get("index") or src.get("data")
    kind = report.get("weights", "raw")
    on = {"raw": "raw attention", "norm": "norm edge weights (Kobayashi et al. 2020)",
          "attattr": "attattr edge weights (Hao et al. 2021)"}.get(kind, f"{kind} edge weights")
    lines = [f"head change over {report['n_samples']} samples ({where}), {L} layers x {H} heads (counted from 1), "
             f"on {on}"]
    header = f"{'layer':>5}  {'cosine':>7} {'min':>7} {'head':>5}  {'JSD':>7} {'max':>7} {'head':>5}  {'usage Δ':>8}"
    if abl is not None:
        header += f"  {'acc Δ off':>9} {'head':>6}  {'import.':>7} {'head':>6}"
    lines += [header, "-" * len(header)]
    for k in range(L):
        hc, hj = int(np.argmin(cos[k])), int(np.argmax(js[k]))
        row = (f"{k + 1:>5}  {cos[k].mean():>7.4f} {cos[k, hc]:>7.4f} {f'({hc + 1})':>5}  "
               f"{js[k].mean():>7.4f} {js[k, hj]:>7.4f} {f'({hj + 1})':>5}  "
               f"{(uc[k].mean() if uc is not None else float('nan')):>8.4f}")
        if abl is not None:
            a = np.asarray(abl)[k]
            ha = int(np.argmax(np.abs(a)))
            hi = int(np.argmax(np.asarray(imp)[k]))
            row += f"  {a[ha]:>+9.4f} {f'({ha + 1})':>6}  {np.asarray(imp)[k, hi]:>7.3f} {f'({hi + 1})':>6}"
        lines.append(row)
    fmt = lambda items: ", ".join(f"{k + 1}:{h + 1} ({v:.4f})" for k, h, v in items)  # noqa: E731
    lines.append(f"most changed by cosine:  {fmt(HD.most_changed(cos, 'cosine', top))}")
    lines.append(f"most changed by JSD:     {fmt(HD.most_changed(js, 'jsd', top))}")
    if abl is not None:
        a = np.asarray(abl)
        order = np.argsort(-np.abs(a).ravel(), kind="stable")[:top]
        items = ", ".join(f"{i // H + 1}:{i % H + 1} ({a.ravel()[i]:+.4f})" for i in order if a.ravel()[i] != 0)
        items = items or "none (no single head changes any prediction's correctness)"
        lines.append(f"base accuracy {report['base_accuracy']:.4f} on {report['n_labelled']} labelled samples; "
                     f"disabling ({report['ablation_mode']}) changes it most for: {items}")
        scope = report.get("ablation_scored")
        if scope:
            lines.append(f"ablation and importance {scope['message']}")
    return "\n".join(lines)


def write_json_report(report: dict[str, Any], target: str) -> None:
    """``--json``: the report on stdout for ``-``, else written atomically to ``target`` (its folder made;
    a full disk leaves the old report, never half of one) and a line saying so."""
    if target == "-":
        json.dump(report, sys.stdout)
        sys.stdout.write("\n")
        return
    from attnflows_panel._io import atomic_write

    out = Path(target).expanduser()
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(report, indent=1))
    print(f"wrote {out}")


def run_report(args: argparse.Namespace) -> int:
    report = build_report(args)
    if args.json != "-":
        print(format_report(report, args.top))
    if args.json:
        write_json_report(report, args.json)
    return 0


if __name__ == "__main__":  # pragma: no cover
    from attnflows_panel.cli import main

    sys.exit(main(["heads", *sys.argv[1:]]))
