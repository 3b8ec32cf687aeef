"""Which heads did fine-tuning change? Per-head change between the two models of a pair.

Pure numpy. Attention Flows compares the pre-trained and the fine-tuned model one sentence pair at a
time; this module asks the corpus-level question: over a whole task, which heads of layer k attend
differently after fine-tuning? Three [L, H] measures, for one sample and averaged over a corpus
(layers 0-based in HF order, ``attn[k, h, a, b]`` = weight query ``a`` puts on key ``b``, as everywhere
in the package; see README.md):

``cosine`` (Kovaleva et al. 2019, "Revealing the Dark Secrets of BERT", §4.3)
    the cosine similarity between the two models' flattened attention maps ``A_pre[k, h]`` and
    ``A_fine[k, h]`` of one sample, over its real tokens only (an ``n × n`` map; padding excluded):

        cos[k, h] = <A_pre[k,h], A_fine[k,h]> / (||A_pre[k,h]|| · ||A_fine[k,h]||)      in [0, 1]

    (attention weights are non-negative, so the cosine is too). 1 = the head attends exactly as
    before, in proportion; low = fine-tuning rewired it.

``jsd`` (as in Hao et al. 2020)
    the Jensen–Shannon divergence, base 2 (so in [0, 1]), between the two models' attention rows of
    each real query token ``a``, averaged over the ``n`` query tokens:

        JSD(P ‖ Q) = ½ KL(P ‖ M) + ½ KL(Q ‖ M),  M = ½ (P + Q),  logarithms base 2, 0·log 0 = 0
        jsd[k, h]  = (1/n) Σ_a JSD(A_pre[k,h,a,:] ‖ A_fine[k,h,a,:])

``usage_change``
    the mean ``|u_fine − u_pre|`` of the head usage the signature index stores
    (:mod:`attnflows_panel.signatures`: the share of layer k's Attention Graph edges carried by head h,
    at threshold τ).

Corpus values are plain means over samples (every sample weighs the same, whatever its length).

Every measure takes any edge weights of :mod:`attnflows_panel.weights` in place of the attention (rows that
sum to 1, or 0): ``norm`` (Kobayashi et al. 2020) or ``attattr`` (Hao et al. 2021) ask whether fine-tuning
changed what a head's tokens *contribute*, or what the prediction depends on, rather than where it looks
(``attnflows heads report --weights``). An all-zero ``attattr`` row (no positive attribution) enters as it
is: its JSD is 0 against another all-zero row and ½ against any distribution (its ``M`` is half the other).

Storage in an index (``head_change.npy``, see index/README.md): per sample, cosine and JSD as 8 bits
each, ``[N, 2, L, H]`` uint8 (288 bytes per sample at BERT-base size, 12 × 12). The codes are
square-root encoded, so that the values near 0 change and near 1 similarity that matter most keep
their precision:

    code_cos = round(255 · sqrt(1 − cos)),     cos = 1 − (code / 255)²
    code_jsd = round(255 · sqrt(jsd)),         jsd = (code / 255)²       (sqrt(jsd): the JS distance)

The decoding error of one value is at most ``(2·s + 1/510) / 510`` for ``s = sqrt(1 − cos)`` resp.
``sqrt(jsd)``: 1.7e-4 at cos = 0.998, 2.0e-3 at jsd = 0.25, 3.9e-3 at worst.

```python
from attnflows_panel import heads
r = pair.run("The cat sat.", "A cat was sitting.")
cos, jsd = heads.sample_change(r.pretrained.attentions, r.finetuned.attentions)   # [L, H] each
acc = heads.HeadChangeAccumulator(L, H)
for r in results:
    acc.add(r.pretrained.attentions, r.finetuned.attentions, usage=index.result_usage(r, tau), sample_id=i)
summary = acc.summary()          # HeadChange(cosine, jsd, usage_change, n_samples, sample_ids)
```
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "METRICS",
    "METRIC_LABELS",
    "HeadChange",
    "HeadChangeAccumulator",
    "cosine",
    "jsd",
    "sample_change",
    "batch_change",
    "usage_change",
    "aggregate",
    "encode",
    "decode",
    "most_changed",
    "layer_means",
]

#: the three change measures, in the order of the JSON report and the head panel
METRICS = ("cosine", "jsd", "usage_change")
#: readable names of the measures
METRIC_LABELS = {
    "cosine": "cosine similarity (1 = unchanged)",
    "jsd": "Jensen–Shannon divergence (0 = unchanged)",
    "usage_change": "mean |u_fine − u_pre| (head usage)",
}
_SCALE = 255.0


def _pair_arrays(pre: Any, fine: Any, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    pre = np.asarray(pre)
    fine = np.asarray(fine)
    if pre.ndim != 4 or pre.shape[2] != pre.shape[3]:
        raise ValueError(f"attentions must be [L, H, n, n], got shape {pre.shape}")
    if pre.shape != fine.shape:
        raise ValueError(f"the two models' attentions differ in shape: {pre.shape} vs {fine.shape}")
    if n is not None:
        n = int(n)
        if not 1 <= n <= pre.shape[2]:
            raise ValueError(f"n (real tokens) must be in 1..{pre.shape[2]}, got {n}")
        pre, fine = pre[:, :, :n, :n], fine[:, :, :n, :n]
    if pre.shape[2] == 0:
        raise ValueError("attentions over 0 tokens: nothing to compare")
    return (np.ascontiguousarray(pre, dtype=np.float32), np.ascontiguousarray(fine, dtype=np.float32))


_TINY = np.float32(1e-30)


def _change(p: np.ndarray, q: np.ndarray, want_cos: bool = True, want_jsd: bool = True):
    """The work of :func:`sample_change` on float32 [L, H, n, n] arrays: float64 [L, H] results.

    Products and logarithms run in float32 (the attentions' own precision), sums in float64; the
    results agree with a float64 computation to about 1e-6 (the tests check it against Python loops).
    JSD per element is ``½ p (log2 p − log2 m) + ½ q (log2 q − log2 m)`` with ``0 · log 0 = 0``
    (``x · log2(max(x, 1e-30))`` is exactly 0 at x = 0).
    """
    L, H, n, _ = p.shape
    p2, q2 = p.reshape(L * H, n * n), q.reshape(L * H, n * n)
    cos = js = None
    if want_cos:
        dot = np.einsum("ij,ij->i", p2, q2).astype(np.float64)
        norm = np.sqrt(np.einsum("ij,ij->i", p2, p2).astype(np.float64) * np.einsum("ij,ij->i", q2, q2))
        cos = np.clip(np.divide(dot, norm, out=np.zeros_like(dot), where=norm > 0), 0.0, 1.0).reshape(L, H)
    if want_jsd:
        m = p2 + q2
        m *= 0.5
        lm = np.log2(np.maximum(m, _TINY))
        lp = np.log2(np.maximum(p2, _TINY))
        lp -= lm
        lp *= p2
        lq = np.log2(np.maximum(q2, _TINY), out=m)  # reuse m's memory
        lq -= lm
        lq *= q2
        lp += lq
        js = np.clip(0.5 * lp.reshape(L, H, n, n).sum(axis=-1, dtype=np.float64).mean(axis=-1), 0.0, 1.0)
    return cos, js


def cosine(pre: Any, fine: Any, n: int | None = None) -> np.ndarray:
    """Kovaleva's per-head cosine of one sample: float64 [L, H] in [0, 1].

    pre, fine: the two models' attentions ``[L, H, n, n]`` (a sample's real tokens; with ``n`` given,
    only the first ``n`` tokens of padded arrays are used). A head whose map is all zeros in either
    model (impossible for softmax attention) gets cosine 0.
    """
    return _change(*_pair_arrays(pre, fine, n), want_jsd=False)[0]


def jsd(pre: Any, fine: Any, n: int | None = None) -> np.ndarray:
    """Per-head Jensen–Shannon divergence (base 2) of one sample: float64 [L, H] in [0, 1], the mean
    over the real query tokens of JSD between the two models' attention rows.

    Computed as ``½ KL(P‖M) + ½ KL(Q‖M)`` element by element. Rows are used as given (softmax rows
    sum to 1).
    """
    return _change(*_pair_arrays(pre, fine, n), want_cos=False)[1]


def sample_change(pre: Any, fine: Any, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(cosine, jsd) of one sample, each float32 [L, H] (one pass over the two attention arrays)."""
    cos, js = _change(*_pair_arrays(pre, fine, n))
    return cos.astype(np.float32), js.astype(np.float32)


