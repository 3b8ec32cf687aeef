"""Head-usage signatures: what a sample's Attention Graphs say about which heads carry attention to [CLS].

Pure numpy. This is the paper's future work ("use our scheme for identifying attention heads as a means
of querying sentence pairs that contain similar patterns in self-attention") turned into vectors that an
inner-product index can search.

Definition (``SIGNATURE_VERSION`` = 1)
--------------------------------------
Layers are 0-based in HF order (``attn[k, h, a, b]``); the Attention Graph at threshold τ has levels
``L .. 0`` (level L = [CLS]). For one model, layer k and head h let

    E_{k,h} = {(a, b) : a in level k+1, attn[k, h, a, b] > τ}      edges of layer k carried by head h
    E_k     = ∪_h E_{k,h}                                            the graph's edges at layer k

(``E_{k,h}`` is ``g.active[k, h]``; a level-(k+1) token a with an edge to b puts b in level k, §4.1).
The **head usage** of head (k, h) is the share of the layer's graph edges that the head takes part in:

    u[k, h] = |E_{k,h}| / |E_k|      in [0, 1];   u[k, h] = 0 when layer k has no edge.

Per-layer normalisation makes layers comparable (early layers hold many more tokens, §4.3.1) and makes
the value independent of sentence length; a head's value does not change when another head duplicates
its edges. Σ_h |E_{k,h}| counts an edge once per head, as c_l does in eq. 3, so Σ_h u[k, h] >= 1 for a
layer with edges.

A sample has three **blocks**, each flattened layer-major (dimension ``k * H + h``):

    s_pre = u_pre,   s_fine = u_fine,   s_diff = u_fine - u_pre.

The stored **usage** (``[2, L, H]``: pre, fine) is what an index keeps; the search vectors are derived
from it with the corpus means μ_b of each block (stored with the index):

    z_b = (s_b - μ_b) / ||s_b - μ_b||          (z_b = 0 when the norm is below 1e-12)
    x   = [z_pre, z_fine, z_diff] / sqrt(3)      unit norm, 3·L·H dims, float32

Centring matters: most heads carry flow to [CLS] in almost every sentence, so raw usage vectors of any
two samples have cosine near 1. After centring, two samples are similar when their head usage deviates
from the corpus' typical pattern in the same way, which is what a researcher means by "a similar
attention pattern". Because each block has unit norm and weight 1/sqrt(3), ``<x, x'>`` is the mean of
the three block cosines: no block dominates an "all" search.

Queries (exBERT-style masking, no per-head index)
-------------------------------------------------
A query for space S (one block or all three) and a head mask M (bool [L, H]; None = all heads) is

    q_b = sqrt(3) / |S| · (z_b ⊙ M) / ||z_b ⊙ M||   for b in S,     q_b = 0 otherwise,

so the inner product with a stored vector is

    score = (1 / |S|) Σ_{b in S} <ẑ_{b,M}, z_b>  =  (1 / |S|) Σ_{b in S} ||z_{b,M}|| · cos(z^q_{b,M}, z_{b,M}),

the mean over the chosen blocks of the cosine on the chosen heads, weighted by how much of the
candidate's (centred) pattern lies on those heads. With no mask and one block it is exactly that
block's cosine; a sample's own score is 1 and no score exceeds 1. Zeroing query dimensions restricts
the score to the chosen heads, so one index of 3·L·H dimensions serves all four spaces and every
head mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "SIGNATURE_VERSION",
    "BLOCKS",
    "SPACES",
    "EPS",
    "head_edge_counts",
    "layer_edge_counts",
    "head_usage",
    "pair_usage",
    "usage_from_attentions",
    "usage_from_counts",
    "blocks",
    "fit_center",
    "embed",
    "space_mask",
    "query_vector",
    "parse_heads",
    "format_heads",
]

#: Bump whenever the definition above changes; indexes record it in their manifest.
SIGNATURE_VERSION = 1
#: The three blocks of a signature, in vector order.
BLOCKS = ("pre", "fine", "diff")
#: Search spaces: one block, or all three.
SPACES = ("pre", "fine", "diff", "all")
#: Norms below this are treated as zero.
EPS = 1e-12


# ----------------------------------------------------------------------------------------------------
# per-graph quantities
# ----------------------------------------------------------------------------------------------------


def _active(graph: Any) -> np.ndarray:
    active = np.asarray(getattr(graph, "active", graph))
    if active.ndim != 4 or active.shape[2] != active.shape[3]:
        raise ValueError(f"expected an AttentionGraph or a bool array [L, H, n, n], got shape {active.shape}")
    return active.astype(bool, copy=False)


def head_edge_counts(graph: Any) -> np.ndarray:
    """|E_{k,h}|: int64 [L, H], the number of layer-k graph edges that head h carries.

    ``graph`` is an :class:`~attnflows_panel.graph.AttentionGraph` (or its ``active`` array).
    """
    return _active(graph).sum(axis=(2, 3), dtype=np.int64)


def layer_edge_counts(graph: Any) -> np.ndarray:
    """|E_k|: int64 [L], the number of distinct graph edges (a in level k+1 → b in level k) at layer k."""
    return _active(graph).any(axis=1).sum(axis=(1, 2), dtype=np.int64)


def usage_from_counts(per_head: np.ndarray, per_layer: np.ndarray) -> np.ndarray:
    """u = |E_{k,h}| / |E_k| (0 where a layer has no edge): float32, from per-head counts [..., L, H] and
    per-layer counts [..., L] of distinct edges."""
    per_layer = np.asarray(per_layer, dtype=np.float64)[..., None]
    out = np.divide(per_head, per_layer, out=np.zeros(per_head.shape, dtype=np.float64), where=per_layer > 0)
    return out.astype(np.float32)


def head_usage(graph: Any) -> np.ndarray:
    """u[k, h] = |E_{k,h}| / |E_k| (0 where layer k has no edge): float32 [L, H] in [0, 1]."""
    active = _active(graph)
    return usage_from_counts(
        active.sum(axis=(2, 3), dtype=np.int64), active.any(axis=1).sum(axis=(1, 2), dtype=np.int64)
    )


def pair_usage(pre_graph: Any, fine_graph: Any) -> np.ndarray:
    """The stored usage of one sample: float32 [2, L, H] = (u_pre, u_fine)."""
    pre, fine = head_usage(pre_graph), head_usage(fine_graph)
    if pre.shape != fine.shape:
        raise ValueError(f"the two graphs have different [layers, heads]: {pre.shape} vs {fine.shape}")
    return np.stack([pre, fine])


def usage_from_attentions(attn: np.ndarray, tau: float, root: int = 0) -> np.ndarray:
    """Head usage straight from attentions ``[L, H, n, n]`` without building an AttentionGraph.

    Same quantity as ``head_usage(AttentionGraph.build(attn, tau, root=root))`` (the tests check it):
    walks the levels from the root down (§4.1) and counts, per head, the edges whose query token is in
    level k+1. It keeps the index build cheap when only the signature is wanted.
    """
    attn = np.asarray(attn)
    if attn.ndim != 4 or attn.shape[2] != attn.shape[3]:
        raise ValueError(f"attentions must be [L, H, n, n], got shape {attn.shape}")
    L, H, n, _ = attn.shape
    if not 0 <= root < n:
        raise ValueError(f"root {root} out of range for {n} tokens")
    above = attn > tau  # [L, H, n, n]
    member = np.zeros(n, dtype=bool)
    member[root] = True
    per_head = np.zeros((L, H), dtype=np.int64)
    per_layer = np.zeros(L, dtype=np.int64)
    for k in range(L - 1, -1, -1):
        rows = above[k][:, member, :]  # [H, |level k+1|, n]
        per_head[k] = rows.sum(axis=(1, 2))
        edges = rows.any(axis=0)  # [|level k+1|, n]
        per_layer[k] = edges.sum()
        member = edges.any(axis=0)
    return usage_from_counts(per_head, per_layer)



def usage_from_attention_tensors(attentions: Sequence[Any], tau: float, root: int = 0) -> np.ndarray:
    """Head usage float32 ``[B, L, H]`` of a whole padded batch, straight from a HF model's attention
    tensors (a sequence of L torch tensors ``[B, H, N, N]``, on the device they were computed on).

    The same quantity as :func:`usage_from_attentions` on each sample's ``[L, H, n, n]`` slice (the
    tests check it, exactly): the Attention Graph's levels are walked from the root (§4.1) down and,
    per layer, the edges each head carries are counted. Padding is harmless: padded keys get zero
    weight (never above τ), and a padded query is never in a level, since no token of a level attends
    to it. Per layer this is three passes over the ``[B, H, N, N]`` weights (a compare written as
    0/1 float32, its row sums, and a max over the heads that gives the layer's edges); everything
    after works on ``[B, H, N]`` or ``[B, N, N]``, counts are exact (float32 holds integers to 2^24),
    and only the counts (``[B, L, H]``, ``[B, L]``) leave the device. The index build's fast path
    (index/README.md).
    """
    import torch

    if attentions is None or len(attentions) == 0 or any(a is None for a in attentions):
        raise ValueError("the model returned no attentions (is it loaded with attn_implementation='eager'?)")
    L = len(attentions)
    B, H, N, _ = attentions[0].shape
    if not 0 <= root < N:
        raise ValueError(f"root {root} out of range for {N} tokens")
    device = attentions[0].device
    member = torch.zeros((B, N), dtype=torch.float32, device=device)  # level k+1, as 0/1
    member[:, root] = 1.0
    per_head = torch.zeros((B, L, H), dtype=torch.float32, device=device)
    per_layer = torch.zeros((B, L), dtype=torch.float32, device=device)
    buf = None
    for k in range(L - 1, -1, -1):
        a = attentions[k]
        if buf is None or buf.shape != a.shape or buf.dtype != a.dtype:
            buf = torch.empty_like(a)
        above = torch.gt(a, tau, out=buf)  # 0/1 in a's dtype: [B, H, N(query), N(key)]
        # edges per head whose query is in level k+1: row counts, then only the level's rows
        per_head[:, k] = torch.linalg.vecdot(above.sum(dim=-1, dtype=torch.float32), member[:, None, :])
        # the layer's edges: any head above τ = the heads' maximum above τ
        edges = (a.amax(dim=1) > tau) & (member[:, :, None] > 0)  # [B, N, N]
        per_layer[:, k] = edges.sum(dim=(1, 2), dtype=torch.float32)
        member = edges.any(dim=1).to(torch.float32)  # keys reached: level k
    return usage_from_counts(per_head.cpu().numpy().astype(np.int64), per_layer.cpu().numpy().astype(np.int64))

# ----------------------------------------------------------------------------------------------------
# blocks, centring, vectors
# ----------------------------------------------------------------------------------------------------


def _as_usage(usage: np.ndarray) -> np.ndarray:
    usage = np.asarray(usage, dtype=np.float32)
    if usage.ndim == 3:
        usage = usage[None]
    if usage.ndim != 4 or usage.shape[1] != 2:
        raise ValueError(f"usage must be [2, L, H] or [N, 2, L, H] (pre, fine), got shape {usage.shape}")
    return usage


def blocks(usage: np.ndarray) -> np.ndarray:
    """s_pre, s_fine, s_diff: float32 [N, 3, L*H] from usage [N, 2, L, H] (or [2, L, H] → N = 1)."""
    usage = _as_usage(usage)
    N, _, L, H = usage.shape
    flat = usage.reshape(N, 2, L * H)
    return np.concatenate([flat, flat[:, 1:2] - flat[:, 0:1]], axis=1)


def fit_center(usage: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """μ_b: float32 [3, L*H], the corpus mean of each block (computed in float64, in chunks)."""
    usage = _as_usage(usage)
    if len(usage) == 0:
        raise ValueError("cannot fit the centring of an empty corpus")
    total = None
    for start in range(0, len(usage), chunk):
        part = blocks(usage[start : start + chunk]).astype(np.float64).sum(axis=0)
        total = part if total is None else total + part
    return (total / len(usage)).astype(np.float32)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > EPS)


def embed(usage: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Search vectors x = [z_pre, z_fine, z_diff] / sqrt(3): float32 [N, 3*L*H], unit norm (or 0)."""
    b = blocks(usage)
    center = np.asarray(center, dtype=np.float32)
    if center.shape != b.shape[1:]:
        raise ValueError(f"centre has shape {center.shape}, expected {b.shape[1:]}")
    z = _unit_rows(b - center[None])
    return (z / np.sqrt(len(BLOCKS))).reshape(len(z), -1).astype(np.float32)


def _check_heads(heads: np.ndarray | None, L: int, H: int) -> np.ndarray:
    if heads is None:
        return np.ones((L, H), dtype=bool)
    heads = np.asarray(heads)
    if heads.shape != (L, H):
        raise ValueError(f"head mask must be bool [layers, heads] = [{L}, {H}], got shape {heads.shape}")
    heads = heads.astype(bool)
    if not heads.any():
        raise ValueError("the head mask selects no head")
    return heads


def _check_space(space: str) -> str:
    if space not in SPACES:
        raise ValueError(f"unknown search space {space!r}; choose one of {', '.join(SPACES)}")
    return space


def space_mask(space: str, heads: np.ndarray | None, L: int, H: int) -> np.ndarray:
    """bool [3*L*H]: the vector dimensions a query in ``space`` restricted to ``heads`` keeps."""
    space = _check_space(space)
    heads = _check_heads(heads, L, H).reshape(-1)
    chosen = BLOCKS if space == "all" else (space,)
    return np.concatenate([heads if b in chosen else np.zeros_like(heads) for b in BLOCKS])


def query_vector(x: np.ndarray, space: str = "all", heads: np.ndarray | None = None, *, L: int, H: int) -> np.ndarray:
    """The query for a stored vector ``x`` [3*L*H] (see the module docstring): masked, each chosen block
    re-normalised to unit norm on the chosen heads, weighted so that scores are mean block cosines.

    Raises ValueError when the query is zero on every chosen block (nothing to compare).
    """
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    d = L * H
    if x.shape[0] != len(BLOCKS) * d:
        raise ValueError(f"vector has {x.shape[0]} dims, expected {len(BLOCKS) * d} (3 x {L} x {H})")
    space = _check_space(space)
    mask = space_mask(space, heads, L, H).reshape(len(BLOCKS), d)
    chosen = [i for i, b in enumerate(BLOCKS) if space == "all" or b == space]
    q = np.where(mask, x.reshape(len(BLOCKS), d), 0.0).astype(np.float32)
    norms = np.linalg.norm(q, axis=1)
    used = [i for i in chosen if norms[i] > EPS]
    if not used:
        raise ValueError(
            f"the query's signature is zero in space {space!r} on the chosen heads "
            "(its head usage equals the corpus mean there): nothing to compare"
        )
    scale = np.sqrt(len(BLOCKS)) / len(chosen)
    for i in range(len(BLOCKS)):
        q[i] = q[i] / norms[i] * scale if i in used else 0.0
    return q.reshape(-1)


# ----------------------------------------------------------------------------------------------------
# head-mask specs ("0:1,3:5")
# ----------------------------------------------------------------------------------------------------


def _parse_part(text: str, size: int, what: str, spec: str) -> Iterable[int]:
    text = text.strip()
    if text in ("*", ""):
        return range(size)
    if "-" in text:
        lo, _, hi = text.partition("-")
        try:
            lo_i, hi_i = int(lo), int(hi)
        except ValueError:
            raise ValueError(f"bad {what} range {text!r} in head spec {spec!r}") from None
        values = range(lo_i, hi_i + 1)
    else:
        try:
            values = [int(text)]
        except ValueError:
            raise ValueError(
                f"bad {what} {text!r} in head spec {spec!r} (use numbers, ranges like 2-4, or *)") from None
    for v in values:
        if not 0 <= v < size:
            raise ValueError(f"{what} {v} out of range 0..{size - 1} in head spec {spec!r} (0-based)")
    return values


def parse_heads(spec: str | Sequence[tuple[int, int]] | np.ndarray | None, L: int, H: int) -> np.ndarray | None:
    """A head mask bool [L, H] from ``"layer:head,..."`` (0-based; ``*`` and ranges ``a-b`` allowed,
    e.g. ``"0:1,3:5"``, ``"5:*"``, ``"2-3:0-5"``), a list of (layer, head) pairs, or a bool array.
    None or an empty string means all heads (returns None)."""
    if spec is None:
        return None
    if isinstance(spec, np.ndarray):
        return _check_heads(spec, L, H)
    mask = np.zeros((L, H), dtype=bool)
    if isinstance(spec, str):
        if not spec.strip():
            return None
        for item in spec.split(","):
            if not item.strip():
                continue
            layer, sep, head = item.partition(":")
            if not sep:
                raise ValueError(f"bad head {item.strip()!r} in head spec {spec!r}: write layer:head, e.g. 3:5")
            for k in _parse_part(layer, L, "layer", spec):
                for h in _parse_part(head, H, "head", spec):
                    mask[k, h] = True
    else:
        for item in spec:
            k, h = (int(v) for v in item)
            if not (0 <= k < L and 0 <= h < H):
                raise ValueError(f"head ({k}, {h}) out of range for {L} layers x {H} heads (0-based)")
            mask[k, h] = True
    return _check_heads(mask, L, H)


def format_heads(heads: np.ndarray | None) -> str:
    """Inverse of :func:`parse_heads` for display: ``"0:1,3:5"`` ("" for all heads / None)."""
    if heads is None:
        return ""
    heads = np.asarray(heads, dtype=bool)
    if heads.all():
        return ""
    return ",".join(f"{k}:{h}" for k, h in zip(*np.nonzero(heads), strict=True))
