"""``attnflows causal inspect``: a decoder pair (base vs instruct) at one root token.

::

    attnflows causal inspect --pretrained HuggingFaceTB/SmolLM2-135M --finetuned HuggingFaceTB/SmolLM2-135M-Instruct \\
        --chat '[{"role": "user", "content": "What is the capital of France?"}]' --out france.json
    attnflows causal inspect --pretrained gpt2 --finetuned ./my-gpt2 --text "The cat sat on the" --generate 5 --root -1

Prints each model's next-token top 5 at the root (by default the prompt's last token, whose state predicts
the next token) and the KL divergence between the two there, then the sizes of the two Attention Graphs;
``--out`` writes the graphs as JSON (:func:`attnflows_panel.causal_view.analysis_dict`). The models run with
SDPA; only the attention rows the graphs need are computed (:mod:`attnflows_panel.causal`).

``attnflows causal heads``: which heads instruction tuning changed, over a JSONL file of prompts or chats
(:mod:`attnflows_panel.causal_heads`): per layer the mean cosine and JSD between the two models' attention
maps and the change of head usage in the Attention Graph from each prompt's last token, as ``attnflows
heads report`` prints it for encoder pairs::

    attnflows causal heads --pretrained HuggingFaceTB/SmolLM2-135M --finetuned HuggingFaceTB/SmolLM2-135M-Instruct \
        --data prompts.jsonl --chat-column messages --json heads.json
"""

from __future__ import annotations

import argparse
import sys

from attnflows_panel.cli.finetune import _positive_int, finite_float


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "causal", help="decoder language models: a base and a fine-tuned (instruct) model at a root token",
        description="Compare a causal LM pair (base vs instruct) at one token: predictions and Attention Graphs.")
    sub = p.add_subparsers(dest="causal_command", metavar="ACTION")
    sub.required = True
    r = sub.add_parser(
        "inspect", help="print both models' next-token predictions at the root and write the Attention Graphs",
        description="Run both models over a text or a chat; print the next-token top 5 of each at the root and the "
                    "KL divergence between them; with --out write both Attention Graphs as JSON.")
    r.add_argument("--pretrained", required=True, help="the base model: hub name or folder")
    r.add_argument("--finetuned", required=True, help="the fine-tuned (instruct) model: hub name or folder")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="one text (the prompt)")
    src.add_argument("--chat", metavar="JSON", help='a chat: a JSON list of {"role", "content"} messages, or a file '
                                                   "holding one (through the tokenizer's chat template)")
    r.add_argument("--continuation", default=None, help="text appended after the prompt (segment 'continuation')")
    r.add_argument("--generate", type=_positive_int, default=None, metavar="N",
                   help="let the fine-tuned model continue the prompt greedily by N tokens, analysed together")
    r.add_argument("--root", type=int, default=None,
                   help="the root token's index (negative: from the end); default: the prompt's last token")
    r.add_argument("--tau", type=finite_float, default=0.1, help="the threshold τ of the graph (default 0.1)")
    r.add_argument("--top", type=_positive_int, default=5, help="how many next tokens to print (default 5)")
    r.add_argument("--out", default=None, metavar="FILE.json", help="write both graphs as JSON here")
    r.set_defaults(func=run_inspect)

    h = sub.add_parser(
        "heads", help="which heads instruction tuning changed, over a JSONL file of prompts or chats",
        description="Per-head change between the two models over the prompts of a JSONL file: cosine and JSD of "
                    "their attention maps, and the head usage of the Attention Graph from each prompt's last token.")
    _prompt_file_args(h)
    h.add_argument("--top", type=_positive_int, default=5, help="heads listed as most changed (default 5)")
    h.add_argument("--ablate", action="store_true",
                   help="also switch each head of the fine-tuned model off in turn and report how much its next-token "
                        "loss on the continuation rises (texts need --continuation-column; a chat's continuation is "
                        "its last message, the assistant's)")
    h.add_argument("--continuation-column", default=None,
                   help="the column holding each text prompt's continuation (for --ablate)")
    h.add_argument("--batch-size", type=_positive_int, default=8,
                   help="copies of a prompt per forward pass in --ablate, each with another head off (default 8)")
    h.add_argument("--json", default=None, metavar="OUT", help="write the report as JSON to OUT ('-' = stdout)")
    h.add_argument("--no-progress", action="store_true", help="no progress bar")
    h.set_defaults(func=run_heads)

    x = sub.add_parser(
        "index", help="index the prompts of a JSONL file by the two models' head usage (search with `index query`)",
        description="Build a signature index over prompts or chats: each prompt's signature is the head usage of both "
                    "models' Attention Graphs from its last token; `attnflows index query/info/verify` read it.")
    _prompt_file_args(x)
    x.add_argument("--out", required=True, metavar="DIR", help="the index folder (absent or empty, or --overwrite)")
    x.add_argument("--overwrite", action="store_true", help="replace the index in --out (built beside it first)")
    x.add_argument("--no-progress", action="store_true", help="no progress bar")
    x.set_defaults(func=run_index)


