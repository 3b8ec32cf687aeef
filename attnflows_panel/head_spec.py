"""Head masks as the user reads and types them: ``layer:head`` text counted from 1.

Everything a user reads counts layers and heads from 1, as the paper does: the app and the command line
(``--heads``, the tables of ``heads report``). The code, the arrays and the JSON files count from 0
(``attnflows_panel.signatures.parse_heads`` is the 0-based spec of the Python API). :func:`parse_heads`
turns a user's text (the corpus browser's head mask box, a ``--heads`` option: ``"6:*,5:3"``,
ranges ``"2-3:1-6"``) into a 0-based bool mask [L, H]; :func:`format_heads` writes a mask back as short
text (a whole layer as ``k:*``, runs of heads as ``k:a-b``), so that a tapped layer never expands into a
long list.
"""

from __future__ import annotations

import numpy as np

__all__ = ["parse_heads", "format_heads"]


def _heads_part(text: str, n: int, what: str, spec: str) -> range:
    """One side of a ``layer:head`` item, 1-based: ``*``, ``k`` or ``a-b`` → 0-based range."""
    text = text.strip()
    if text == "*":
        return range(n)
    lo, dash, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi) if dash else int(lo)
    except ValueError:
        raise ValueError(f"bad {what} {text!r} in the head mask {spec!r}: write layer:head counting from 1, "
                         "e.g. 3:5, 6:* or 2-3:1-6") from None
    if not 1 <= a <= b <= n:
        raise ValueError(f"{what} {text} is out of range in the head mask {spec!r}: {what}s count from 1 to {n}")
    return range(a - 1, b)


def parse_heads(spec: str | None, num_layers: int, num_heads: int) -> np.ndarray | None:
    """The head mask bool [L, H] (0-based) of a 1-based ``"layer:head,..."`` text as the user reads the
    heads (``*`` and ranges allowed: ``"6:*,5:3"``, ``"2-3:1-6"``); None for "" (all heads)."""
    if not spec or not spec.strip():
        return None
    mask = np.zeros((num_layers, num_heads), dtype=bool)
    for item in filter(None, (p.strip() for p in spec.split(","))):
        layer, sep, head = item.partition(":")
        if not sep:
            raise ValueError(f"bad head {item!r} in the head mask {spec!r}: write layer:head, e.g. 3:5")
        for k in _heads_part(layer, num_layers, "layer", spec):
            mask[k, list(_heads_part(head, num_heads, "head", spec))] = True
    return mask


def _ranges(values: np.ndarray) -> list[str]:
    """1-based runs of 0-based indices: [0, 1, 2, 5] → ["1-3", "6"]."""
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(f"{start + 1}" if start == v else f"{start + 1}-{v + 1}")
            start = None
    return out


def format_heads(mask: np.ndarray | None) -> str:
    """A head mask as short 1-based text (inverse of :func:`parse_heads`): a whole layer is ``k:*``,
    runs of heads ``k:a-b``; "" for all heads."""
    if mask is None or np.asarray(mask).all():
        return ""
    mask = np.asarray(mask, dtype=bool)
    items = []
    for k in range(mask.shape[0]):
        heads = np.flatnonzero(mask[k])
        if len(heads) == mask.shape[1]:
            items.append(f"{k + 1}:*")
        elif len(heads):
            items.extend(f"{k + 1}:{r}" for r in _ranges(heads))
    return ",".join(items)
