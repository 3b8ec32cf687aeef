"""``attnflows index build|query|info|verify``: build and search a signature index from the shell.

::

    attnflows index build --data glue/mrpc --task mrpc --split validation --out index/mrpc-dev
    attnflows index build --pretrained bert-base-uncased --finetuned textattack/bert-base-uncased-MRPC \\
        --data ../shared/data/glue/MRPC --task mrpc --tau 0.3 --out index/bert-mrpc
    attnflows index query --index index/mrpc-dev --id 1355540 --space diff --heads "5:*,6:4" --k 5
    attnflows index query --index index/mrpc-dev --a "The cat sat." --b "A cat was sitting." --correct no
    attnflows index info --index index/mrpc-dev
    attnflows index verify --index index/mrpc-dev
    attnflows index build --engine ray --ray-address auto --device cuda --data glue/mnli --task ... --out index/big

Queries by ``--id`` need no models; ``--a/--b`` runs the pair through the models the index was built
from (the names in its manifest; ``--pretrained/--finetuned`` override them, and their weights are
checked against the manifest). Heads are ``layer:head`` counted from 1, as the app counts them (``*`` and
ranges ``a-b`` allowed: ``"6:*,5:3"``, ``"2-3:1-6"``).
"""

from __future__ import annotations

import argparse
import json
import sys

from attnflows_panel.cli.finetune import GLUE_TASK_CHOICES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "index",
        help="build or search a FAISS index of attention head-usage signatures",
        description="Build or search a FAISS index of per-head usage signatures (pre-trained, fine-tuned, difference).",
    )
    sub = p.add_subparsers(dest="index_command", metavar="ACTION")
    sub.required = True
    _register_build(sub)
    _register_query(sub)
    i = sub.add_parser("info", help="describe an index (manifest)")
    i.add_argument("--index", required=True, metavar="DIR", help="index folder")
    i.set_defaults(func=run_info)
    v = sub.add_parser("verify", help="check an index fully: checksums of every file, and the files against each other",
                       description="Check every file of an index against the size and checksum its manifest records, "
                                   "then the contents against each other (vectors, norms, centre, id map). Exit status "
                                   "0 when intact, 1 when anything is wrong (each finding names its file).")
    v.add_argument("--index", required=True, metavar="DIR", help="index folder")
    v.set_defaults(func=run_verify)
    u = sub.add_parser("upgrade", help="record the checksums of an index written before manifests had them",
                       description="An index written before manifests carried checksums is refused until this "
                                   "explicit command checks its files against each other and records their checksums.")
    u.add_argument("--index", required=True, metavar="DIR", help="index folder")
    u.set_defaults(func=run_upgrade)