def _prompt_file_args(p: argparse.ArgumentParser) -> None:
    """The options of the commands that read a JSONL file of prompts: the pair, the file, its column, τ."""
    p.add_argument("--pretrained", required=True, help="the base model: hub name or folder")
    p.add_argument("--finetuned", required=True, help="the fine-tuned (instruct) model: hub name or folder")
    p.add_argument("--data", required=True, metavar="FILE.jsonl", help="one JSON object per line, one prompt each")
    col = p.add_mutually_exclusive_group()
    col.add_argument("--text-column", default="text", help="the column holding each prompt's text (default text)")
    col.add_argument("--chat-column", default=None,
                     help='the column holding each chat: a list of {"role", "content"} messages (chat template)')
    p.add_argument("--limit", type=_positive_int, default=None, help="use at most this many prompts")
    p.add_argument("--tau", type=finite_float, default=0.1, help="the threshold τ of the graphs (default 0.1)")


def run_inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from attnflows_panel._io import atomic_write_json, check_writable
    from attnflows_panel.causal import CausalInputError, CausalPair
    from attnflows_panel.causal_view import analysis_dict

    if not 0.0 <= args.tau < 1.0:
        raise CausalInputError(f"--tau must lie in [0, 1); got {args.tau}")
    if args.out is not None:
        check_writable(Path(args.out).expanduser().absolute().parent, "--out")
    pair = CausalPair.load(args.pretrained, args.finetuned)
    enc = pair.encode(text=args.text, chat=args.chat, continuation=args.continuation)
    if args.generate:
        enc = pair.generate(enc, args.generate)
    ana = pair.analyse(enc, root=args.root, tau_min=args.tau, top=args.top)
    out = sys.stdout
    print(f"{enc.n} tokens; segments: " + ", ".join(f"{s} {a}-{b - 1}" for s, a, b in enc.segments), file=out)
    root_text = pair.tokenizer.decode([enc.ids[ana.root]])
    print(f"root: token {ana.root} {root_text!r} (its state predicts the next token)", file=out)
    for which, name, pred in (("pretrained", pair.names[0], ana.pretrained),
                              ("finetuned", pair.names[1], ana.finetuned)):
        shown = "  ".join(f"{pair.tokenizer.decode([i])!r} {p:.3f}" for _, i, p in pred.top)
        print(f"{which} ({name}): {shown}", file=out)
    print(f"KL(finetuned || pretrained) = {ana.kl:.4f} nats; KL(pretrained || finetuned) = {ana.kl_reverse:.4f}",
          file=out)
    for which in ("pretrained", "finetuned"):
        g = ana.graph(which, args.tau)
        print(f"{which} graph at tau={args.tau}: level sizes {[len(lv) for lv in g.levels]}, "
              f"{g.edge_count()} edges", file=out)
    if args.out is not None:
        atomic_write_json(args.out, analysis_dict(enc, ana, args.tau, names=pair.names))
        print(f"wrote {args.out}", file=out)
    return 0



