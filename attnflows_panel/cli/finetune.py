"""``attnflows finetune``: fine-tune a pre-trained model into a sentence-pair classifier.

Example (the paper's setup, on a machine with internet)::

    attnflows finetune --base bert-base-uncased --data glue/mrpc --task mrpc --out models/bert-mrpc

and offline, from the packaged MiniLM and a local GLUE folder::

    attnflows finetune --data ../shared/data/glue/RTE --out models/minilm-rte
    attnflows finetune --data my_nli.csv --columns premise,hypothesis,gold --out models/minilm-nli
    attnflows finetune --data pairs.jsonl --labels no,yes --out models/minilm-pairs
"""

from __future__ import annotations

import argparse
import math

DESCRIPTION = """\
Fine-tune BASE on the sentence pairs of SOURCE and write a Hugging Face model folder (model, tokenizer,
id2label/label2id with the corpus's label names) plus metrics.json (eval accuracy and F1, and every
setting of the run) to DIR. SOURCE is a hub dataset (glue/mnli, snli, paws/labeled_final, owner/name),
a GLUE task folder (holding train.tsv/dev.tsv), a datasets folder, a .csv/.jsonl file (see --columns,
--labels), or 'demo' (the bundled set). --task is a shortcut for the GLUE tasks (their label names and
order) and is never required: the data names its labels. Options left out take the task's defaults
(printed by --show-defaults)."""


#: --task choices: every GLUE sentence-pair task and its usual aliases
GLUE_TASK_CHOICES = ("mrpc", "rte", "qnli", "wnli", "qqp", "mnli", "mnli-mm", "mnli_matched", "mnli_mismatched")


def column_map(args: argparse.Namespace) -> dict[str, str] | None:
    """--columns A,B[,LABEL] and repeated --column FIELD=COLUMN as one load_corpus column_map."""
    from attnflows_panel.corpus import parse_columns

    cmap = dict(parse_columns(getattr(args, "columns", None)) or {})
    for key, col in getattr(args, "column", None) or []:
        if key in cmap and cmap[key] != col:
            raise ValueError(f"--column {key}={col} contradicts --columns ({key}={cmap[key]})")
        cmap[key] = col
    return cmap or None


def _column(text: str) -> tuple[str, str]:
    key, sep, column = text.partition("=")
    if not sep or not key.strip() or not column.strip():
        raise argparse.ArgumentTypeError(f"expected FIELD=COLUMN (e.g. sentence_a=question), got {text!r}")
    return key.strip(), column.strip()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def finite_float(text: str) -> float:
    """An option's number: finite (``nan``, ``inf`` are refused before any work)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def _unit_float(text: str) -> float:
    value = finite_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 up to (not including) 1, got {value}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a pre-trained model on any sentence-pair classification task",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--base",
        metavar="MODEL",
        default=None,
        help="pre-trained model: a folder or hub name (default: the packaged all-MiniLM-L6-v2)",
    )
    p.add_argument("--data", metavar="SOURCE", help="required: hub name, GLUE task folder, .csv/.jsonl file, or 'demo'")
    p.add_argument("--task", choices=GLUE_TASK_CHOICES, type=str.lower, default=None,
                   help="a GLUE task (sets its label names and order); default: the data says")
    p.add_argument("--columns", metavar="A,B[,LABEL]", default=None,
                   help="the text columns (and the label column) of a CSV/JSONL file or a hub dataset")
    p.add_argument("--labels", metavar="NAME0,NAME1,...", default=None,
                   help="label names in id order, for integer labels in a CSV/JSONL file")
    p.add_argument("--out", metavar="DIR", help="required: output folder (must be absent or empty unless --overwrite)")
    p.add_argument("--epochs", type=_positive_float, help="training epochs (fractions allowed)")
    p.add_argument("--lr", "--learning-rate", dest="learning_rate", type=_positive_float, help="peak learning rate")
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--max-length", type=_positive_int, help="tokens per pair; longer pairs are truncated")
    p.add_argument("--warmup-ratio", type=_unit_float, help="share of the steps spent warming up linearly, in [0, 1)")
    p.add_argument("--weight-decay", type=_unit_float, help="AdamW's decoupled weight decay, in [0, 1)")
    p.add_argument("--max-steps", type=_positive_int, help="stop after this many optimizer steps")
    p.add_argument("--train-limit", type=_positive_int, help="train on a seeded random subset of this size")
    p.add_argument("--eval-limit", type=_positive_int, help="evaluate on a seeded random subset of this size")
    p.add_argument("--seed", type=int, default=42, help="seed for torch, numpy, random and the data order (default 42)")
    p.add_argument(
        "--column",
        action="append",
        type=_column,
        default=[],
        metavar="FIELD=COLUMN",
        help="CSV/JSONL/hub column for sentence_a, sentence_b, label or id (repeatable)",
    )
    p.add_argument("--device", help="torch device, e.g. cpu or cuda (default: CUDA when available, else CPU)")
    p.add_argument(
        "--eval-each-epoch",
        action="store_true",
        help="also evaluate after every epoch (recorded under 'history' in metrics.json; training is unchanged)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar or status lines")
    p.add_argument("--show-defaults", action="store_true", help="print the per-task default settings and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attnflows_panel.finetune import TASK_DEFAULTS, finetune

    if args.show_defaults:
        for task, d in TASK_DEFAULTS.items():
            print(
                f"{task}: epochs {d.epochs}, lr {d.learning_rate}, batch {d.batch_size}, warm-up {d.warmup_ratio}, "
                f"weight decay {d.weight_decay}, max length {d.max_length}"
            )
        return 0
    missing = [f"--{name}" for name in ("data", "out") if not getattr(args, name)]
    if missing:
        raise ValueError(f"missing {', '.join(missing)} (see attnflows finetune --help)")
    base = args.base
    if base is None:
        from attnflows_panel.defaults import pretrained_path

        base = pretrained_path()
    metrics = finetune(
        base=base,
        data=args.data,
        task=args.task,
        out=args.out,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        max_length=args.max_length,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        max_steps=args.max_steps,
        train_limit=args.train_limit,
        eval_limit=args.eval_limit,
        seed=args.seed,
        column_map=column_map(args),
        labels=args.labels,
        overwrite=args.overwrite,
        eval_each_epoch=args.eval_each_epoch,
        device=args.device,
        progress=not args.quiet,
    )
    print(
        f"{args.out}: {metrics['task']} ({len(metrics['labels'])} labels: {', '.join(metrics['labels'])}) "
        f"eval accuracy {metrics['accuracy']:.4f}, "
        f"F1({metrics['f1_label']}) {metrics['f1']:.4f} on {metrics['n_eval']} pairs "
        f"({metrics['n_train']} training pairs, {metrics['duration_seconds']:.0f} s); details in metrics.json"
    )
    return 0
