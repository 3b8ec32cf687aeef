"""Array kernels of the Attention Graph (:mod:`attnflows_panel.graph`): checks of the root and of the
attention weights, fast boolean counts, and every head's weight of a set of edges.

Pure numpy. ``attn[k, h, a, b]`` as everywhere in the package (HF order, 0-based); an edge of layer ``k``
from query ``a`` (level ``k + 1``) to key ``b`` (level ``k``) is keyed ``(k * n + a) * n + b``.
"""

from __future__ import annotations

import operator

import numpy as np

__all__ = ["MAX_WEIGHT", "as_index", "uint_dtype", "check_root", "check_weights", "weights_ok", "fast_check",
           "count_true", "row_counts", "head_sum", "edge_heads", "edge_weights", "carrying_heads"]


def uint_dtype(n_max: int) -> type[np.unsignedinteger]:
    """The narrowest unsigned integer type that holds ``0 .. n_max`` (uint8, uint16, else uint32)."""
    if n_max < 256:
        return np.uint8
    if n_max < 65536:
        return np.uint16
    return np.uint32


def as_index(x, what: str) -> int:
    """``x`` as an int (anything with ``__index__``, no bool); a ValueError naming ``what`` otherwise."""
    if isinstance(x, (bool, np.bool_)):
        raise ValueError(f"{what} must be an integer; got {x!r}")
    try:
        return operator.index(x)
    except TypeError:
        raise ValueError(f"{what} must be an integer; got {x!r}") from None


def check_root(root, n: int) -> int:
    """The root token position as an int in ``[0, n)``; a clear ValueError otherwise (a bool is no position)."""
    if isinstance(root, (bool, np.bool_)):
        raise ValueError(f"root must be a token position; got {root!r}")
    try:
        root = operator.index(root)
    except TypeError:
        raise ValueError(f"root must be an integer token position; got {root!r}") from None
    if not 0 <= root < n:
        raise ValueError(f"root {root} is out of range for n = {n} tokens")
    return root


#: Attention weights are probabilities. A small tolerance above 1 lets half-precision softmax outputs in.
MAX_WEIGHT = 1.0 + 1e-3


def check_weights(attn: np.ndarray) -> None:
    """Raise ValueError unless every attention weight is a number in [0, 1] (a little above 1 allowed)."""
    lo, hi = attn.min(), attn.max()
    if np.isnan(lo) or np.isnan(hi):
        raise ValueError("attn contains NaN; attention weights must be finite numbers in [0, 1]")
    if lo < 0 or hi > MAX_WEIGHT:
        raise ValueError(
            f"attention weights must lie in [0, 1] (softmax outputs, not scores); got values in "
            f"[{float(lo):.4g}, {float(hi):.4g}]"
        )


_UINT_OF = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def weights_ok(a: np.ndarray) -> bool:
    """True when every value of ``a`` lies in [0, MAX_WEIGHT] (no NaN), in one pass where possible.

    For a contiguous IEEE float array, the non-negative floats sort like their bit patterns read as
    unsigned integers, and a sign bit or a NaN makes the pattern larger than that of the largest allowed
    weight; so one unsigned max decides (a min and a max read the data twice). -0.0 fails the fast test
    and is then decided by the plain comparisons, as everything else that fails it.
    """
    fast = fast_check(a.dtype)
    if fast is not None and a.flags.c_contiguous and a.size and a.view(fast[0]).max() <= fast[1]:
        return True
    lo, hi = a.min(), a.max()
    return bool(lo >= 0 and hi <= MAX_WEIGHT)  # NaN fails both comparisons


def fast_check(dtype: np.dtype):
    """``(uint dtype, bit pattern of the largest allowed weight)`` for :func:`weights_ok`'s one-pass
    test of a float dtype, or None where it does not apply."""
    uint = _UINT_OF.get(dtype.itemsize)
    if uint is None or dtype.kind != "f":
        return None
    top = dtype.type(MAX_WEIGHT)
    if float(top) > MAX_WEIGHT:
        top = np.nextafter(top, dtype.type(0))  # the largest value of this dtype <= MAX_WEIGHT
    return uint, np.asarray(top).view(uint)[()]


