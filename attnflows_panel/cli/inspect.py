"""``attnflows inspect``: one sentence pair's edge weights, bottlenecks and rollout, as an .npz to script with.

::

    attnflows inspect --a "The cat sat." --b "A cat was sitting." --weights norm --out pair.npz
    attnflows inspect --pretrained bert-base-uncased --finetuned textattack/bert-base-uncased-MRPC \\
        --a "..." --b "..." --weights attattr --tau 0.3 --out pair.npz

The file holds, for each model (keys ``pretrained/...`` and ``finetuned/...``; 0-based HF layer order):

- ``weights``: float32 [L, H, n, n], the edge weights (:mod:`attnflows_panel.weights`);
- ``kind``: the kind of ``weights`` (``attattr`` of a bare pre-trained encoder is unavailable: its ``norm``
  weights, or ``--fallback``'s, are written instead and ``note`` says so);
- ``bottleneck``: [L + 1, n], the largest τ at which each node is in the Attention Graph (∞ for the root,
  0 for a node in the graph at no τ; :mod:`attnflows_panel.bottleneck`);
- ``breakpoints``: the values of τ at which the graph's levels change;
- ``rollout``: float64 [L + 1, n], attention rollout of ``weights`` from the root down;
- ``tokens``; ``logits`` (a model with a classification head); with ``--tau``, ``member``: bool [L + 1, n],
  the graph's levels at τ;

plus ``tokens``, ``weights_kind`` (the kind asked for), ``steps``, ``heads`` (bool [L, H], the heads allowed to
carry edges: ``--heads``, default all) and, with ``--tau``, ``tau``.
Read it with ``np.load(path)`` (no pickle needed).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from attnflows_panel.cli.finetune import _positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="write one pair's edge weights (raw, norm, attattr), bottlenecks and rollout to an .npz",
        description="Run one sentence pair through both models and write, per model, the edge weights "
                    "[L,H,n,n], each node's bottleneck (the largest τ at which it is in the Attention Graph) "
                    "and the attention rollout, as an .npz file.",
    )
    p.add_argument("--pretrained", default=None,
                   help="pre-trained model: hub name or folder (default: packaged MiniLM)")
    p.add_argument("--finetuned", default=None,
                   help="fine-tuned model: hub name or folder (default: the cached fine-tune)")
    p.add_argument("--a", required=True, metavar="TEXT", help="sentence A")
    p.add_argument("--b", required=True, metavar="TEXT", help="sentence B")
    p.add_argument("--weights", default="raw", choices=("raw", "norm", "attattr"),
                   help="edge weights: raw attention, norm (Kobayashi et al. 2020), attattr (Hao et al. 2021) "
                        "(default raw)")
    p.add_argument("--fallback", default="norm", choices=("raw", "norm"),
                   help="weights written for a model without a classification head when --weights attattr "
                        "(default norm)")
    p.add_argument("--steps", type=_positive_int, default=20, help="attattr: Riemann steps m (default 20)")
    p.add_argument("--tau", type=float, default=None, help="also write the graph's levels at this τ in [0, 1)")
    p.add_argument("--heads", default=None, metavar="SPEC",
                   help='only these heads carry edges ("layer:head,..." counted from 1 as in the app, e.g. "1:2,4:6", '
                        '"6:*" or "2-3:1-6"; default all): bottleneck, breakpoints and member are computed with them')
    p.add_argument("--out", required=True, metavar="FILE.npz", help="the .npz file to write")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.set_defaults(func=run_inspect)


def _check_args(args: argparse.Namespace) -> Path:
    """Every check that needs no model, before any model loads. Returns the output path."""
    from attnflows_panel._io import check_writable

    for name in ("a", "b"):
        if not args.__dict__[name].strip():
            raise ValueError(f"--{name} is empty; both sentences of a pair need text")
    if args.tau is not None and not (math.isfinite(args.tau) and 0.0 <= args.tau < 1.0):
        raise ValueError(f"--tau must lie in [0, 1); got {args.tau}")
    if args.heads is not None:
        from attnflows_panel.head_spec import parse_heads

        parse_heads(args.heads, 1024, 1024)  # the syntax, before any model loads (the range after)
    out = Path(args.out).expanduser()
    if out.suffix.lower() != ".npz":
        raise ValueError(f"--out must name an .npz file; got {str(out)!r}")
    if out.is_dir():
        raise IsADirectoryError(21, f"--out {str(out)!r} is a folder; name an .npz file", str(out))
    if not out.parent.is_dir():
        raise FileNotFoundError(2, f"--out: the folder {str(out.parent)!r} does not exist", str(out.parent))
    check_writable(out.parent, "--out")
    return out


def _model_arrays(role: str, mw, tau: float | None, heads: np.ndarray | None) -> dict[str, np.ndarray]:
    from attnflows_panel.bottleneck import bottleneck, breakpoints
    from attnflows_panel.weights import rollout

    b = bottleneck(mw.weights, heads)
    arrays = {
        f"{role}/weights": np.ascontiguousarray(mw.weights, dtype=np.float32),
        f"{role}/kind": np.array(mw.kind),
        f"{role}/bottleneck": b.node,
        f"{role}/breakpoints": breakpoints(b.node),
        f"{role}/rollout": rollout(mw.weights),
    }
    if mw.note:
        arrays[f"{role}/note"] = np.array(mw.note)
    if mw.logits is not None:
        arrays[f"{role}/logits"] = mw.logits
    if tau is not None:
        arrays[f"{role}/member"] = b.member(tau)
    return arrays


def run_inspect(args: argparse.Namespace) -> int:
    import sys

    from attnflows_panel._io import atomic_path
    from attnflows_panel.models import ModelPair
    from attnflows_panel.weights import pair_weights

    out = _check_args(args)
    pair = ModelPair.load(args.pretrained, args.finetuned, device=args.device)
    pw = pair_weights(pair, args.a, args.b, args.weights, steps=args.steps, fallback=args.fallback)
    tokens = np.array(pw.tokens)
    arrays: dict[str, np.ndarray] = {"tokens": tokens, "weights_kind": np.array(pw.kind),
                                     "steps": np.array(args.steps)}
    if args.tau is not None:
        arrays["tau"] = np.array(args.tau)
    heads = None
    if args.heads is not None:
        from attnflows_panel.head_spec import parse_heads

        heads = parse_heads(args.heads, pair.num_layers, pair.num_heads)  # 1-based text, 0-based mask
    arrays["heads"] = np.ones((pair.num_layers, pair.num_heads), bool) if heads is None else heads
    for role in ("pretrained", "finetuned"):
        mw = getattr(pw, role)
        arrays.update(_model_arrays(role, mw, args.tau, heads))
        arrays[f"{role}/tokens"] = tokens
        if mw.note:
            print(f"attnflows inspect: {role}: {mw.note}", file=sys.stderr)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    print(f"wrote {out} ({len(pw.tokens)} tokens, {pw.kind} weights{', truncated' if pw.truncated else ''})")
    return 0
