"""The batching both build engines share: tokenise a shard once, cut it into length buckets, run a bucket.

A shard's pairs are tokenised once (:func:`encode_shard`), cut into batches of similar token length
(:func:`buckets_by_length`: each batch padded only to its longest pair, and on the CPU within
:data:`DEFAULT_MAX_TOKENS` tokens) and run through :meth:`ModelPair.usage_batch` (:func:`compute_batch`),
which counts the signatures on the attention tensors where the models computed them. The local engine
(:mod:`attnflows_panel.index.build`) and the Ray Data engine (:mod:`attnflows_panel.index.build_ray`)
call the same functions, so they cut the same batches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from attnflows_panel import signatures

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "result_usage",
    "compute_batch",
    "encode_shard",
    "buckets_by_length",
    "resolve_max_tokens",
    "length_buckets",
]

#: The CPU's token budget of one forward batch (:func:`buckets_by_length`): pairs x longest pair at most
#: this many tokens, so a batch of long pairs is cut smaller. A layer's attention weights grow with
#: batch x tokens², and once they outgrow the CPU's cache every pass over them (softmax, the weighted
#: sum, the signatures, the head change) waits on memory: on RTE dev (median 53 tokens, up to 253) the
#: two MiniLM forward passes alone take 5.1-5.2 s in batches of 32 within 2,048 tokens against 6.2-6.3 s
#: in plain batches of 32 (2 cores; benchmarks/HISTORY.md, P2), and on MRPC dev (up to 86 tokens) they are
#: the same. GPUs want full batches: there the default is no budget (:func:`resolve_max_tokens`).
DEFAULT_MAX_TOKENS = 2048


def result_usage(result: Any, tau: float) -> np.ndarray:
    """A PairResult's stored usage float32 [2, L, H] (u_pre, u_fine) at threshold τ, root [CLS]."""
    root = int(getattr(result, "cls_position", 0))
    return np.stack(
        [
            signatures.usage_from_attentions(result.pretrained.attentions, tau, root=root),
            signatures.usage_from_attentions(result.finetuned.attentions, tau, root=root),
        ]
    )


def compute_batch(pair: Any, pairs: Sequence[tuple[str, str]], tau: float, batch_size: int,
                  ids: Sequence[str] | None = None, encoded: Sequence[tuple] | None = None,
                  weights: str = "raw") -> dict[str, Any]:
    """Run one length bucket through both models and keep what the index stores: ``usage`` float32
    [m, 2, L, H], and per sample ``pred_pre``, ``pred_fine``, ``prob_fine``, ``n_tokens``, ``truncated``
    (:meth:`attnflows_panel.models.ModelPair.usage_batch`: the usage is counted on the attention tensors
    where the models computed them, so no attention matrix is copied out, which matters most on a GPU).
    ``encoded``: the bucket's pairs as :func:`encode_shard` tokenised them (None = tokenise here).
    ``weights``: the edge weights counted (``raw`` attention or ``norm``, :mod:`attnflows_panel.weights`).
    The one step both engines run (locally, or in a Ray worker: :mod:`attnflows_panel.index.build_ray`)."""
    try:
        kwargs = {} if encoded is None else {"encoded": encoded}
        return pair.usage_batch(list(pairs), tau, batch_size=batch_size, head_change=True, weights=weights,
                                **kwargs)
    except (ValueError, TypeError) as exc:  # e.g. an empty sentence: say which samples
        raise _naming_samples(exc, ids if ids is not None else range(len(pairs))) from exc


def _naming_samples(exc: Exception, ids: Iterable[Any]) -> Exception:
    batch_ids = [str(x) for x in ids]
    return type(exc)(f"cannot run the batch with samples {batch_ids[:8]}{' …' if len(batch_ids) > 8 else ''}: {exc}")


def encode_shard(pair: Any, pairs: Sequence[tuple[str, str]], ids: Sequence[Any] | None = None) -> list[tuple]:
    """A shard's pairs tokenised once (:meth:`attnflows_panel.models.ModelPair.encode_pairs`): their
    lengths cut the length buckets (:func:`buckets_by_length`) and the same token ids run through the
    models (:func:`compute_batch`'s ``encoded``). A pair that cannot run (an empty sentence) raises
    the error naming its sample id."""
    try:
        return pair.encode_pairs(list(pairs))
    except (ValueError, TypeError) as exc:
        m = re.match(r"pair (\d+): ", str(exc))
        which = [ids[int(m.group(1))]] if (m and ids is not None) else (ids if ids is not None else range(len(pairs)))
        raise _naming_samples(exc, which) from exc


def buckets_by_length(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Positions cut into batches of similar token length: a stable sort by ``lengths`` (token counts,
    truncation included), then ``batch_size`` at a time. Each batch is padded only to its longest pair.
    On MRPC dev at batch 32 this pads 4% of the tokens, against 22% when sorting by characters and 31%
    unsorted. With ``max_tokens``, a batch also holds at most that many padded tokens (pairs x its
    longest pair; a single pair longer than that runs alone): long pairs run in smaller batches
    (:data:`DEFAULT_MAX_TOKENS`)."""
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError(f"max_tokens must be a positive int or None, got {max_tokens!r}")
    if not len(lengths):
        return []
    sizes = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(sizes, kind="stable")
    if max_tokens is None:
        return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    out, start = [], 0
    for end in range(1, len(order) + 1):
        # order is ascending, so the pair at `end` would be the batch's longest
        if end == len(order) or end - start >= batch_size or (end - start + 1) * int(sizes[order[end]]) > max_tokens:
            out.append(order[start:end])
            start = end
    return out


def resolve_max_tokens(max_tokens: int | None, device: Any) -> int | None:
    """The token budget a build uses: ``None`` = the default for ``device`` (:data:`DEFAULT_MAX_TOKENS`
    on the CPU, no budget elsewhere), ``0`` = no budget, else the positive int given."""
    if max_tokens is None:
        return DEFAULT_MAX_TOKENS if str(device or "cpu").startswith("cpu") else None
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise ValueError(f"max_tokens must be a positive int, 0 (no budget) or None (the device's default), "
                         f"got {max_tokens!r}")
    return max_tokens or None


def length_buckets(tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int, batch_size: int,
                   max_tokens: int | None = None) -> list[np.ndarray]:
    """The positions of ``pairs`` cut into batches of similar token length (:func:`buckets_by_length` on
    the pairs' token counts after ``longest_first`` truncation to ``max_length``, within ``max_tokens``
    padded tokens per batch when given). The builds tokenise once instead (:func:`encode_shard`) and cut
    the same buckets from those lengths."""
    if not len(pairs):
        return []
    enc = tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation="longest_first", max_length=max_length)
    return buckets_by_length([len(x) for x in enc["input_ids"]], batch_size, max_tokens)