def count_true(mask: np.ndarray, axis: int) -> np.ndarray:
    """``mask.sum(axis)`` for a bool array, as int32: summed as bytes in the narrowest accumulator that
    cannot overflow (several times faster than a bool -> int32 sum)."""
    size = mask.shape[axis]
    if size < 256 and axis in (-1, mask.ndim - 1) and mask.flags.c_contiguous:
        # along the last axis, einsum's byte sums run about twice as fast as np.sum's (rows are short)
        return np.einsum("...i->...", mask.view(np.uint8)).astype(np.int32)
    if size < 256:
        acc = np.uint8
    elif size < 65536:
        acc = np.uint16
    else:
        return mask.sum(axis=axis, dtype=np.int32)
    return mask.view(np.uint8).sum(axis=axis, dtype=acc).astype(np.int32)


_BYTE_PAIRS = np.uint64(0x00FF00FF00FF00FF)
_LANE_SUM = np.uint64(0x0001000100010001)


def row_counts(mask: np.ndarray) -> np.ndarray:
    """``mask.sum(-1)`` for a C-contiguous bool array ``[..., n]``, as an unsigned integer array.

    With ``n`` a multiple of 8 (and below 2048), eight bools are read as one uint64 word and the words of a
    row summed in uint64 (each byte holds at most ``n / 8`` < 256, so no byte carries into the next); the
    eight byte sums of the word are then added pairwise into 16-bit lanes and the four lanes by one
    multiplication (the top lane of ``s * 0x0001000100010001``). About twice as fast as a byte sum.
    """
    n = mask.shape[-1]
    if n % 8 or n >= 2048 or not mask.flags.c_contiguous or mask.size == 0:
        return count_true(mask, mask.ndim - 1)
    s = np.einsum("...i->...", mask.view(np.uint64))  # per row: 8 byte lanes of partial counts
    s = (s & _BYTE_PAIRS) + ((s >> np.uint64(8)) & _BYTE_PAIRS)  # 4 lanes of 16 bits
    return (s * _LANE_SUM) >> np.uint64(48)


def head_sum(sub: np.ndarray) -> np.ndarray:
    """``sub.sum(0)`` for a bool ``[H, m, n]``: the number of heads per (a, b), uint8 while ``H < 256``
    (no widening copy: the caller's int32 array takes it on assignment)."""
    if sub.shape[0] < 256:
        return np.add.reduce(sub.view(np.uint8), axis=0, dtype=np.uint8)
    return count_true(sub, 0)


def edge_heads(attn: np.ndarray, tau: float, heads: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the edges ``keys`` (``(k * n + a) * n + b``, each with ``a`` in level ``k + 1``) of the graph of
    ``attn`` [L, H, n, n] at ``tau`` with the allowed heads ``heads`` bool [L, H]: which heads carry each
    (bool ``[H, m]``, weight > τ through an allowed head, compared as the build compares) and every head's
    weight (``[H, m]``), read head by head (rows of the result are contiguous, so reductions over the
    heads run along whole rows)."""
    gathered = edge_weights(attn, keys)
    return carrying_heads(gathered, tau, heads, keys // (attn.shape[2] ** 2)), gathered


def edge_weights(attn: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``[H, m]``: every head's weight ``attn[k, h, a, b]`` of the edges ``keys`` (``(k * n + a) * n + b``)."""
    L, H, n, _ = attn.shape
    k, rem = np.divmod(keys, n * n)
    if attn.flags.c_contiguous:
        head_off = (np.arange(H, dtype=np.intp) * (n * n))[:, None]
        return attn.reshape(-1)[(k * (H * n * n) + rem)[None, :] + head_off]
    a, b = np.divmod(rem, n)
    return np.ascontiguousarray(attn[k, :, a, b].T)


def carrying_heads(weights: np.ndarray, tau: float, heads: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """bool ``[H, m]``: the heads that carry each edge: its weight through the head (``weights`` ``[H, m]``)
    above τ, compared as the build compares, and the head allowed (``heads`` bool ``[L, H]``) in the edge's
    layer (``layer`` ``[m]``)."""
    carrying = weights > tau
    if not heads.all():
        carrying &= heads.T[:, layer]
    return carrying