def build_heads_report(args: argparse.Namespace) -> dict:
    """The report of ``attnflows causal heads`` as a dict (what --json writes)."""
    import numpy as np

    from attnflows_panel._io import quiet_transformers
    from attnflows_panel.causal import CausalInputError, CausalPair
    from attnflows_panel.causal_heads import (
        check_ablation_prompts,
        corpus_change,
        head_ablation,
        loss_input,
        read_prompts,
    )

    if not 0.0 <= args.tau < 1.0:
        raise CausalInputError(f"--tau must lie in [0, 1); got {args.tau}")
    if args.continuation_column and args.chat_column:
        raise CausalInputError("--continuation-column goes with text prompts; a chat's continuation is its last "
                               "message")
    prompts = read_prompts(args.data, text_column=args.text_column, chat_column=args.chat_column, limit=args.limit,
                           continuation_column=args.continuation_column if args.ablate else None)
    if args.ablate:
        check_ablation_prompts(prompts)  # before any model loads
    with quiet_transformers(bars=not args.no_progress):
        pair = CausalPair.load(args.pretrained, args.finetuned)
    if args.ablate:
        for p in prompts:  # every chat's answer found by the template before the first forward pass
            loss_input(pair, p)
    change = corpus_change(pair, prompts, args.tau, progress=not args.no_progress)
    report = change.summary().to_dict()
    report["weights"] = "raw"
    mean_usage = change.usage.astype(np.float64).mean(axis=0)
    report["usage"] = {role: [[float(x) for x in row] for row in mean_usage[r]]
                       for r, role in enumerate(("pretrained", "finetuned"))}
    report["root"] = "each prompt's last token"
    report["kl_finetuned_pretrained"] = {"mean": float(change.kl.mean()), "per_prompt": [float(x) for x in change.kl]}
    report["tokens"] = [int(x) for x in change.lengths]
    report["source"] = {"data": str(args.data), "column": args.chat_column or args.text_column,
                        "kind": "chat" if args.chat_column else "text", "limit": args.limit, "tau": args.tau}
    report["models"] = {"pretrained": pair.names[0], "finetuned": pair.names[1]}
    if args.ablate:
        abl = head_ablation(pair, prompts, batch_size=args.batch_size, progress=not args.no_progress)
        report["ablation"] = {
            "what": "the fine-tuned model's mean next-token loss (nats per token) on each prompt's continuation, "
                    "with one head's output zeroed before the output projection, minus the loss of the whole model",
            "base_loss": {"mean": float(abl.base_loss.mean()), "per_prompt": [float(x) for x in abl.base_loss]},
            "loss_delta": [[float(x) for x in row] for row in abl.delta],
        }
    return report


def format_ablation(report: dict, top: int = 5) -> str:
    """The ablation lines of ``attnflows causal heads --ablate`` (layers and heads counted from 1, as the table)."""
    import numpy as np

    abl = report["ablation"]
    delta = np.asarray(abl["loss_delta"])
    H = delta.shape[1]
    order = np.argsort(-delta.ravel(), kind="stable")[:top]
    items = ", ".join(f"{i // H + 1}:{i % H + 1} ({delta.ravel()[i]:+.4f})" for i in order)
    layers = "  ".join(f"{k + 1}: {row.max():+.4f}" for k, row in enumerate(delta))
    return (f"ablation: base next-token loss {abl['base_loss']['mean']:.4f} nats/token on the continuations; "
            f"switching one head off raises it most for: {items}\n"
            f"largest rise per layer: {layers}")


def run_heads(args: argparse.Namespace) -> int:
    from pathlib import Path

    from attnflows_panel._io import check_writable
    from attnflows_panel.cli.heads import format_report, write_json_report

    if args.json not in (None, "-"):
        check_writable(Path(args.json).expanduser().absolute().parent, "--json")
    report = build_heads_report(args)
    if args.json != "-":
        print(format_report(report, args.top))
        if "ablation" in report:
            print(format_ablation(report, args.top))
        kl = report["kl_finetuned_pretrained"]["mean"]
        print(f"root: each prompt's last token; mean KL(finetuned || pretrained) of the next token there {kl:.4f} "
              "nats")
    if args.json:
        write_json_report(report, args.json)
    return 0


def run_index(args: argparse.Namespace) -> int:
    from pathlib import Path

    from attnflows_panel._io import check_writable, quiet_transformers
    from attnflows_panel.causal import CausalInputError, CausalPair
    from attnflows_panel.causal_heads import read_prompts
    from attnflows_panel.index.build_causal import build_causal_index

    if not 0.0 <= args.tau < 1.0:
        raise CausalInputError(f"--tau must lie in [0, 1); got {args.tau}")
    check_writable(Path(args.out).expanduser().absolute(), "--out")
    prompts = read_prompts(args.data, text_column=args.text_column, chat_column=args.chat_column, limit=args.limit)
    with quiet_transformers(bars=not args.no_progress):
        pair = CausalPair.load(args.pretrained, args.finetuned)
    out = build_causal_index(pair, prompts, args.out, tau=args.tau, data=str(args.data), overwrite=args.overwrite,
                             progress=not args.no_progress)
    print(f"indexed {len(prompts)} prompts into {out} (τ={args.tau}; query with `attnflows index query --index {out} "
          "--id ID`)")
    return 0
