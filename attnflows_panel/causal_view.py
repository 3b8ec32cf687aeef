"""A decoder pair at one root, as a result the Attention Flows views draw (issue #28, 4), and as JSON
(:func:`analysis_dict`, what ``attnflows causal inspect --out`` writes).

The views (:class:`~attnflows_panel.views.attention_flows.AttentionFlowsView`) take a result with
``tokens``, ``segments``, ``cls_position`` (the root) and per model an ``attentions`` array
``[L, H, n, n]``. :func:`view_result` builds one from a :class:`~attnflows_panel.causal.RootAnalysis`:

- ``attentions`` holds, for each model, exactly the weights the causal graph kept
  (:class:`~attnflows_panel.causal_graph.RowEdges`: every ``attn[k, h, a, b] > tau_min`` on the rows of
  the ``tau_min`` graph from the root) and 0 elsewhere. For every ``τ >= tau_min`` and head mask the
  Attention Graph built from it is the causal graph (the rows it can reach are all there, and a weight
  at or below ``tau_min`` is an edge at no such τ); so are its counts (eq. 3), influence (eq. 4),
  glyphs, sparklines and widest paths. The full attention is never computed.
- ``segments`` are all 0: one sequence, whose ring runs clockwise in reading order from the left (the
  layout's sentence A); ``roles`` names every token's segment (system, user, assistant, prompt,
  continuation).
- ``tokens`` are shown in the views' WordPiece convention: a byte-level BPE or SentencePiece token that
  continues a word (no leading space, after a letter or digit) reads ``##piece``, so that the rings join
  it to its word as they join BERT's pieces; a newline reads ``⏎``.
- Each model's ``label`` is its most likely next token at the root and ``probs`` its top tokens.

The dense arrays take ``L · H · n² · 4`` bytes per model; :data:`MAX_VIEW_BYTES` bounds them (a clear
error beyond, pointing at ``attnflows causal inspect``, which keeps the rows sparse at any length).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from attnflows_panel.causal import CausalInputError, Encoded, Prediction, RootAnalysis
from attnflows_panel.causal_graph import RowEdges
from attnflows_panel.models import ModelOutput

__all__ = ["CausalResult", "analysis_dict", "view_result", "display_tokens", "dense_weights", "shown_token",
           "MAX_VIEW_BYTES", "ROLE_COLORS"]

#: the largest dense weight array of one model the view builds (bytes): 512 MiB, e.g. a 12-layer, 12-head
#: model up to about 1,000 tokens, a 30-layer, 9-head one (SmolLM2-135M) up to about 700
MAX_VIEW_BYTES = 512 * 2**20

#: the colour of each segment's role in the app's sequence card (the models keep their own colours)
ROLE_COLORS = {"system": "#5f6b7a", "user": "#1f5fa8", "assistant": "#8a5a00", "prompt": "#333333",
               "continuation": "#a83a1f"}


def dense_weights(edges: RowEdges, max_bytes: int = MAX_VIEW_BYTES) -> np.ndarray:
    """float32 ``[L, H, n, n]``: the weights ``edges`` kept, 0 elsewhere (the module docstring)."""
    L, H, n = edges.L, edges.H, edges.n
    size = 4 * L * H * n * n
    if size > max_bytes:
        raise CausalInputError(
            f"{n} tokens are too many for the view of this {L}-layer, {H}-head model ({size / 2**20:.0f} MiB of "
            f"weights per model; at most {max_bytes / 2**20:.0f} MiB): shorten the prompt, or use "
            "`attnflows causal inspect`, which keeps the graph's rows sparse at any length")
    out = np.zeros((L, H, n, n), dtype=np.float32)
    for k in range(L):
        out[k, edges.h[k].astype(np.intp), edges.a[k], edges.b[k]] = edges.w[k]
    return out


def display_tokens(tokenizer, ids) -> list[str]:
    """The tokens as the views show them (the module docstring): ``##`` on a piece that continues a word."""
    out: list[str] = []
    prev = ""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for i in ids:
        i = int(i)
        if i in special:
            text = tokenizer.convert_ids_to_tokens(i)
            out.append(text)
            prev = ""
            continue
        raw = tokenizer.decode([i], clean_up_tokenization_spaces=False)
        if raw.strip() == "":
            text = "⏎" if "\n" in raw else "␣"
            out.append(text)
            prev = ""
            continue
        starts_word = raw[:1].isspace()
        body = raw.strip().replace("\n", "⏎")
        if not starts_word and prev[-1:].isalnum() and body[:1].isalnum():
            out.append("##" + body)
        else:
            out.append(body)
        prev = raw.rstrip() if not raw[-1:].isspace() else ""
    return out


def _output(edges: RowEdges, pred: Prediction, max_bytes: int) -> ModelOutput:
    top = pred.top
    probs = {str(t): float(p) for t, _, p in top}
    return ModelOutput(attentions=dense_weights(edges, max_bytes), label=str(top[0][0]) if top else None,
                       probs=probs)


