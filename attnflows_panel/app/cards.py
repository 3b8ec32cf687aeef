"""The app's HTML pieces: help text, the model-pair card, the sample card, notices.

Everything that comes from a user, a URL or a corpus (sentences, ids, labels, model names, error
messages) is escaped here with :func:`esc` and shown as text: it never becomes a tag, a link or an
image. Notices are HTML panes of escaped text, not Markdown, so a URL in a message is not linkified.
"""

from __future__ import annotations

import html
from typing import Any

from attnflows_panel import FINETUNED_COLOR, PRETRAINED_COLOR, SHARED_COLOR
from attnflows_panel.app.config import model_label

__all__ = ["HELP_HTML", "esc", "swatch", "notice_html", "pair_html", "sample_html", "probs_html"]

#: background and text colour of a notice, by kind
NOTICE_COLORS = {"info": ("#e7f1fb", "#0b4a75"), "warning": ("#fff4db", "#6b4a00"), "danger": ("#fde8ea", "#8a1020")}


def esc(text: Any) -> str:
    """HTML-escape anything shown to the user (sentences, ids, paths, error messages)."""
    return html.escape(str(text), quote=True)


def notice_html(text: str) -> str:
    """A notice as escaped text, one line per line of ``text``: no markup, no link, no image."""
    return "<br>".join(esc(line) for line in str(text).split("\n"))


def swatch(color: str, width: int = 12) -> str:
    return (f'<span style="display:inline-block;width:{width}px;height:12px;background:{color};'
            f'vertical-align:middle;border-radius:2px"></span>')


HELP_HTML = f"""
<div class="af-help" style="font-size:13px;line-height:1.45">
<p><b>Models.</b> {swatch(PRETRAINED_COLOR)} <b style="color:{PRETRAINED_COLOR}">pre-trained</b> ·
{swatch(FINETUNED_COLOR)} <b style="color:{FINETUNED_COLOR}">fine-tuned</b> ·
{swatch(SHARED_COLOR)} <b style="color:{SHARED_COLOR}">shared by both</b>. The same colours are used in
every view.</p>
<p><b>Attention Graph (§4.1).</b> Levels and layers are numbered from 1, as in the paper: level 1 is the
input, level L+1 the output, where [CLS] is the root. An edge joins token <i>b</i> at level <i>l</i> to token
<i>a</i> at level <i>l</i>+1 when some head of layer <i>l</i> puts more than τ of <i>a</i>'s attention on
<i>b</i>. The graph is traced back from [CLS]; lower τ = more edges.</p>
<p><b>Radial Attention Flow view (§4.3).</b> [CLS] sits in the centre; each ring outwards is one level
further from the output (level 1, the input, outermost). Sentence A runs clockwise, sentence B counter-clockwise; the
black tick marks where they meet. Next to each token, one small <b>head glyph</b> per head: its shade says
how many tokens that head attends to in the level below (light = 1 … dark = 6+). In the combined mode a
glyph is {swatch(PRETRAINED_COLOR, 8)} or {swatch(FINETUNED_COLOR, 8)} when only one model uses the
head, and split {swatch(PRETRAINED_COLOR, 6)}{swatch(FINETUNED_COLOR, 6)} when both do. The
<b>sparkline</b> under a token (§4.3.2) shows where the tokens of the ring inside it (one level up) that
attend to it lie (left = earlier, centre = itself, right = later; height = number of heads, up to 3).
Where a ring has no room for every word, the most important keep their labels; a traced or selected token
shows its full word in a white box, on its label row or just outside it.</p>
<p><b>Sentence view (§4.2).</b> Up to five circles above each token: its influence
I<sub>l</sub> (eq. 4) at the chosen level, rounded up. In the combined mode
{swatch(SHARED_COLOR, 8)} circles are influence both models share, the rest is
{swatch(PRETRAINED_COLOR, 8)} or {swatch(FINETUNED_COLOR, 8)} for the model with more. Click a token to
select it at the chosen level (the level slider); it scrolls when the pair is long.</p>
<p><b>Sentence Context view.</b> Where in the sentence pair the tokens of each ring come from, coloured by
model.</p>
<p><b>Interactions (§4.4).</b> Hover a token: what it depends on (lower levels) and what depends on it
(higher levels). Hover a head glyph: the same through that head only. Click to freeze, shift-click to add
tokens, brush tokens in one ring (box or lasso) for their common dependencies; shift-click a token in a
second ring for the paths and heads between the two. The frozen selection, head, τ, mode and level are kept
in the page's URL: copy it to share the view. The SVG and PNG buttons of the radial view's toolbar save what it
draws, zoom and selection included. Back and Forward step through the samples, freezes, heads and
modes you chose (moving τ or the level changes the current step, it adds none).</p>
<p class="af-numbering"><b>Numbering.</b> Everything you read counts from 1, as the paper does: levels (1 = the
input … L+1 = [CLS]), layers and heads (layer 1 … L, head 1 … H), tokens (token 1 = [CLS]); in the views,
the URL, the heatmaps' axes, the head mask box (<code>6:*</code> = every head of layer 6, <code>5:2-4</code>
= heads 2 to 4 of layer 5) and the head panel.</p>
<p><b>Corpus browser.</b> Every sample's per-head usage in both models is indexed. Similar samples are
searched in the pre-trained, fine-tuned or difference space, or all three, optionally on chosen heads
only (the head mask stays from one sample to the next; the line above the results names it). A typed
pair is searched like a corpus sample. The <i>split</i> column marks the pairs the fine-tuned model was
trained on (<i>training</i>) and the others (<i>held-out</i>); its accuracy is given on the held-out pairs,
with the training pairs' figure beside it.</p>
</div>
"""