def batch_change(pre: Any, fine: Any, lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(cosine, jsd) float32 [B, L, H] of a padded batch ``[B, L, H, N, N]``; sample i uses its first
    ``lengths[i]`` tokens (queries and keys), so padding never enters."""
    pre, fine = np.asarray(pre), np.asarray(fine)
    if pre.ndim != 5 or pre.shape != fine.shape:
        raise ValueError(f"expected two batches [B, L, H, N, N] of one shape, got {pre.shape} and {fine.shape}")
    if len(lengths) != pre.shape[0]:
        raise ValueError(f"{len(lengths)} lengths for a batch of {pre.shape[0]}")
    B, L, H = pre.shape[:3]
    cos = np.empty((B, L, H), dtype=np.float32)
    js = np.empty((B, L, H), dtype=np.float32)
    for i, m in enumerate(lengths):
        cos[i], js[i] = sample_change(pre[i], fine[i], n=int(m))
    return cos, js



_LN2 = 0.6931471805599453


def change_from_attention_tensors(pre: Sequence[Any], fine: Sequence[Any], lengths: Sequence[int],
                                  encode_codes: bool = True, threads: int | None = None) -> Any:
    """Per-sample head change of a padded batch, straight from both models' HF attention tensors
    (sequences of L torch tensors ``[B, H, N, N]``, on their device; the index build's fast path,
    index/README.md): uint8 codes ``[B, 2, L, H]`` as :func:`encode` writes them, or with
    ``encode_codes=False`` the float64 ``(cosine, jsd)`` arrays ``[B, L, H]`` before encoding.

    The same quantities as :func:`sample_change` on each sample's real tokens (``lengths[i]`` queries
    and keys), computed in another order: per attention row, in float32, the three dot products
    ``p·q``, ``p·p``, ``q·q`` and the three sums ``Σ x ln x`` of ``p``, ``q`` and ``s = p + q``, and
    ``Σ s``; then, in float64 over the real query rows only,

        cos = Σ p·q / sqrt(Σ p·p · Σ q·q),
        JSD(row) = ½ Σ p log2 p + ½ Σ q log2 q − Σ m log2 m  with  Σ m log2 m = ½ Σ s log2 s − ½ Σ s

    (``m = s / 2``; ``0 · log 0 = 0``). So each layer costs three logarithms and a few multiply-adds per
    weight and no float64 pass over the ``[B, H, N, N]`` weights; the results agree with
    :func:`sample_change` to about 1e-6 (the tests check it, and that the 8-bit codes differ by at most
    one step, rarely). Padded keys need no mask: softmax gives them exactly zero weight (their additive
    mask is the dtype's minimum), so they add nothing to any sum; padded query rows are left out of the
    float64 sums. Only the per-row sums (``[B, L, H, N]`` each) leave the device.

    On the CPU the per-row sums are fused numpy reductions (``vecdot``, or ``einsum`` before numpy 2:
    no product tensor is written, unlike torch's ``vecdot``; numpy's vectorised ``log``), over a few samples at a
    time so that the passes over one chunk stay in the core's cache, and the samples are split over
    ``threads`` threads (default ``torch.get_num_threads()``; numpy releases the GIL): on the index
    build's 2-core CPU reference this is 1.5x (1 thread) to 4x (2 threads, a loaded machine) faster than
    the torch ops it replaces (benchmarks/README.md, P2). Elsewhere (CUDA) the same sums are torch
    ops on the device."""

    if len(pre) != len(fine) or not len(pre):
        raise ValueError(f"expected the same number of layers from both models, got {len(pre)} and {len(fine)}")
    B, H, N, _ = pre[0].shape
    if len(lengths) != B:
        raise ValueError(f"{len(lengths)} lengths for a batch of {B}")
    n = np.asarray([int(x) for x in lengths], dtype=np.int64)
    if (n < 1).any() or (n > N).any():
        raise ValueError(f"lengths must be in [1, {N}], got {list(lengths)}")
    for p, q in zip(pre, fine, strict=True):
        if p.shape != q.shape:
            raise ValueError(f"attention shapes differ between the models: {tuple(p.shape)} vs {tuple(q.shape)}")
    # float32 [7, B, L, H, N]
    stats = _row_stats_numpy(pre, fine, threads) if pre[0].device.type == "cpu" else _row_stats_torch(pre, fine)
    real = (np.arange(N)[None, :] < n[:, None]).astype(np.float64)[:, None, None, :]  # [B, 1, 1, N]
    dot, pp, qq, ep, eq, es, s_sum = (x.astype(np.float64) for x in stats)
    # float64 from here on, real query rows only
    d = (dot * real).sum(axis=-1)  # [B, L, H]
    norm = np.sqrt((pp * real).sum(axis=-1) * (qq * real).sum(axis=-1))
    cos = np.divide(d, norm, out=np.zeros_like(d), where=norm > 0)
    rows = (0.5 / _LN2) * (ep + eq - es) + 0.5 * s_sum
    js = (rows * real).sum(axis=-1) / n[:, None, None]
    cos, js = np.clip(cos, 0.0, 1.0), np.clip(js, 0.0, 1.0)
    return encode(cos, js) if encode_codes else (cos, js)


#: per-row sums of :func:`change_from_attention_tensors`, in this order
_ROW_STATS = ("p.q", "p.p", "q.q", "p ln p", "q ln q", "s ln s", "sum s")
#: bytes of one chunk's attention weights (a few samples, all heads): the chunk's passes stay in cache
_CHUNK_BYTES = 1 << 19
_POOLS: dict[int, Any] = {}


def _pool(threads: int):
    """A process-wide thread pool of ``threads`` workers (created once per size)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = _POOLS.get(threads)
    if pool is None:
        pool = _POOLS.setdefault(threads, ThreadPoolExecutor(threads, thread_name_prefix="attnflows-heads"))
    return pool


def _vecdot_einsum(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.einsum("...j,...j->...", a, b, out=out)


#: Σ_j a_j b_j along the last axis without a product array: numpy 2's ``vecdot`` (about 20 % faster
#: than ``einsum`` on attention rows), else ``einsum``
_vecdot = getattr(np, "vecdot", None) or _vecdot_einsum


def _row_stats_numpy(pre: Sequence[Any], fine: Sequence[Any], threads: int | None) -> np.ndarray:
    """float32 ``[7, B, L, H, N]`` (:data:`_ROW_STATS`) of CPU torch tensors, with numpy (see
    :func:`change_from_attention_tensors`)."""
    import torch

    L = len(pre)
    B, H, N, _ = pre[0].shape
    P = [np.ascontiguousarray(x.detach().to(torch.float32).numpy()) for x in pre]
    Q = [np.ascontiguousarray(x.detach().to(torch.float32).numpy()) for x in fine]
    stats = np.empty((len(_ROW_STATS), B, L, H, N), dtype=np.float32)
    tiny = np.float32(1e-30)
    chunk = max(1, _CHUNK_BYTES // (H * N * N * 4))

    def work(lo: int, hi: int) -> None:
        sbuf = np.empty((min(chunk, hi - lo), H, N, N), dtype=np.float32)
        lbuf = np.empty_like(sbuf)
        out = np.empty((len(_ROW_STATS), min(chunk, hi - lo), H, N), dtype=np.float32)
        for k in range(L):
            for c in range(lo, hi, chunk):
                c2 = min(hi, c + chunk)
                b = c2 - c
                p, q, o = P[k][c:c2], Q[k][c:c2], out[:, :b]
                _vecdot(p, q, out=o[0])
                _vecdot(p, p, out=o[1])
                _vecdot(q, q, out=o[2])
                s = np.add(p, q, out=sbuf[:b])
                np.einsum("...j->...", s, out=o[6])  # (np.sum along the last axis is 4x slower)
                lx = lbuf[:b]
                for x, i in ((p, 3), (q, 4), (s, 5)):
                    # Σ x ln x with 0 · ln 0 = 0: x · ln(x + tiny) is exactly 0 at 0 and exactly x ln x
                    # for every x above 1.7e-23 (tiny is below half an ulp of it); below, x ln x < 1e-21,
                    # far under float32's resolution of the row's sum. (np.maximum(x, tiny) gives the
                    # same, 6x slower.)
                    np.add(x, tiny, out=lx)
                    np.log(lx, out=lx)
                    _vecdot(x, lx, out=o[i])
                stats[:, c:c2, k] = o

    if threads is None:
        threads = torch.get_num_threads()
    threads = max(1, min(int(threads), B))
    if threads == 1:
        work(0, B)
    else:
        step = -(-B // threads)
        futures = [_pool(threads).submit(work, lo, min(B, lo + step)) for lo in range(0, B, step)]
        for f in futures:
            f.result()
    return stats


def _row_stats_torch(pre: Sequence[Any], fine: Sequence[Any]) -> np.ndarray:
    """float32 ``[7, B, L, H, N]`` (:data:`_ROW_STATS`) computed with torch ops on the tensors' device."""
    import torch

    tiny = 1e-30
    buf = scratch = None
    per_layer = []

    def xlnx_rows(x, out):  # Σ_key x ln x per row, 0 · ln 0 = 0 (x · ln(max(x, tiny)) is exactly 0 at 0)
        return torch.clamp(x, min=tiny, out=out).log_().mul_(x).sum(dim=-1)

    for p, q in zip(pre, fine, strict=True):
        p = p.to(torch.float32)
        q = q.to(torch.float32)
        if buf is None or buf.shape != p.shape:
            buf, scratch = torch.empty_like(p), torch.empty_like(p)
        dot = torch.linalg.vecdot(p, q)  # [B, H, N] per row, float32
        pp = torch.linalg.vecdot(p, p)
        qq = torch.linalg.vecdot(q, q)
        ep = xlnx_rows(p, scratch)
        eq = xlnx_rows(q, scratch)
        s = torch.add(p, q, out=buf)
        s_sum = s.sum(dim=-1)
        es = xlnx_rows(s, scratch)
        per_layer.append(torch.stack([dot, pp, qq, ep, eq, es, s_sum]))  # [7, B, H, N]
    return torch.stack(per_layer, dim=2).cpu().numpy()  # [7, B, L, H, N]


def usage_change(usage: Any) -> np.ndarray:
    """Mean |u_fine − u_pre| over samples: float32 [L, H] from stored usage ``[N, 2, L, H]`` (or one
    sample's ``[2, L, H]``)."""
    u = np.asarray(usage, dtype=np.float64)
    if u.ndim == 3:
        u = u[None]
    if u.ndim != 4 or u.shape[1] != 2:
        raise ValueError(f"usage must be [N, 2, L, H] (pre, fine), got shape {u.shape}")
    if u.shape[0] == 0:
        raise ValueError("no samples: the mean usage change of an empty set is undefined")
    return np.abs(u[:, 1] - u[:, 0]).mean(axis=0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# corpus level
# ----------------------------------------------------------------------------------------------------


@dataclass
class HeadChange:
    """Corpus-level change per head; every array float32 [L, H], layers 0-based (HF order).

    cosine, jsd: means over the samples (see the module docstring).
    usage_change: mean |u_fine − u_pre|, or None when no usage was given.
    n_samples: how many samples the means are over; sample_ids: their ids (in order), if known.
    """

    cosine: np.ndarray
    jsd: np.ndarray
    usage_change: np.ndarray | None
    n_samples: int
    sample_ids: list[str] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return int(self.cosine.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.cosine.shape[1])

    def metric(self, name: str) -> np.ndarray:
        """One measure by name (:data:`METRICS`)."""
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"{name} is not available (no head usage was given)")
        return value

    def layer_means(self) -> dict[str, np.ndarray]:
        """Per-layer means float64 [L] of each available measure."""
        return {m: layer_means(getattr(self, m)) for m in METRICS if getattr(self, m) is not None}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict: ``layers``, ``heads``, ``n_samples``, ``cosine``, ``jsd``,
        ``usage_change`` ([L][H] lists of floats, 0-based HF layer order, or None) and ``sample_ids``."""
        as_list = lambda a: None if a is None else [[float(x) for x in row] for row in np.asarray(a)]  # noqa: E731
        return {
            "layers": self.num_layers,
            "heads": self.num_heads,
            "n_samples": int(self.n_samples),
            "layer_order": "0-based, Hugging Face order (layer 0 is nearest the embeddings)",
            "cosine": as_list(self.cosine),
            "jsd": as_list(self.jsd),
            "usage_change": as_list(self.usage_change),
            "sample_ids": [str(x) for x in self.sample_ids],
        }


def aggregate(cos: Any, js: Any, usage: Any = None, sample_ids: Iterable[Any] | None = None,
              rows: Any = None) -> HeadChange:
    """Corpus means from per-sample values: cos, js float [N, L, H]; usage [N, 2, L, H] or None.

    rows: a subset to aggregate (row numbers or a bool mask [N]); None = all samples.
    """
    cos = np.asarray(cos)
    js = np.asarray(js)
    if cos.ndim != 3 or cos.shape != js.shape:
        raise ValueError(f"per-sample cosine and JSD must be [N, L, H] of one shape, got {cos.shape} and {js.shape}")
    ids = None if sample_ids is None else [str(x) for x in sample_ids]
    if ids is not None and len(ids) != cos.shape[0]:
        raise ValueError(f"{len(ids)} sample ids for {cos.shape[0]} samples")
    if rows is not None:
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (cos.shape[0],):
                raise ValueError(f"a bool row mask must have shape ({cos.shape[0]},), got {rows.shape}")
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= cos.shape[0]):
            raise ValueError(f"rows out of range 0..{cos.shape[0] - 1}")
        cos, js = cos[rows], js[rows]
        usage = None if usage is None else np.asarray(usage)[rows]
        ids = None if ids is None else [ids[i] for i in rows]
    if cos.shape[0] == 0:
        raise ValueError("no samples to aggregate (an empty subset)")
    if usage is not None and np.asarray(usage).shape[0] != cos.shape[0]:
        raise ValueError(f"usage holds {np.asarray(usage).shape[0]} samples, cosine {cos.shape[0]}")
    return HeadChange(
        cosine=cos.mean(axis=0, dtype=np.float64).astype(np.float32),
        jsd=js.mean(axis=0, dtype=np.float64).astype(np.float32),
        usage_change=None if usage is None else usage_change(usage),
        n_samples=int(cos.shape[0]),
        sample_ids=ids or [],
    )


class HeadChangeAccumulator:
    """Collects per-sample cosine, JSD (and usage) one sample at a time; :meth:`summary` averages them.

    Keeps the per-sample values (``cosine``, ``jsd``: float32 [N, L, H]), small next to attentions.
    """

    def __init__(self, num_layers: int, num_heads: int):
        self.num_layers, self.num_heads = int(num_layers), int(num_heads)
        self._cos: list[np.ndarray] = []
        self._jsd: list[np.ndarray] = []
        self._usage: list[np.ndarray] = []
        self.sample_ids: list[str] = []

    def __len__(self) -> int:
        return len(self._cos)

    def add(self, pre: Any, fine: Any, *, usage: Any = None, sample_id: Any = None, n: int | None = None) -> None:
        """Add one sample: its two attention arrays [L, H, n, n] and, optionally, its usage [2, L, H]."""
        c, j = sample_change(pre, fine, n=n)
        if c.shape != (self.num_layers, self.num_heads):
            raise ValueError(f"a sample with [layers, heads] {list(c.shape)}; expected "
                             f"[{self.num_layers}, {self.num_heads}]")
        if usage is None and self._usage:
            raise ValueError("give usage for every sample or for none")
        if usage is not None:
            if len(self._usage) != len(self._cos):
                raise ValueError("give usage for every sample or for none")
            usage = np.asarray(usage, dtype=np.float32)
            if usage.shape != (2, self.num_layers, self.num_heads):
                raise ValueError(f"usage must be [2, {self.num_layers}, {self.num_heads}], got {usage.shape}")
            self._usage.append(usage)
        self._cos.append(c)
        self._jsd.append(j)
        self.sample_ids.append(str(len(self.sample_ids)) if sample_id is None else str(sample_id))

    @property
    def cosine(self) -> np.ndarray:
        return np.stack(self._cos) if self._cos else np.zeros((0, self.num_layers, self.num_heads), np.float32)

    @property
    def jsd(self) -> np.ndarray:
        return np.stack(self._jsd) if self._jsd else np.zeros((0, self.num_layers, self.num_heads), np.float32)

    @property
    def usage(self) -> np.ndarray | None:
        return np.stack(self._usage) if self._usage else None

    def summary(self) -> HeadChange:
        return aggregate(self.cosine, self.jsd, self.usage, self.sample_ids)


# ----------------------------------------------------------------------------------------------------
# 8-bit storage
# ----------------------------------------------------------------------------------------------------


def encode(cos: Any, js: Any) -> np.ndarray:
    """Per-sample cosine and JSD (float [..., L, H]) → uint8 codes [..., 2, L, H] (square-root code,
    see the module docstring)."""
    cos, js = np.asarray(cos, dtype=np.float64), np.asarray(js, dtype=np.float64)
    if not (np.isfinite(cos).all() and np.isfinite(js).all()):
        raise ValueError("the head change (cosine, JSD) holds NaN or infinite values: the models produce non-finite "
                         "attention (check their weights); nothing is stored")
    cos, js = np.clip(cos, 0.0, 1.0), np.clip(js, 0.0, 1.0)
    if cos.shape != js.shape:
        raise ValueError(f"cosine {cos.shape} and JSD {js.shape} differ in shape")
    codes = np.stack([np.sqrt(1.0 - cos), np.sqrt(js)], axis=-3)
    return np.rint(codes * _SCALE).astype(np.uint8)


def decode(codes: Any) -> tuple[np.ndarray, np.ndarray]:
    """uint8 codes [..., 2, L, H] → (cosine, jsd), each float32 [..., L, H]."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim < 3 or codes.shape[-3] != 2:
        raise ValueError(f"expected uint8 codes [..., 2, L, H], got {codes.dtype} {codes.shape}")
    s = codes.astype(np.float32) / np.float32(_SCALE)
    s2 = s * s
    return (1.0 - s2[..., 0, :, :]).astype(np.float32), s2[..., 1, :, :].astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# reading the result
# ----------------------------------------------------------------------------------------------------


def layer_means(values: Any) -> np.ndarray:
    """Per-layer mean float64 [L] of an [L, H] array."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected an [L, H] array, got shape {values.shape}")
    return values.mean(axis=1)


def most_changed(values: Any, metric: str = "cosine", k: int = 5) -> list[tuple[int, int, float]]:
    """The ``k`` heads that changed most by ``metric``: lowest cosine, highest JSD / usage change.
    Returns ``[(layer, head, value), ...]`` (0-based), most changed first."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected an [L, H] array, got shape {values.shape}")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    flat = values.ravel() if metric == "cosine" else -values.ravel()
    order = np.argsort(flat, kind="stable")[: max(0, int(k))]
    H = values.shape[1]
    return [(int(i // H), int(i % H), float(values.ravel()[i])) for i in order]