@dataclass(frozen=True, eq=False)
class CausalResult:
    """One sequence through a decoder pair, at one root, in the shape the views take (module docstring)."""

    encoded: Encoded
    analysis: RootAnalysis
    tokens: list[str]
    segments: list[int]
    roles: list[str]
    pretrained: ModelOutput = field(repr=False)
    finetuned: ModelOutput = field(repr=False)
    text: str = ""
    truncated: bool = False

    @property
    def n(self) -> int:
        return len(self.tokens)

    @property
    def root(self) -> int:
        return self.analysis.root

    @property
    def cls_position(self) -> int:
        """The root of the Attention Graph (level L): the name the views read, as for a BERT pair's [CLS]."""
        return self.analysis.root

    @property
    def input_ids(self) -> list[int]:
        return list(self.encoded.ids)

    @property
    def sentence_a(self) -> str:
        """The sequence's text (what an export's caption prints)."""
        return self.text

    @property
    def sentence_b(self) -> str:
        return ""

    @property
    def role_bands(self) -> list[tuple[str, int, int, str]]:
        """The segments in order, ``(label, start, end, colour)``: the sentence view puts each on its own line
        and underlines its tokens in its role's colour (:data:`ROLE_COLORS`)."""
        return [(label, int(s), int(e), ROLE_COLORS.get(label, "#333333")) for label, s, e in self.encoded.segments]

    @property
    def kl(self) -> float:
        return self.analysis.kl

    @property
    def top_tokens(self) -> dict[str, list[tuple[str, float]]]:
        """Each model's top next tokens at the root, as shown (``(token, probability)``, most likely first)."""
        return {which: list(getattr(self, which).probs.items()) for which in ("pretrained", "finetuned")}


def view_result(encoded: Encoded, analysis: RootAnalysis, tokenizer, max_bytes: int = MAX_VIEW_BYTES,
                same_sequence: CausalResult | None = None) -> CausalResult:
    """The views' result for ``analysis`` (a :meth:`~attnflows_panel.causal.CausalPair.analyse` of ``encoded``).

    ``same_sequence``: a result for the same ``encoded`` at another root, whose shown tokens and text are
    taken as they are instead of decoding every token again (they do not depend on the root)."""
    if same_sequence is not None and same_sequence.encoded is not encoded:
        raise ValueError("same_sequence is a result for another sequence")
    if same_sequence is not None:
        tokens, text = same_sequence.tokens, same_sequence.text
    else:
        tokens = display_tokens(tokenizer, encoded.ids)
        text = tokenizer.decode(list(encoded.ids), clean_up_tokenization_spaces=False)
    preds = {which: Prediction(tuple((shown_token(tokenizer, i, t), i, p) for t, i, p in getattr(analysis, which).top))
             for which in ("pretrained", "finetuned")}
    return CausalResult(
        encoded=encoded, analysis=analysis, tokens=tokens, segments=[0] * len(tokens), roles=encoded.segment_of(),
        pretrained=_output(analysis.edges["pretrained"], preds["pretrained"], max_bytes),
        finetuned=_output(analysis.edges["finetuned"], preds["finetuned"], max_bytes), text=text)


def shown_token(tokenizer, i: int, token: str = "") -> str:
    """A predicted token as text: decoded, with a leading space shown as ``␣`` and a newline as ``⏎``."""
    text = tokenizer.decode([int(i)], clean_up_tokenization_spaces=False)
    if not text:
        return token
    return text.replace("\n", "⏎").replace(" ", "␣", 1) if text[:1] == " " else text.replace("\n", "⏎")


def analysis_dict(encoded: Encoded, analysis: RootAnalysis, tau: float, alpha: float = 0.5,
                  names: tuple[str, str] | None = None) -> dict:
    """A JSON-ready summary: tokens, segments, the root, both predictions and KL, and each model's graph at
    ``tau`` (levels, per-layer edges ``[a, b, head, weight]``, counts of eq. 3 and influence of eq. 4 for the
    tokens in the graph). Layers are 0-based (HF order), level ``L`` holds the root."""

    def pred(p: Prediction) -> list[dict]:
        return [{"token": t, "id": i, "prob": round(q, 6)} for t, i, q in p.top]

    out: dict = {
        "tokens": list(encoded.tokens),
        "segments": [{"label": s, "start": a, "end": b} for s, a, b in encoded.segments],
        "prompt_len": encoded.prompt_len,
        "root": analysis.root,
        "tau": tau,
        "kl_finetuned_pretrained": analysis.kl,
        "kl_pretrained_finetuned": analysis.kl_reverse,
        "models": {},
    }
    for which, p in (("pretrained", analysis.pretrained), ("finetuned", analysis.finetuned)):
        g = analysis.graph(which, tau)
        infl = g.influence(alpha)
        edges = []
        for k in range(g.L):
            a, b, h, w = g.edge_arrays(k)
            edges.append([[int(x), int(y), int(z), round(float(v), 5)]
                          for x, y, z, v in zip(a, b, h, w, strict=True)])
        member = np.flatnonzero(g.member[:-1].any(axis=0))
        out["models"][which] = {
            "name": None if names is None else names[0 if which == "pretrained" else 1],
            "top": pred(p),
            "levels": [lv.tolist() for lv in g.levels],
            "edges": edges,
            "counts": {int(t): g.counts[:, t].tolist() for t in member},
            "influence": {int(t): [round(float(x), 6) for x in infl[:, t]] for t in member},
        }
    return out