def pair_html(pair, index=None, task: str | None = None) -> str:
    """The sidebar's model-pair card: each model by hub name or folder name (the full reference in
    the tooltip is left out too: it can be a server path), the shape, the labels, the corpus."""
    if pair is None:
        return "<i>loading …</i>"
    labels = ", ".join(esc(x) for x in (pair.labels or [])) or "none"
    rows = [
        f'{swatch(PRETRAINED_COLOR)} <span class="af-model-name">{esc(model_label(pair.pretrained_name))}</span>',
        f'{swatch(FINETUNED_COLOR)} <span class="af-model-name">{esc(model_label(pair.finetuned_name))}</span>',
        f"L = {pair.num_layers} layers × H = {pair.num_heads} heads · max {pair.max_length} tokens",
        f"labels: {labels}" + (f" (task {esc(task.upper())})" if task else ""),
    ]
    if index is not None:
        rows.append(f"corpus index: {len(index)} samples (τ = {index.tau:g})")
    return "<div style='font-size:12px;line-height:1.6'>" + "<br>".join(rows) + "</div>"


def probs_html(out, color: str) -> str:
    """One model's class probabilities on one line: a bar for the predicted class (in bold), then the
    others' probabilities."""
    probs = getattr(out, "probs", None)
    if not probs:
        return "<span style='color:#777'>no classification head (a bare pre-trained encoder)</span>"
    label = getattr(out, "label", None)
    parts = []
    for name, p in sorted(probs.items(), key=lambda kv: -kv[1]):
        if name == label:
            parts.insert(0, f"<span style='display:inline-block;width:{int(round(80 * float(p)))}px;height:10px;"
                            f"background:{color};vertical-align:middle;margin:0 4px'></span><b>{float(p):.2f}</b>")
        else:
            parts.append(f"<span style='color:#555'>{esc(name)} {float(p):.2f}</span>")
    return " ".join(parts[:1]) + (" · " + " · ".join(parts[1:]) if len(parts) > 1 else "")


