"""The shareable part of a session, read from and written to the page's URL query (see README.md).

The query holds ``sample`` (or ``a``/``b`` for a typed pair), ``tau``, ``mode``, ``level``, ``sel`` (the
frozen selection, ``level:token`` pairs) and ``head`` (``layer:head``) plus ``hm`` (the model(s) of a head
restriction), and ``w``, the kind of edge weights (``norm`` or ``attattr``; raw attention when absent).
Everything in the URL counts from 1, as everything the user reads does (the views, the
head mask, the heatmaps, the head panel, the help): level 1 = the input, level L + 1 = [CLS]; token 1 =
[CLS]; layer 1 and head 1 are the first. :class:`UrlState` itself holds the code's 0-based values.

Links written before heads were numbered from 1 (``head=`` counted layers and heads from 0) are not
told apart from new ones: such a link's head is read as 1-based, and a 0 in it is refused with a
message (the selection, τ, mode and level of those links read as before). :meth:`UrlState.parse`
checks every value and names each bad one; :meth:`UrlState.query` writes a state back, leaving out
defaults and empty values. This is done here rather than with ``pn.state.location.sync``, which turns
``"0123"`` into the int 123, keeps stale keys, and rejects a whole query when one value is bad.
"""

from __future__ import annotations

import dataclasses
import urllib.parse

import numpy as np

from attnflows_panel.views.attention_flows import MODES, TAU_BOUNDS
from attnflows_panel.weights import WEIGHT_KINDS

__all__ = ["UrlState"]


def _parse_pairs(text: str, what: str) -> list[list[int]]:
    """``"3:5,3:7"`` → ``[[3, 5], [3, 7]]`` (ValueError naming ``what`` otherwise)."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        bits = part.split(":")
        if len(bits) != 2 or not all(b.strip().isdigit() for b in bits):
            raise ValueError(f"{what} must be 'level:token' pairs such as 3:5,3:7; got {text!r}")
        out.append([int(bits[0]), int(bits[1])])
    return out


def _format_pairs(pairs) -> str:
    return ",".join(f"{int(a)}:{int(b)}" for a, b in pairs)


@dataclasses.dataclass
class UrlState:
    """The shareable part of a session, as read from (and written to) the URL query."""

    sample: str | None = None
    a: str | None = None
    b: str | None = None
    tau: float | None = None
    mode: str | None = None
    level: int | None = None
    selection: list[list[int]] | None = None
    head: list[int] | None = None
    head_model: str | None = None
    weights: str | None = None

    @classmethod
    def parse(cls, query: str) -> tuple[UrlState, list[str]]:
        """Read a raw query string. Returns the state and one message per value that was ignored."""
        state, errors = cls(), []
        try:
            items = urllib.parse.parse_qs(query.lstrip("?"), keep_blank_values=True)
        except ValueError as exc:  # pragma: no cover - parse_qs is lenient
            return state, [f"the link's query could not be read ({exc})"]
        get = {k: v[-1] for k, v in items.items()}
        if get.get("sample", "").strip():
            state.sample = get["sample"].strip()
        if "a" in get or "b" in get:
            state.a, state.b = get.get("a", ""), get.get("b", "")
        if "tau" in get:
            try:
                tau = float(get["tau"])
                if not np.isfinite(tau) or not TAU_BOUNDS[0] <= tau <= TAU_BOUNDS[1]:
                    raise ValueError
                state.tau = tau
            except ValueError:
                errors.append(f"τ in the link must be a number in [{TAU_BOUNDS[0]}, {TAU_BOUNDS[1]}]; "
                              f"got {get['tau']!r}, kept the current τ")
        if "mode" in get:
            if get["mode"] in MODES:
                state.mode = get["mode"]
            else:
                errors.append(f"mode in the link must be one of {', '.join(MODES)}; got {get['mode']!r}")
        if "level" in get:
            if get["level"].strip().isdigit() and int(get["level"]) >= 1:
                state.level = int(get["level"]) - 1
            else:
                errors.append(f"level in the link must be a whole number from 1 (the input); got {get['level']!r}")
        if get.get("sel", "").strip():
            try:
                pairs = _parse_pairs(get["sel"], "the selection (sel) in the link")
                if any(lv < 1 or pos < 1 for lv, pos in pairs):
                    raise ValueError(f"the selection (sel) in the link counts levels and tokens from 1 "
                                     f"(level 1 = the input, token 1 = [CLS]); got {get['sel']!r}")
                state.selection = [[lv - 1, pos - 1] for lv, pos in pairs]
            except ValueError as exc:
                errors.append(str(exc))
        if get.get("head", "").strip():
            try:
                pairs = _parse_pairs(get["head"], "head in the link (layer:head)")
                if len(pairs) != 1:
                    raise ValueError(f"head in the link must be one 'layer:head'; got {get['head']!r}")
                if min(pairs[0]) < 1:
                    raise ValueError(f"head in the link counts layers and heads from 1 (1:1 is the first head of "
                                     f"the first layer); got {get['head']!r}")
                state.head = [pairs[0][0] - 1, pairs[0][1] - 1]
            except ValueError as exc:
                errors.append(str(exc))
        if get.get("hm"):
            if get["hm"] in ("both", "pretrained", "finetuned"):
                state.head_model = get["hm"]
            else:
                errors.append(f"hm in the link must be both, pretrained or finetuned; got {get['hm']!r}")
        if get.get("w"):
            if get["w"] in WEIGHT_KINDS:
                state.weights = get["w"]
            else:
                errors.append(f"w (the edge weights) in the link must be one of {', '.join(WEIGHT_KINDS)}; "
                              f"got {get['w']!r}, kept raw attention")
        return state, errors

    def query(self, default_tau: float) -> str:
        """The query string of this state (defaults and empty values left out)."""
        q: dict[str, str] = {}
        if self.sample:
            q["sample"] = self.sample
        elif self.a or self.b:
            q["a"], q["b"] = self.a or "", self.b or ""
        if self.tau is not None and abs(self.tau - default_tau) > 1e-9:
            q["tau"] = f"{self.tau:g}"
        if self.mode and self.mode != "combined":
            q["mode"] = self.mode
        if self.level is not None:  # 0 (the input) too; None: the view's informative level
            q["level"] = str(int(self.level) + 1)
        if self.selection:
            q["sel"] = _format_pairs([int(lv) + 1, int(pos) + 1] for lv, pos in self.selection)
            if self.head:
                q["head"] = f"{int(self.head[0]) + 1}:{int(self.head[1]) + 1}"
                if self.head_model and self.head_model != "both":
                    q["hm"] = self.head_model
        if self.weights and self.weights != "raw":
            q["w"] = self.weights
        return urllib.parse.urlencode(q)
