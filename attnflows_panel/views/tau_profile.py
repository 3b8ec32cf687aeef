"""The τ profile (issue 27): how many tokens each model's Attention Graph holds at every τ, at a glance.

Today a user learns what the threshold does by dragging the slider and watching. This small chart shows
it for every τ at once: for each model (turquoise pre-trained, purple fine-tuned) the number of tokens in
the graph below the root (all levels together) as a step curve over τ, the current τ as a vertical line,
and a tick under the axis at each τ where a model's graph changes (a breakpoint: a node's width,
:mod:`attnflows_panel.bottleneck`). Hovering reads off each level's count at that τ; a click or a drag
sets τ (the ``tau`` parameter, which the view's slider shares).

It is one Panel ``JSComponent`` (``tau_profile.js``, Canvas 2D, no imports: offline in ``panel serve``,
notebooks and JupyterLab). Python sends, per model, each level's node widths sorted (float32 ``[L, n]``
flattened, the root's level left out), and the browser counts ``width > τ`` by binary search, so every τ
of the chart is exact and nothing goes back to the server until τ is set.

Test hook on the root element (``div.attnflows-tau-profile``): ``data-ready``, ``data-tau`` (the τ
drawn), ``data-counts`` (JSON ``{"pre": [...], "fine": [...]}``: tokens per level 0 .. L-1 at that τ),
``data-hover-tau`` / ``data-hover-counts`` (the same at the hovered τ).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import param
from panel.custom import JSComponent

from attnflows_panel import FINETUNED_COLOR, PRETRAINED_COLOR
from attnflows_panel.compare import FINE, PRE

__all__ = ["TauProfile", "pack_widths"]


def pack_widths(widths: dict[int, np.ndarray]) -> dict:
    """What the chart draws: ``{"L", "n", "models", "w<code>"}`` with, per model code (1 pre-trained, 2
    fine-tuned), the node widths ``[L + 1, n]`` of :func:`attnflows_panel.bottleneck.bottleneck` below the
    root, each level sorted ascending, as one float32 array (level-major). Unreached tokens have width 0,
    the root (level L) is left out. An infinite width (only the root's) would not be drawn."""
    out: dict = {"models": sorted(int(c) for c in widths)}
    for code, node in widths.items():
        node = np.asarray(node, dtype=np.float64)
        if node.ndim != 2 or node.shape[0] < 2:
            raise ValueError(f"node widths must be [L + 1, n]; got shape {node.shape}")
        body = np.sort(node[:-1], axis=1)
        if not np.isfinite(body).all():
            raise ValueError("a width below the root is not finite")
        out["L"], out["n"] = int(body.shape[0]), int(body.shape[1])
        out[f"w{int(code)}"] = body.astype(np.float32).ravel()
    return out


class TauProfile(JSComponent):
    """The τ profile chart (see the module docstring)."""

    data = param.Dict(default={}, doc="pack_widths({code: node widths [L + 1, n]}).")
    tau = param.Number(default=0.15, bounds=(0.0, 1.0), doc="The current τ: drawn as a line; a click sets it.")
    tau_max = param.Number(default=0.6, bounds=(0.05, 1.0), doc="The right end of the τ axis.")
    colors = param.Dict(default={str(PRE): PRETRAINED_COLOR, str(FINE): FINETUNED_COLOR}, doc="Model colours.")

    _esm = Path(__file__).with_name("tau_profile.js")

    @classmethod
    def from_widths(cls, widths: dict[int, np.ndarray], **params) -> TauProfile:
        return cls(data=pack_widths(widths), **params)
