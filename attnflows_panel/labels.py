"""Reconcile a classifier's label names (its ``id2label``) with a corpus's label names.

A fine-tuned model predicts label *names* (``config.id2label``); a corpus row carries a gold label
name (``corpus.label_names``). A prediction can be scored only when both speak of the same labels.
:func:`reconcile` decides that, once per corpus task, and says why when it cannot
(README.md, "Tasks, labels and fine-tuning"):

- **by name** (the default): names are compared case-insensitively, ``-``/space/``_`` alike. Every
  corpus label must be one of the model's labels (a model may know more labels than the corpus uses:
  predicting one of those is simply wrong). Otherwise the label sets differ: no correctness, no accuracy.
- **by index** (``label_map="index"``): a model that kept the generic names ``LABEL_0``, ``LABEL_1``, …
  is matched position by position, but only when the user says so and the two counts agree.
- **by an explicit map** (``label_map={"LABEL_0": "entailment", ...}`` or ``"LABEL_0=entailment,..."``):
  model names renamed to corpus names, then matched by name.

The result, :class:`LabelMatch`, is plain data (``to_dict`` / ``from_dict`` for the index manifest). Its
:meth:`LabelMatch.correct` returns True/False for a prediction against a gold name when the sets
match, and None (not computed) when they do not: never an accuracy from mismatched label spaces.

Pure Python: no torch, no datasets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LabelMatch", "reconcile", "parse_label_map", "normalise", "is_generic"]

_GENERIC = re.compile(r"(?i)^label_(\d+)$")


def normalise(name: Any) -> str:
    """A label name in comparable form: lower case, ``-`` and spaces as ``_``, trimmed."""
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def is_generic(names: Sequence[str]) -> bool:
    """True when every name is a generic ``LABEL_<i>`` with ``i`` its position (HF's default id2label)."""
    if not names:
        return False
    for i, n in enumerate(names):
        m = _GENERIC.match(str(n))
        if m is None or int(m.group(1)) != i:
            return False
    return True


def parse_label_map(value: Any) -> str | dict[str, str] | None:
    """``None``, ``"index"``, a dict, or ``"MODEL=CORPUS,MODEL=CORPUS"`` → None, "index" or a dict.

    Raises ValueError for anything else (an empty name, a pair without ``=``, a model name given twice).
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, str):
        text = value.strip()
        if text.lower() == "index":
            return "index"
        if not text:
            raise ValueError("label map is empty; use 'index' or MODEL_LABEL=CORPUS_LABEL,...")
        pairs = []
        for part in text.split(","):
            k, sep, v = part.partition("=")
            if not sep:
                raise ValueError(
                    f"label map entry {part.strip()!r} is not MODEL_LABEL=CORPUS_LABEL (or use 'index' to match "
                    "generic LABEL_0, LABEL_1, … by position)"
                )
            pairs.append((k.strip(), v.strip()))
    else:
        raise ValueError(f"label map must be 'index', a dict or 'A=B,C=D', got {type(value).__name__}")
    out: dict[str, str] = {}
    for k, v in pairs:
        if not k or not v:
            raise ValueError(f"label map entry {k!r}={v!r} has an empty name")
        if k in out:
            raise ValueError(f"label map names the model label {k!r} twice")
        out[k] = v
    return out


@dataclass(frozen=True)
class LabelMatch:
    """How a model's labels relate to a corpus's labels (one task).

    matched: predictions can be scored (correctness, accuracy).
    how: ``"names"``, ``"index"``, ``"label_map"`` when matched; ``"mismatch"``, ``"no_head"`` (the model
        predicts nothing) or ``"no_corpus_labels"`` when not.
    corpus_labels / model_labels: the two label lists (id order) as given.
    mapping: model label → corpus label (only when matched).
    only_corpus / only_model: the names that the other side lacks (after any label map).
    message: one readable sentence (what matched, or which label sets differ and what to do).
    """

    matched: bool
    how: str
    corpus_labels: tuple[str, ...]
    model_labels: tuple[str, ...]
    mapping: Mapping[str, str] = field(default_factory=dict)
    only_corpus: tuple[str, ...] = ()
    only_model: tuple[str, ...] = ()
    message: str = ""
    task: str | None = None

    def correct(self, prediction: Any, gold: Any) -> bool | None:
        """Whether ``prediction`` (a model label name) is the gold label name; None when not matched
        (or either is missing)."""
        if not self.matched or prediction is None or gold is None:
            return None
        mapped = self.mapping.get(str(prediction))
        if mapped is None:  # a model label with no corpus counterpart: never correct
            return False
        return normalise(mapped) == normalise(gold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "matched": self.matched,
            "how": self.how,
            "corpus_labels": list(self.corpus_labels),
            "model_labels": list(self.model_labels),
            "mapping": dict(self.mapping),
            "only_corpus": list(self.only_corpus),
            "only_model": list(self.only_model),
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LabelMatch:
        return cls(
            matched=bool(d.get("matched")),
            how=str(d.get("how", "")),
            corpus_labels=tuple(d.get("corpus_labels") or ()),
            model_labels=tuple(d.get("model_labels") or ()),
            mapping=dict(d.get("mapping") or {}),
            only_corpus=tuple(d.get("only_corpus") or ()),
            only_model=tuple(d.get("only_model") or ()),
            message=str(d.get("message", "")),
            task=d.get("task"),
        )


def _fmt(names: Sequence[str]) -> str:
    return "[" + ", ".join(names) + "]"


def reconcile(model_labels: Sequence[str] | None, corpus_labels: Sequence[str] | None,
              label_map: Any = None, *, task: str | None = None, who: str = "the fine-tuned model") -> LabelMatch:
    """Match ``model_labels`` (id2label order) to ``corpus_labels`` (the corpus's label names).

    label_map: None (by name), ``"index"`` (generic ``LABEL_i`` by position, counts must agree), or a
        model → corpus name map (dict or ``"A=B,C=D"``). A label map that names a label neither side has,
        or ``"index"`` for a model whose labels are not generic, raises ValueError: the user asked for
        something these labels cannot do.
    task: recorded in the result and named in its message.
    """
    model = tuple(str(x) for x in (model_labels or ()))
    corpus = tuple(str(x) for x in (corpus_labels or ()))
    where = f"task {task!r}" if task else "the corpus"
    base = dict(corpus_labels=corpus, model_labels=model, task=task)
    if not model:
        return LabelMatch(False, "no_head", **base,
                          message=f"{who} has no classification head: no predictions to score")
    if not corpus:
        return LabelMatch(False, "no_corpus_labels", **base,
                          message=f"the label names of {where} are unknown: correctness is left out")
    label_map = parse_label_map(label_map)
    how = "names"
    names = list(model)
    if label_map == "index":
        if not is_generic(model):
            raise ValueError(
                f"label map 'index' matches generic LABEL_0, LABEL_1, … by position, but {who}'s labels are "
                f"{_fmt(model)}: they are matched by name (drop the label map, or map names with A=B,…)"
            )
        if len(model) != len(corpus):
            return LabelMatch(
                False, "mismatch", **base, only_corpus=corpus, only_model=model,
                message=(f"label counts differ: {where} has {len(corpus)} labels {_fmt(corpus)}, {who} has "
                         f"{len(model)} {_fmt(model)}; correctness and accuracy are left out"),
            )
        mapping = dict(zip(model, corpus, strict=True))
        return LabelMatch(True, "index", **base, mapping=mapping,
                          message=f"{who}'s generic labels matched to {where} by position (label map 'index'): "
                                  + ", ".join(f"{m}={c}" for m, c in mapping.items()))
    if isinstance(label_map, dict):
        unknown = [k for k in label_map if k not in model]
        if unknown:
            raise ValueError(f"label map names {unknown[0]!r}, which is not a label of {who} {_fmt(model)}")
        corpus_norm = {normalise(c) for c in corpus}
        bad = [v for v in label_map.values() if normalise(v) not in corpus_norm]
        if bad:
            raise ValueError(f"label map maps to {bad[0]!r}, which is not a label of {where} {_fmt(corpus)}")
        names = [label_map.get(n, n) for n in model]
        how = "label_map"
    by_norm: dict[str, str] = {}
    for c in corpus:
        by_norm.setdefault(normalise(c), c)
    mapping = {m: by_norm[normalise(n)] for m, n in zip(model, names, strict=True) if normalise(n) in by_norm}
    covered = {normalise(c) for c in mapping.values()}
    only_corpus = tuple(c for c in corpus if normalise(c) not in covered)
    only_model = tuple(n for n in names if normalise(n) not in by_norm)
    if only_corpus:
        hint = ""
        if is_generic(model) and len(model) == len(corpus):
            hint = (f" (if {model[0]} means {corpus[0]!r} and so on, pass label_map='index' / --label-map index)")
        return LabelMatch(
            False, "mismatch", **base, only_corpus=only_corpus, only_model=only_model,
            message=(f"label sets differ: {where} has {_fmt(corpus)}, {who} predicts {_fmt(model)} "
                     f"(only in the corpus: {_fmt(only_corpus)}; only in the model: {_fmt(only_model)}); "
                     f"correctness and accuracy are left out{hint}"),
        )
    extra = f"; {who} also predicts {_fmt(only_model)}, which is never correct here" if only_model else ""
    via = " through the label map" if how == "label_map" else " by name"
    return LabelMatch(True, how, **base, mapping=mapping, only_model=only_model,
                      message=f"{who}'s labels match {where}{via}{extra}")