def sample_html(result, sample_id: str, row: dict | None, *, other_task: str | None = None,
                model_task: str | None = None) -> str:
    """The sample card: id and gold label (or "your sentence pair"), the sentences, both predictions.

    ``other_task``: the sample's task when it is not the one the model was fine-tuned on
    (``model_task``); the card then shows no prediction, since the classifier's labels mean nothing
    for it.
    """
    if sample_id:
        head = f"<b>Sample</b> <code class='af-sample-id'>{esc(sample_id)}</code>"
        if row is not None and row.get("label_name") is not None:
            head += f" · gold label: <b class='af-gold'>{esc(row['label_name'])}</b>"
    else:
        head = "<b>Your sentence pair</b> (not in the corpus)"
    notes = []
    if getattr(result, "truncated", False):
        notes.append(f"<span style='color:#b00020'>truncated to {result.n} tokens, the models' maximum</span>")
    if other_task:
        preds = (f"<div class='af-no-prediction' style='margin-top:4px;color:#555'>No prediction: this is a "
                 f"{esc(other_task.upper())} sample and the fine-tuned model was trained on "
                 f"{esc((model_task or 'another task').upper())}.</div>")
    else:
        # one line per model, side by side where the width allows: the card stays short, so that the
        # radial view fits a laptop's window below it
        preds = (
            f"<div style='display:flex;column-gap:28px;flex-wrap:wrap;margin-top:2px'>"
            f"<div><b style='color:{FINETUNED_COLOR}'>fine-tuned</b> predicts "
            f"<b class='af-pred-fine'>{esc(result.finetuned.label)}</b>"
            f"{probs_html(result.finetuned, FINETUNED_COLOR)}</div>"
            f"<div><b style='color:{PRETRAINED_COLOR}'>pre-trained</b>"
            f"{' predicts <b>' + esc(result.pretrained.label) + '</b>' if result.pretrained.label else ':'} "
            f"{probs_html(result.pretrained, PRETRAINED_COLOR)}</div></div>"
        )
    # each sentence on one line (cut with an ellipsis, the whole sentence in its tooltip): the card keeps
    # its height for long pairs, so that the radial view below it stays above the fold; the sentence view
    # beside the radial view shows every token
    line = "white-space:nowrap;overflow:hidden;text-overflow:ellipsis"
    return (
        "<div style='font-size:13px;line-height:1.5'>"
        f"{head} · {result.n} tokens{' · ' + ' · '.join(notes) if notes else ''}"
        f"<div style='{line}' title='{esc(result.sentence_a)}'><span style='color:#666'>A:</span> "
        f"<span class='af-text-a'>{esc(result.sentence_a)}</span></div>"
        f"<div style='{line}' title='{esc(result.sentence_b)}'><span style='color:#666'>B:</span> "
        f"<span class='af-text-b'>{esc(result.sentence_b)}</span></div>"
        f"{preds}</div>"
    )


_WEIGHT_TEXT = {
    "raw": "raw attention",
    "norm": "norm-weighted, ‖α f(x)‖ (Kobayashi et al. 2020)",
    "attattr": "attention attribution (Hao et al. 2021)",
}


def weights_html(result, requested: str) -> str:
    """What the edges of each model's graph are, under the edge weights selector; a model that could not
    have the requested kind (attattr without a classification head) is named with the kind it has."""
    if result is None:
        return ""
    kinds = {name: str(getattr(getattr(result, name, None), "weights", "raw") or "raw")
             for name in ("pretrained", "finetuned")}
    if len(set(kinds.values())) == 1:
        return f"Edges: {esc(_WEIGHT_TEXT.get(kinds['finetuned'], kinds['finetuned']))}."
    parts = []
    for name, label in (("pretrained", "pre-trained"), ("finetuned", "fine-tuned")):
        kind = kinds[name]
        why = " (no classification head: no attribution)" if requested == "attattr" and kind != "attattr" else ""
        parts.append(f"{label}: {esc(_WEIGHT_TEXT.get(kind, kind))}{why}")
    return "Edges, " + "; ".join(parts) + ". The comparison is of two kinds of weights."