def _register_build(sub) -> None:
    """``attnflows index build``: its options."""
    b = sub.add_parser("build", help="index a corpus (resumes an interrupted build)",
                       description="Run both models over a corpus and index every sample's head-usage signature.")
    b.add_argument("--pretrained", default=None,
                   help="pre-trained model: hub name or folder (default: packaged MiniLM)")
    b.add_argument("--finetuned", default=None,
                   help="fine-tuned model: hub name or folder (default: the cached fine-tuned MiniLM)")
    b.add_argument("--weights", default="raw", choices=("raw", "norm"),
                   help="edge weights whose head usage is indexed: raw attention or norm (Kobayashi et al. 2020) "
                        "(default raw; recorded in the manifest)")
    b.add_argument("--data", required=True, metavar="SOURCE",
                   help="corpus: a hub dataset (glue/mnli, snli, owner/name), a GLUE task folder, a datasets folder, "
                        "a .csv/.jsonl file, or demo")
    b.add_argument("--task", default=None, type=str.lower, choices=GLUE_TASK_CHOICES,
                   help="a GLUE task of --data (its label names and order); default: the data says")
    b.add_argument("--columns", metavar="A,B[,LABEL]", default=None,
                   help="the text columns (and the label column) of a CSV/JSONL file or a hub dataset")
    b.add_argument("--labels", metavar="NAME0,NAME1,...", default=None,
                   help="label names in id order, for integer labels in a CSV/JSONL file")
    b.add_argument("--label-map", metavar="index|MODEL=CORPUS,...", default=None,
                   help="match the fine-tuned model's labels to the corpus's: 'index' for generic LABEL_0, LABEL_1, … "
                        "by position (counts must agree), or explicit pairs such as LABEL_0=entailment; "
                        "default: by name")
    b.add_argument("--split", default=None, help="split of --data (default: the source's dev split)")
    b.add_argument("--limit", type=int, default=None, help="index at most this many samples")
    b.add_argument("--tau", type=float, default=None,
                   help="attention threshold τ of the Attention Graph (default: 0.15 for the offline default MiniLM "
                        "pair, 0.3 as in the paper for any other pair)")
    b.add_argument("--out", required=True, metavar="DIR", help="index folder to write, e.g. index/mrpc-dev")
    b.add_argument("--batch-size", type=int, default=32, help="pairs per forward batch (default 32)")
    b.add_argument("--max-tokens", type=int, default=None, metavar="N",
                   help="at most N padded tokens per forward batch, so long pairs run in smaller batches whose "
                        "attention weights stay in the CPU's cache (default: 2048 on the CPU, no budget on a GPU; "
                        "0 = no budget)")
    b.add_argument("--shard-size", type=int, default=None,
                   help="samples per shard, the unit of resumption (default 1024)")
    b.add_argument("--exact-limit", type=int, default=None,
                   help="exhaustive search up to this many samples, approximate (HNSW) above (default 100000)")
    b.add_argument("--factory", default=None, help="any faiss.index_factory string instead (inner product)")
    b.add_argument("--keep-shards", action="store_true", help="keep the per-shard files after the build")
    b.add_argument("--overwrite", action="store_true", help="replace an index built with other settings in --out")
    b.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    b.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local: this process (default); ray: Ray Data, an actor pool of model-pair workers on a "
                        "Ray cluster (pip install 'attnflows-panel[ray]'; see index/README.md)")
    b.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="with --engine ray: the cluster to join, e.g. auto or ray://head:10001 (default: $RAY_ADDRESS, "
                        "else a local Ray instance on this machine)")
    b.add_argument("--workers", type=int, default=None,
                   help="with --engine ray: model-pair workers (default: one per GPU with --device cuda, else 2)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=run_build)


def _register_query(sub) -> None:
    """``attnflows index query``: its options."""
    q = sub.add_parser("query", help="find samples with similar attention head usage",
                       description="Find samples whose head-usage signatures are most similar to a sample's "
                                   "or a new pair's.")
    q.add_argument("--index", required=True, metavar="DIR", help="index folder")
    who = q.add_mutually_exclusive_group(required=True)
    who.add_argument("--id", default=None, help="query by a sample id in the index")
    who.add_argument("--a", default=None, metavar="TEXT", help="query by a new pair: sentence A (with --b)")
    q.add_argument("--b", default=None, metavar="TEXT", help="sentence B of the new pair")
    q.add_argument("--space", default="all", choices=("pre", "fine", "diff", "all"),
                   help="pre-trained block, fine-tuned block, their difference, or all three (default)")
    q.add_argument("--heads", default=None, help='restrict to heads, "layer:head,..." counted from 1 as in the app, '
                        'e.g. "1:2,4:6", "6:*" or "2-3:1-6"')
    q.add_argument("--k", type=int, default=10, help="number of results (default 10)")
    q.add_argument("--weights", default=None, choices=("raw", "norm"),
                   help="the edge weights the query expects (default: the index's; another kind is refused)")
    q.add_argument("--label", default=None, help="only samples with this gold label (name or number)")
    q.add_argument("--prediction", default=None, help="only samples the fine-tuned model predicts as this label")
    q.add_argument("--correct", default=None, choices=("yes", "no"),
                   help="only samples the fine-tuned model gets right (yes) or wrong (no)")
    q.add_argument("--text", default=None, help="only samples whose sentences contain this text")
    q.add_argument("--exclude-self", action="store_true", help="leave the query sample out of the results")
    q.add_argument("--pretrained", default=None,
                   help="for --a/--b: pre-trained model (default: the one in the manifest)")
    q.add_argument("--finetuned", default=None, help="for --a/--b: fine-tuned model (default: the one in the manifest)")
    q.add_argument("--device", default=None, help="torch device for --a/--b")
    q.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    q.add_argument("--width", type=int, default=60, help="characters of each sentence shown in the table")
    q.set_defaults(func=run_query)


def _load_pair(pretrained, finetuned, device):
    from attnflows_panel.models import ModelPair

    return ModelPair.load(pretrained, finetuned, device=device)


def _check_readable(source: str) -> None:
    """A local --data file or folder that exists must be readable (said before the models load)."""
    from pathlib import Path

    path = Path(source).expanduser()
    if not path.exists():
        return  # a hub name, "demo", or a missing path that load_corpus names
    files = [path]
    if path.is_dir():
        files = [p for p in path.iterdir() if p.suffix.lower() in (".tsv", ".csv", ".jsonl")]
    for f in files:
        with open(f, "rb") as fh:
            fh.read(1)


def run_build(args: argparse.Namespace) -> int:
    from attnflows_panel.defaults import initial_tau
    from attnflows_panel.index import DEFAULT_EXACT_LIMIT, DEFAULT_SHARD_SIZE, SignatureIndex, build_index

    if args.tau is None:
        args.tau = initial_tau(args.pretrained, args.finetuned)
    if not 0.0 < args.tau < 1.0:
        raise ValueError(f"--tau must be in (0, 1), got {args.tau}")
    if args.engine != "ray" and (args.ray_address or args.workers):
        raise ValueError("--ray-address and --workers go with --engine ray")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_tokens is not None and args.max_tokens < 0:
        raise ValueError(f"--max-tokens must be >= 0 (0 = no budget), got {args.max_tokens}")
    if args.engine == "ray":
        from attnflows_panel.index import require_ray

        require_ray()  # before the models load: a missing extra is said at once
    from attnflows_panel._io import check_writable

    check_writable(args.out, "--out")  # before the models load
    _check_readable(args.data)
    pair = _load_pair(args.pretrained, args.finetuned, args.device)
    kwargs = dict(
        split=args.split, tau=args.tau, batch_size=args.batch_size, max_tokens=args.max_tokens,
        limit=args.limit, progress=not args.no_progress,
        shard_size=args.shard_size or DEFAULT_SHARD_SIZE,
        exact_limit=DEFAULT_EXACT_LIMIT if args.exact_limit is None else args.exact_limit,
        factory=args.factory, keep_shards=args.keep_shards, overwrite=args.overwrite,
        label_map=args.label_map, column_map=_columns(args.columns), labels=args.labels,
    )
    if args.engine == "ray":
        from attnflows_panel.index import build_index_ray

        path = build_index_ray(pair, args.data, args.task, args.out, address=args.ray_address,
                               workers=args.workers, device=args.device, weights=args.weights, **kwargs)
    else:
        path = build_index(pair, args.data, args.task, args.out, weights=args.weights, **kwargs)
    idx = SignatureIndex.open(path)
    acc = idx.accuracy()
    n_scored = int(idx.metadata["correct_fine"].notna().sum())
    acc_text = ""
    if acc is not None:
        acc_text = f", fine-tuned accuracy {acc:.3f}" + ("" if n_scored == len(idx) else f" on {n_scored} samples")
    print(f"indexed {len(idx)} samples into {path} ({idx.manifest['index']['kind']} index "
          f"{idx.manifest['index']['factory']!r}, τ={idx.tau}, {idx.weights} weights{acc_text})")
    if idx.label_mismatch:
        print(f"labels: {idx.label_mismatch}")
    return 0


def _columns(text):
    from attnflows_panel.corpus import parse_columns

    return parse_columns(text)


def _filters(args) -> dict:
    label = args.label
    if label is not None and label.lstrip("-").isdigit():
        label = int(label)
    return {
        "label": label,
        "prediction": args.prediction,
        "correct": None if args.correct is None else args.correct == "yes",
        "text": args.text,
    }


def _short(text, width: int) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def run_query(args: argparse.Namespace) -> int:
    from attnflows_panel.head_spec import format_heads as format_user_heads
    from attnflows_panel.head_spec import parse_heads as parse_user_heads
    from attnflows_panel.index import SignatureIndex

    if args.a is not None and args.b is None:
        raise ValueError("--a needs --b (the second sentence of the pair)")
    if args.b is not None and args.a is None:
        raise ValueError("--b needs --a")
    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    idx = SignatureIndex.open(args.index)
    heads = parse_user_heads(args.heads, idx.num_layers, idx.num_heads)  # 1-based text -> 0-based mask
    if args.weights is not None and args.weights != idx.weights:
        raise ValueError(f"the index at {args.index} counts {idx.weights} edge weights, not {args.weights}: "
                         f"query it with --weights {idx.weights}, or build an index with --weights {args.weights}")
    if args.a is not None:
        fp = idx.manifest.get("fingerprint", {})
        pair = _load_pair(
            args.pretrained or fp.get("pretrained", {}).get("name"),
            args.finetuned or fp.get("finetuned", {}).get("name"),
            args.device,
        )
        idx.check_pair(pair)
        idx.pair = pair
        result = pair.run(args.a, args.b, weights=idx.weights)
        df = idx.query(result=result, space=args.space, heads=heads, k=args.k, filters=_filters(args))
        query_text = f"new pair (fine-tuned: {result.finetuned.label})"
    else:
        df = idx.query(sample_id=args.id, space=args.space, heads=heads, k=args.k, filters=_filters(args),
                       exclude_self=args.exclude_self)
        query_text = f"sample {args.id!r}"
    if args.json:
        cols = ["rank", "id", "score", "label_name", "pred_fine", "correct_fine", "sentence_a", "sentence_b"]
        for rec in df[cols].to_dict("records"):
            print(json.dumps({k: _plain(v) for k, v in rec.items()}))
        return 0
    shown = format_user_heads(heads) or "all"
    print(f"{len(df)} results for {query_text}, space={args.space}, heads={shown}, τ={idx.tau}")
    if df.empty:
        print("(no sample matches the filters)")
        return 0
    w = max(10, args.width)
    header = f"{'rank':>4}  {'score':>6}  {'id':<16} {'label':<16} {'fine-tuned':<16} {'ok':<3} sentence A | sentence B"
    print(header)
    print("-" * len(header))
    for rec in df.to_dict("records"):
        rec = {k: _plain(v) for k, v in rec.items()}
        ok = rec.get("correct_fine")
        ok_text = "-" if ok is None else ("yes" if ok else "no")
        print(
            f"{rec['rank']:>4}  {rec['score']:>6.3f}  {_short(rec['id'], 16):<16} "
            f"{_short(rec['label_name'] or '-', 16):<16} "
            f"{_short(rec['pred_fine'] or '-', 16):<16} "
            f"{ok_text:<3} {_short(rec['sentence_a'], w)} | {_short(rec['sentence_b'], w)}"
        )
    return 0


def _plain(value):
    """A metadata value as a plain Python value (pandas NA / NaN -> None, numpy scalars -> Python)."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def run_info(args: argparse.Namespace) -> int:
    from attnflows_panel.index import SignatureIndex

    idx = SignatureIndex.open(args.index)
    m = idx.manifest
    fp = m.get("fingerprint", {})
    md = idx.metadata
    from attnflows_panel.app.training import accuracy_split, accuracy_text, training_mask

    # held-out pairs apart from the pairs the fine-tuned model was trained on (attnflows_panel.app.training)
    acc = accuracy_text(accuracy_split(md["correct_fine"], training_mask(idx)))
    lines = [
        f"index      {idx.path}",
        f"samples    {len(idx)} ({m.get('data')}, task {m.get('task')}, split {m.get('split')})",
        f"models     pre-trained {fp.get('pretrained', {}).get('name')}",
        f"           fine-tuned  {fp.get('finetuned', {}).get('name')}",
        f"shape      {idx.num_layers} layers x {idx.num_heads} heads, {m['dims']['total']} dims, τ={idx.tau}, "
        f"{idx.weights} edge weights",
        f"signature  version {m.get('signature_version')}: {m.get('signature')}",
        f"faiss      {m['index']['kind']} {m['index']['factory']!r} {m['index'].get('search') or ''}",
        f"accuracy   {acc or '-'}",
        f"labels     {idx.label_mismatch or 'the fine-tuned model matches the corpus'}",
        f"created    {m.get('created')}",
    ]
    print("\n".join(lines))
    return 0


def _problems(command: str, report: dict, verdict: str) -> bool:
    """Print a verify/upgrade report's findings and its verdict on stderr; whether there were any."""
    if not report["problems"]:
        return False
    for problem in report["problems"]:
        print(f"attnflows index {command}: {problem}", file=sys.stderr)
    print(f"attnflows index {command}: {verdict} ({len(report['problems'])} finding(s)); rebuild it with "
          "`attnflows index build --overwrite`", file=sys.stderr)
    return True


def run_verify(args: argparse.Namespace) -> int:
    from attnflows_panel.index import verify_index

    report = verify_index(args.index)
    if _problems("verify", report, f"{args.index} is damaged"):
        return 1
    print(f"ok: {report['path']} ({report['count']} samples): {len(report['files'])} files match their checksums "
          f"({', '.join(report['files'])}); checked {', '.join(report['checked'])}")
    return 0


def run_upgrade(args: argparse.Namespace) -> int:
    from attnflows_panel.index.verify import upgrade_index

    report = upgrade_index(args.index)
    if _problems("upgrade", report, f"error: {args.index} was not upgraded: its files disagree"):
        return 1
    what = "upgraded: checksums recorded" if report["upgraded"] else "already has checksums; nothing to do"
    print(f"ok: {report['path']} ({report['count']} samples) {what}; checked {', '.join(report['checked'])}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from attnflows_panel.cli import main

    sys.exit(main(["index", *sys.argv[1:]]))
