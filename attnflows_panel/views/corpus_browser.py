"""Corpus browser: the indexed corpus as a table, similar samples, head-usage heatmap and a signature map.

A :class:`CorpusBrowser` (``pn.viewable.Viewer``) over a :class:`~attnflows_panel.index.SignatureIndex`:

- **Corpus table** (Tabulator, paged on the server): filters by gold label, fine-tuned prediction,
  correct / incorrect, and a text search over both sentences. Picking a row sets ``selected_id``; the
  app watches that parameter and loads the sample into the flow view.
- **Similar samples** for the current sample (``selected_id``, or ``result``: a PairResult of a pair
  that is not in the index), in the space chosen in the UI (pre-trained, fine-tuned, their difference,
  or all three) and restricted to the heads of the head mask (``layer:head`` text counted from 1, as
  every number the user reads is: :func:`parse_heads`; or tap cells of the heatmap). The line above the
  results names the mask, which stays from one sample to the next. Each result shows its score and its
  sentences; picking one asks the owner of the current sample to show it (``on_pick``).
- **Training pairs** (``training``): the pairs the fine-tuned model was trained on are marked in a
  ``split`` column and a filter, and the accuracy is given on the held-out pairs with the training
  pairs' figure beside it (:mod:`attnflows_panel.app.training`).
- **Heatmap** (a HoloViews ``HeatMap`` with a ``Tap`` stream) [layers × heads] of the mean
  fine-minus-pre head usage u_fine - u_pre
  (:mod:`attnflows_panel.signatures`) over the results, or over the filtered corpus: purple where the
  fine-tuned model's graph uses a head more, turquoise where the pre-trained one does. Heads in the
  mask are outlined in orange.
- **Signature map** (HoloViews ``Points`` with a ``Tap`` stream; rasterized past a few thousand
  samples): a 2-D PCA of all signatures (numpy SVD, :meth:`SignatureIndex.pca`); the current
  sample is marked in orange, its neighbours in purple.

The browser only draws what the index answers; it holds no analysis of its own. Its query state
(current sample, space, head mask, k, filters) is its own parameters, and its widgets are made from
them (``from_param``).

**Task scope.** ``task`` (e.g. ``"mrpc"``, the task the fine-tuned model was trained on) keeps the
browser to the samples of that task: a corpus of several tasks (the bundled demo set has MRPC, RTE
and QNLI pairs) otherwise shows predictions of a classifier for pairs it was never trained on, and
mixes the tasks' labels in one filter. :func:`row_tasks` says where each row's task comes from.

**Document changes.** The browser changes no Bokeh model itself: its tables, panes and widgets are
Panel's, and its plots are HoloViews DynamicMaps that redraw when their parameters change, so Panel
and HoloViews send every change under the document's lock. Errors of the Tap streams' subscribers go
to ``pn.config.exception_handler`` (the app shows them).
Ids, sentences and messages are shown as escaped text in HTML panes, never as Markdown.
"""

from __future__ import annotations

import contextlib
import functools
import html
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param

from attnflows_panel import FINETUNED_COLOR, PRETRAINED_COLOR, SHARED_COLOR, signatures
from attnflows_panel.head_spec import format_heads, parse_heads
from attnflows_panel.views.attention_flows import reported

__all__ = ["CorpusBrowser", "diverging_palette", "TABLE_COLUMNS", "PROMPT_COLUMNS", "row_tasks", "task_rows"]

ANY = "any"
HELD_OUT = "held-out"
TRAINING = "training"
#: corpus-table columns (the metadata's), with their titles
TABLE_COLUMNS = {
    "id": "id",
    "sentence_a": "sentence A",
    "sentence_b": "sentence B",
    "label_name": "label",
    "pred_fine": "fine-tuned",
    "correct_fine": "correct",
    "split": "split",
    "n_tokens": "tokens",
}
#: the corpus table's columns for an index of a decoder pair's prompts (``attnflows causal index``): the prompt
#: (a chat on one line) and each model's most likely next token at its last token
PROMPT_COLUMNS = {
    "id": "id",
    "sentence_a": "prompt",
    "next_pre": "base: next",
    "next_fine": "fine-tuned: next",
    "n_tokens": "tokens",
}


def result_columns(columns: dict[str, str]) -> dict[str, str]:
    """The similar samples' columns: their rank and score, and the corpus table's less the token count."""
    return {"rank": "#", "score": "score", **{c: t for c, t in columns.items() if c != "n_tokens"}}


RESULT_COLUMNS = result_columns(TABLE_COLUMNS)
#: fixed widths of the short columns; the sentences share what is left of the table's width (Tabulator's
#: fit_columns), so no table scrolls sideways, and a cut sentence shows whole in its tooltip
COLUMN_WIDTHS = {"rank": 44, "score": 82, "id": 120, "label_name": 112, "pred_fine": 112, "correct_fine": 88,
                 "split": 80, "n_tokens": 82, "next_pre": 130, "next_fine": 150}
TABLE_CONFIG = {"columnDefaults": {"tooltip": True, "headerTooltip": True}}
#: the tables' text at the page's size (Tabulator's own default is larger), rows one line high
TABLE_STYLE = (":host .tabulator {font-size: 13px} :host .tabulator-row .tabulator-cell {padding: 5px 6px} "
               ":host .tabulator .tabulator-header .tabulator-col {font-size: 12px} "
               ":host .tabulator .tabulator-header .tabulator-col .tabulator-col-content {padding: 6px 4px}")
ROW_PX, HEADER_PX = 40, 48  # a table row's and the header's height: a short result list gets a short table
PAGER_PX = 56  # the corpus table's pagination bar
PAGE_ROWS = 10  # the corpus table's page: all of it in view, no scrolling inside the table
#: the results' score bar: the fine-tuned purple, lightened (#7b3fa0 at 35 % over white)
SCORE_BAR_COLOR = "#d1bcde"
MAP_POINTS = 5000  # past this many samples the map's corpus layer is rasterized (or decimated)
#: the signature map's options that belong to the overlay (the rest sits on its corpus layer)
#: the legend sits under the frame, on one row: it covers no point (inside, it hid some, and a click there toggled it)
MAP_OPTIONS = dict(legend_position="bottom", legend_cols=3, active_tools=["wheel_zoom"])
BACKGROUND_COLOR = "#b8b8b8"
#: the map's point columns, and what a point's tooltip says (no PCA coordinates: they mean nothing to a reader)
MAP_COLUMNS = ("x", "y", "id", "label", "pred", "text")
MAP_TOOLTIPS = [("sample", "@id"), ("gold label", "@label"), ("fine-tuned predicts", "@pred"), ("sentence A", "@text")]


@functools.lru_cache(maxsize=8)
def _demo_tasks() -> dict[str, str]:
    from attnflows_panel.corpus import load_corpus

    ds = load_corpus("demo")
    return {str(i): str(t) for i, t in zip(ds["id"], ds["task"], strict=False)}


def row_tasks(index: Any) -> np.ndarray | None:
    """The task of each row of ``index`` (an array of "mrpc" / "rte" / "qnli"), or None when unknown.

    From the metadata's ``task`` column when it has one, else the index's own task (an index built
    for one task), else, for an index of the bundled demo set, the demo set's task of each id.
    """
    md = index.metadata
    if "task" in md.columns:
        return md["task"].astype(str).str.lower().to_numpy()
    manifest = getattr(index, "manifest", None) or {}
    task = manifest.get("task")
    if isinstance(task, str) and task:
        return np.full(len(md), task.lower(), dtype=object)
    if manifest.get("data") == "demo":
        known = _demo_tasks()
        return np.array([known.get(str(i)) for i in md["id"]], dtype=object)
    return None


def task_rows(index: Any, task: str | None) -> np.ndarray | None:
    """The rows of ``index`` whose task is ``task`` (None: no scope, all rows)."""
    if not task:
        return None
    tasks = row_tasks(index)
    if tasks is None:
        return None
    return np.flatnonzero(tasks == task.lower())


def _many_points(points):
    """A layer of many points: rasterized with datashader when it is installed, else decimated to the
    points in the current view (both are HoloViews operations that follow zoom and pan)."""
    try:
        from holoviews.operation.datashader import rasterize

        return rasterize(points).opts(cmap=[BACKGROUND_COLOR, "#555555"], cnorm="eq_hist")
    except ImportError:
        from holoviews.operation import decimate

        return decimate(points, max_samples=MAP_POINTS)


def _hex_to_rgb(color: str) -> np.ndarray:
    color = color.lstrip("#")
    return np.array([int(color[i:i + 2], 16) for i in (0, 2, 4)], dtype=float)


def diverging_palette(n: int = 255, low: str = PRETRAINED_COLOR, high: str = FINETUNED_COLOR,
                      mid: str = "#ffffff") -> list[str]:
    """``n`` colours from ``low`` (turquoise, pre-trained) through white to ``high`` (purple, fine-tuned)."""
    lo, hi, md = _hex_to_rgb(low), _hex_to_rgb(high), _hex_to_rgb(mid)
    out = []
    for t in np.linspace(-1.0, 1.0, n):
        rgb = md + (hi - md) * t if t >= 0 else md + (lo - md) * (-t)
        out.append("#{:02x}{:02x}{:02x}".format(*tuple(int(round(v)) for v in rgb)))
    return out


def table_height(rows: int, pager: bool = True) -> int:
    """A table's height for ``rows`` rows: a page of them at most (beyond, the corpus table pages and the
    results table scrolls), one at least, and the corpus table's pager."""
    return HEADER_PX + ROW_PX * min(max(int(rows), 1), PAGE_ROWS) + (PAGER_PX if pager else 0)


class CorpusBrowser(pn.viewable.Viewer):
    """Browse and search an indexed corpus by attention head usage (see the module docstring)."""

    index = param.Parameter(default=None, doc="the SignatureIndex to browse")
    task = param.String(default=None, allow_None=True,
                        doc="keep to the samples of this task (the fine-tuned model's), None = all samples")
    selected_id = param.String(default=None, allow_None=True, allow_refs=True, doc=(
        "id of the current sample: a reference to its owner's (an app's), or set by a pick when the "
        "browser stands alone"))
    result = param.Parameter(default=None, allow_refs=True, doc=(
        "PairResult of a current pair that is not in the index (used when selected_id is None)"))
    on_pick = param.Callable(default=None, doc=(
        "called with the id of a sample the user picks (a row, a similar sample, a map point); None: the "
        "pick becomes selected_id here"))
    training = param.Parameter(default=None, doc=(
        "bool per index row: the pairs the fine-tuned model was trained on (None: unknown); marked in the "
        "table, a filter, and kept apart in the accuracy (attnflows_panel.app.training)"))

    space = param.Selector(default="all", objects=list(signatures.SPACES), doc="search space: pre, fine, diff or all")
    heads = param.String(default="", doc=(
        'head mask as the user reads it, 1-based "layer:head,..." with * and ranges, e.g. "6:*,5:3" '
        '("" = all heads); see parse_heads'))
    k = param.Integer(default=10, bounds=(1, 200), doc="number of similar samples")
    exclude_self = param.Boolean(default=True, doc="leave the current sample out of its similar samples")
    within_filter = param.Boolean(default=False, doc="search only among the samples the table's filters keep")

    label = param.Selector(default=ANY, objects=[ANY], doc="gold-label filter (label name or 'any')")
    prediction = param.Selector(default=ANY, objects=[ANY], doc="fine-tuned prediction filter (label name or 'any')")
    correctness = param.Selector(default=ANY, objects=[ANY, "correct", "incorrect"],
                                 doc="fine-tuned correctness filter")
    split = param.Selector(default=ANY, objects=[ANY, HELD_OUT, TRAINING], doc=(
        "held-out pairs, or the pairs the fine-tuned model was trained on (needs training)"))
    search = param.String(default="", doc="text that a sentence must contain")

    columns = param.Dict(default=None, constant=True, doc=(
        "the corpus table's columns (metadata column -> title); None: TABLE_COLUMNS, or PROMPT_COLUMNS for an "
        "index of prompts (its manifest's model_kind is causal)"))

    heatmap_scope = param.Selector(default="results", objects=["results", "filtered corpus"],
                                   doc="the samples the heatmap averages over")

    results = param.DataFrame(default=None, doc="the similar samples of the current sample (output)")
    message = param.String(default="", doc="why there are no results, if so (output)")

    def __init__(self, index: Any = None, **params: Any) -> None:
        super().__init__(index=index, **params)
        prompts = index is not None and (getattr(index, "manifest", None) or {}).get("model_kind") == "causal"
        #: what a sample is called: a sentence pair, or a decoder pair's prompt
        self.noun = "prompt" if prompts else "pair"
        self._table_columns = dict(self.columns or (PROMPT_COLUMNS if prompts else TABLE_COLUMNS))
        self._result_columns = result_columns(self._table_columns)
        self._filtered_rows = np.zeros(0, dtype=np.int64)
        self._build_widgets()
        #: the rows of the task in scope (None: all rows); kept by _on_index
        self._scope: np.ndarray | None = task_rows(self.index, self.task) if self.index is not None else None
        self._build_figures()
        self._on_index()
        self.param.watch(self._on_index, ["index", "task", "training"])
        self.param.watch(self._on_filters, ["label", "prediction", "correctness", "search", "split"])
        self.param.watch(self._on_query, ["selected_id", "result", "space", "heads", "k", "exclude_self",
                                          "within_filter"])

    # ------------------------------------------------------------------ widgets

    def _build_widgets(self) -> None:
        self._label_w = pn.widgets.Select.from_param(self.param.label, label="Label", width=150)
        self._pred_w = pn.widgets.Select.from_param(self.param.prediction, label="Fine-tuned prediction", width=150)
        self._correct_w = pn.widgets.Select.from_param(self.param.correctness, label="Correct", width=110)
        self._split_w = pn.widgets.Select.from_param(self.param.split, label="Split", width=110)
        self._search_w = pn.widgets.TextInput.from_param(self.param.search, label="Search text",
                                                         placeholder="words in the prompt" if self.noun == "prompt"
                                                         else "words in either sentence",
                                                         width=220)
        self._count = pn.pane.HTML("", margin=(0, 10), css_classes=["af-corpus-count"])
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(columns=list(self._table_columns)),
            titles=self._table_columns,
            pagination="remote",
            page_size=PAGE_ROWS,
            selectable=1,
            disabled=True,
            show_index=False,
            layout="fit_columns",
            sizing_mode="stretch_width",
            height=table_height(PAGE_ROWS),
            widths={c: w for c, w in COLUMN_WIDTHS.items() if c in self._table_columns},
            formatters={"correct_fine": {"type": "tickCross", "allowEmpty": True}},
            configuration=TABLE_CONFIG,
            stylesheets=[TABLE_STYLE],
        )
        self.table.param.watch(self._on_table_pick, "selection")
        self.table.on_click(lambda event: self._pick_table_row(event.row))  # see the results table

        self._space_w = pn.widgets.RadioButtonGroup.from_param(self.param.space)
        self._heads_w = pn.widgets.TextInput.from_param(self.param.heads, label="Heads (layer:head, from 1)",
                                                        placeholder="all heads, e.g. 6:*,5:3", width=220)
        self._clear_heads = pn.widgets.Button(label="all heads", width=90, margin=(24, 5, 5, 5))
        self._clear_heads.on_click(lambda _event: setattr(self, "heads", ""))
        self._k_w = pn.widgets.IntInput.from_param(self.param.k, label="k", width=80)
        self._within_w = pn.widgets.Checkbox.from_param(self.param.within_filter, label="only filtered samples")
        self._scope_w = pn.widgets.RadioButtonGroup.from_param(self.param.heatmap_scope)
        self._status = pn.pane.HTML("", visible=False, margin=(0, 5), css_classes=["af-browser-message"],
                                    styles={"background": "#fff4db", "color": "#6b4a00", "padding": "6px 10px",
                                            "border-radius": "4px"})
        self._current = pn.pane.HTML("", margin=(0, 10), css_classes=["af-current"])
        self.results_table = pn.widgets.Tabulator(
            pd.DataFrame(columns=list(self._result_columns)),
            titles=self._result_columns,
            selectable=False,  # a pick replaces these rows at once: a selection would have nothing to mark
            disabled=True,
            show_index=False,
            layout="fit_columns",
            sizing_mode="stretch_width",
            height=table_height(0, pager=False),
            widths=dict(COLUMN_WIDTHS),
            configuration=TABLE_CONFIG,
            stylesheets=[TABLE_STYLE],
            formatters={
                # a light bar under dark figures: the score stays legible over the bar
                "score": {"type": "progress", "min": 0, "max": 1, "legend": True, "color": SCORE_BAR_COLOR,
                          "legendColor": "#222222"},
                "correct_fine": {"type": "tickCross", "allowEmpty": True},
            },
        )
        # a click on a row is a pick: Panel's Tabulator reports every cell click (a row *selection* it
        # drops when the click comes while the table redraws new rows)
        self.results_table.on_click(lambda event: self._pick_result_row(event.row))

    def _build_figures(self) -> None:
        """The head heatmap and the signature map: overlays of HoloViews DynamicMaps, one per layer of
        :meth:`heat_element` and :meth:`map_element` (each redrawn when the parameters it depends on
        change), with Tap streams for clicks (a Tap stream, since Selection1D does not fire on every
        element: holoviews issue #2735)."""
        import holoviews as hv

        # one DynamicMap per layer, overlaid: a Tap stream whose source is a DynamicMap that returns an
        # Overlay is never linked to the plot (holoviews issue #3533), so no click would arrive
        heat = hv.DynamicMap(self.heat_layer)
        self.heat_plot = heat * hv.DynamicMap(self.heat_boxes)
        corpus = hv.DynamicMap(self.map_corpus)
        if self.index is not None and len(self._map_rows()) > MAP_POINTS:  # as map_element decides
            corpus = _many_points(corpus)
        self.map_plot = (corpus * hv.DynamicMap(self.map_similar) * hv.DynamicMap(self.map_current)).opts(**MAP_OPTIONS)
        #: a tap on the heatmap: toggles that head in the head mask
        self.heat_tap = hv.streams.Tap(source=heat, transient=True)
        self.heat_tap.add_subscriber(reported(self._on_heat_tap))
        #: a tap on the map: the nearest sample becomes current
        self.map_tap = hv.streams.Tap(source=corpus, transient=True)
        self.map_tap.add_subscriber(reported(self._on_map_tap))

    # ------------------------------------------------------------------ reactions

    def _on_index(self, *_: Any) -> None:
        idx = self.index
        if idx is None:
            self.table.value = pd.DataFrame(columns=list(self._table_columns))
            self.param.label.objects = [ANY]
            self.param.prediction.objects = [ANY]
            self._set_message("no index loaded")
            return
        self._scope = task_rows(idx, self.task)
        md = idx.metadata if self._scope is None else idx.metadata.iloc[self._scope]
        labels = sorted({str(x) for x in md["label_name"].dropna().unique()})
        preds = sorted({str(x) for x in md["pred_fine"].dropna().unique()})
        self.param.label.objects = [ANY, *labels]
        self.param.prediction.objects = [ANY, *preds]
        if self.label not in self.param.label.objects:
            self.label = ANY
        if self.prediction not in self.param.prediction.objects:
            self.prediction = ANY
        # correctness only where the model's and the corpus's labels match (index.label_reconciliation):
        # never a "correct" filter over predictions from another label space
        scored = bool(md["correct_fine"].notna().any())
        self._correct_w.disabled = not scored
        self._correct_w.description = (None if scored else
                                       (idx.label_mismatch or "no sample of this corpus has a correctness flag")
                                       + ": the correct filter is off")
        if not scored and self.correctness != ANY:
            self.correctness = ANY
        known = self.training is not None
        self._split_w.disabled = not known
        self._split_w.description = None if known else "which pairs the fine-tuned model was trained on is unknown"
        if not known and self.split != ANY:
            self.split = ANY
        self._on_filters()
        self._on_query()

    def filters(self) -> dict[str, Any]:
        """The table's filters in :meth:`SignatureIndex.select` form."""
        out = {
            "label": None if self.label in (ANY, "", None) else self.label,
            "prediction": None if self.prediction in (ANY, "", None) else self.prediction,
            "correct": {ANY: None, "correct": True, "incorrect": False}[self.correctness],
            "text": self.search.strip() or None,
        }
        rows = self._scope
        if self.split != ANY and self.training is not None:
            train = np.flatnonzero(np.asarray(self.training, dtype=bool) == (self.split == TRAINING))
            rows = train if rows is None else np.intersect1d(rows, train)
        if rows is not None:
            out["rows"] = rows
        return out

    def filtered_rows(self) -> np.ndarray:
        """Index rows that the table's filters keep, in corpus order."""
        return self._filtered_rows

    def _on_filters(self, *_: Any) -> None:
        idx = self.index
        if idx is None:
            return
        mask = idx.select(self.filters())
        rows = np.arange(len(idx)) if mask is None else np.flatnonzero(mask)
        self._filtered_rows = rows
        self.table.selection = []
        # a page's worth of rows high, or fewer for a short list (no blank rows below a 6-prompt index)
        self.table.param.update(value=self.table_frame(rows), height=table_height(len(rows)))
        total = len(idx) if self._scope is None else len(self._scope)
        scope = f" of task {html.escape(self.task.upper())}" if self._scope is not None else ""
        self._count.object = f"<b>{len(rows)}</b> of {total} samples{scope}" + self._accuracy_html()
        if self.within_filter:
            self._on_query()

    def table_frame(self, rows: np.ndarray) -> pd.DataFrame:
        """The table's columns (``columns``) for index ``rows``: the metadata's, and ``split`` (training /
        held-out; empty when unknown) where the columns have it."""
        md = self.index.metadata.iloc[rows]
        df = md[[c for c in self._table_columns if c in md.columns]].reset_index(drop=True)
        if "split" in self._table_columns:
            df.insert(list(self._table_columns).index("split"), "split", self._split_names(rows))
        return df

    def _split_names(self, rows: np.ndarray) -> list[str]:
        if self.training is None:
            return [""] * len(rows)
        train = np.asarray(self.training, dtype=bool)[np.asarray(rows, dtype=np.int64)]
        return [TRAINING if t else HELD_OUT for t in train]

    def accuracy(self):
        """The fine-tuned model's accuracy on the task in scope: held-out pairs and training pairs apart
        (:class:`attnflows_panel.app.training.AccuracySplit`)."""
        from attnflows_panel.app.training import accuracy_split

        return accuracy_split(self.index.metadata["correct_fine"], self.training, self._scope)

    def _accuracy_html(self) -> str:
        from attnflows_panel.app.training import accuracy_text

        text = accuracy_text(self.accuracy())
        return f' · <span class="af-accuracy">{html.escape(text)}</span>' if text else ""

    def pick(self, sample_id: str) -> None:
        """A user's pick: the owner of the current sample is asked to show it (``on_pick``); a browser
        that stands alone makes it current itself."""
        if self.on_pick is not None:
            self.on_pick(str(sample_id))
        else:
            self.selected_id = str(sample_id)

    def _on_table_pick(self, event: Any) -> None:
        if event.new:
            self._pick_table_row(event.new[0])

    def _pick_table_row(self, i: int | None) -> None:
        value = self.table.value
        if i is not None and 0 <= i < len(value):
            self.pick(str(value["id"].iloc[i]))

    def _pick_result_row(self, i: int | None) -> None:
        if self.results is not None and i is not None and 0 <= i < len(self.results):
            # the pick replaces this very table's rows: done on the next tick (pn.state.execute), after
            # Panel has finished the table's event; changed from inside it, the page kept the old rows
            # while the server had the new ones
            pn.state.execute(functools.partial(self.pick, str(self.results["id"].iloc[i])), schedule=True)

    def _set_message(self, text: str) -> None:
        self.message = text
        self._status.object = html.escape(text)  # messages can quote user input (ids, search text)
        self._status.visible = bool(text)

    def _heads_mask(self) -> np.ndarray | None:
        """The head mask [L, H] (0-based, as the index takes it) of the 1-based text in the box."""
        if self.index is None:
            return None
        return parse_heads(self.heads, self.index.num_layers, self.index.num_heads)

    def _on_query(self, *_: Any) -> None:
        idx = self.index
        empty = pd.DataFrame(columns=list(dict.fromkeys(["rank", "id", "score", "row", *self._table_columns])))
        if idx is None:
            return
        query = {}
        if self.selected_id is not None:
            query = {"sample_id": self.selected_id}
            current = f"<b>current:</b> <code>{html.escape(str(self.selected_id))}</code>"
        elif self.result is not None:
            query = {"result": self.result}
            current = f"<b>current:</b> a {self.noun} that is not in the index"
        else:
            current = "pick a sample in the table"
        self._current.object = current + self._mask_note()
        try:
            if not query:
                raise _NoQuery("pick a sample in the table to see similar samples")
            if self.within_filter:
                filters = {"rows": self._filtered_rows}
            elif self._scope is not None:
                filters = {"rows": self._scope}  # similar samples of the model's task only
            else:
                filters = None
            df = idx.query(**query, space=self.space, heads=self._heads_mask(), k=self.k, filters=filters,
                           exclude_self=self.exclude_self)
            self._set_message("" if len(df) else "no sample matches the filters")
        except _NoQuery as exc:
            df = empty
            self._set_message(str(exc))
        except ValueError as exc:  # unknown id, bad head spec, a zero signature: say why
            df = empty
            self._set_message(str(exc))
        self.results = df
        cols = self._result_columns
        shown = df[[c for c in cols if c in df.columns]].copy()
        if "score" in shown:  # the bar's legend: 3 decimals (self.results keeps the full scores)
            shown["score"] = shown["score"].astype(float).round(3)
        if "row" in df and "split" in cols:
            shown["split"] = self._split_names(df["row"].to_numpy(dtype=np.int64))
            shown = shown[[c for c in cols if c in shown.columns]]
        # as tall as its rows (a one-row result leaves no blank), at most 10 rows before it scrolls
        self.results_table.param.update(value=shown, height=table_height(len(shown), pager=False))

    def _mask_note(self) -> str:
        """Says that the search is restricted to some heads (the mask stays from one sample to the next)."""
        try:
            mask = self._heads_mask()
        except ValueError:
            return ""
        if mask is None:
            return ""
        return (f' · <span class="af-mask-note" style="color:{SHARED_COLOR}">searching on {int(mask.sum())} of '
                f"{mask.size} heads: {html.escape(format_heads(mask))}</span>")

    # ------------------------------------------------------------------ heatmap

    def heatmap_rows(self) -> np.ndarray:
        """The rows the heatmap averages over: the results, or the filtered corpus."""
        if self.heatmap_scope == "filtered corpus":
            return self._filtered_rows
        if self.results is None or not len(self.results):
            return np.zeros(0, dtype=np.int64)
        return self.results["row"].to_numpy(dtype=np.int64)

    def heatmap_values(self) -> np.ndarray:
        """Mean u_fine - u_pre [L, H] over :meth:`heatmap_rows`."""
        return self.index.head_usage(self.heatmap_rows(), block="diff")

    @param.depends("index", "task", "results", "heads", "heatmap_scope", "label", "prediction", "correctness",
                   "search")
    def heat_element(self):
        """The heatmap of :meth:`heatmap_values` [layers × heads] (a ``hv.HeatMap``, :meth:`heat_layer`),
        the heads of the mask outlined in the shared colour (``hv.Rectangles``, :meth:`heat_boxes`)."""
        return self.heat_layer() * self.heat_boxes()

    @param.depends("index", "task", "results", "heads", "heatmap_scope", "label", "prediction", "correctness",
                   "search")
    def heat_layer(self):
        """The heatmap of :meth:`heatmap_values` alone, with the plot's options (title, size, ticks)."""
        import holoviews as hv

        idx = self.index
        L, H = (idx.num_layers, idx.num_heads) if idx is not None else (1, 1)
        values = self.heatmap_values() if idx is not None else np.zeros((L, H))
        in_mask = self._mask_or_empty(L, H)
        layer, head = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
        # the cells sit at 0-based positions (a tap rounds to them); every label the user reads counts from 1
        data = pd.DataFrame({"head": head.ravel(), "layer": layer.ravel(),
                             "value": np.round(values.ravel().astype(float), 4),
                             "layer_no": layer.ravel() + 1, "head_no": head.ravel() + 1,
                             # object dtype: HoloViews reshapes a HeatMap's value columns (an Arrow string cannot)
                             "masked": pd.Series(np.where(in_mask.ravel(), "yes", "no"), dtype=object)})
        bound = float(max(np.abs(values).max(), 1e-3))
        n = len(self.heatmap_rows()) if idx is not None else 0
        return hv.HeatMap(data, kdims=["head", "layer"], vdims=["value", "layer_no", "head_no", "masked"]).opts(
            cmap=diverging_palette(), clim=(-bound, bound), colorbar=True, clabel="u_fine − u_pre",
            tools=["tap"], nonselection_alpha=1.0, selection_alpha=1.0,
            hover_tooltips=[("layer", "@layer_no"), ("head", "@head_no"),
                            ("fine − pre usage", "@value{0.000}"), ("in the head mask", "@masked")],
            title=f"mean fine − pre head usage over {n} {self.heatmap_scope}", width=420, height=330,
            xlabel="head", ylabel="layer", toolbar=None, show_grid=False,
            xticks=[(h, str(h + 1)) for h in range(H)], yticks=[(k, str(k + 1)) for k in range(L)],
        )

    @param.depends("index", "heads")
    def heat_boxes(self):
        """The heads of the mask, outlined in the shared colour (``hv.Rectangles``)."""
        import holoviews as hv

        idx = self.index
        L, H = (idx.num_layers, idx.num_heads) if idx is not None else (1, 1)
        in_mask = self._mask_or_empty(L, H)
        boxes = [(h - 0.47, lv - 0.47, h + 0.47, lv + 0.47) for lv, h in zip(*np.nonzero(in_mask), strict=True)]
        return hv.Rectangles(boxes).opts(fill_alpha=0.0, line_color=SHARED_COLOR, line_width=2.5)

    def _mask_or_empty(self, L: int, H: int) -> np.ndarray:
        """The head mask typed in the box, or no head (also when the box holds a bad mask)."""
        try:
            mask = self._heads_mask()
        except ValueError:
            mask = None
        return np.zeros((L, H), dtype=bool) if mask is None else mask

    def toggle_head(self, layer: int, head: int) -> None:
        """Add (layer, head) to the head mask, or take it out (tapping a heatmap cell does this)."""
        idx = self.index
        if idx is None:
            return
        try:
            mask = self._heads_mask()
        except ValueError:
            mask = None
        mask = np.zeros((idx.num_layers, idx.num_heads), dtype=bool) if mask is None else mask.copy()
        mask[int(layer), int(head)] = not mask[int(layer), int(head)]
        self.heads = format_heads(mask) if mask.any() else ""

    def _on_heat_tap(self, x=None, y=None) -> None:
        idx = self.index
        if idx is None or x is None or y is None:
            return
        head, layer = int(round(float(x))), int(round(float(y)))
        if 0 <= layer < idx.num_layers and 0 <= head < idx.num_heads:
            # redraws this very plot: on the next tick, after HoloViews has finished the tap event
            pn.state.execute(functools.partial(self.toggle_head, layer, head), schedule=True)

    # ------------------------------------------------------------------ map

    def _map_rows(self) -> np.ndarray:
        """The rows drawn on the map: the task in scope, or all."""
        return np.arange(len(self.index)) if self._scope is None else self._scope

    def map_marks(self) -> dict[str, pd.DataFrame]:
        """What the map draws: ``corpus`` (every sample in scope), ``similar`` (the results) and
        ``current`` (the current sample, or a typed pair projected into the map), each with x, y, id."""
        return {"corpus": self._map_corpus_df(), "similar": self._map_similar_df(), "current": self._map_current_df()}

    def _map_frame(self, rows: np.ndarray) -> pd.DataFrame:
        """x, y (the PCA) and what a point's tooltip says: id, gold label, the fine-tuned prediction,
        the start of sentence A."""
        coords, _ = self.index.pca()
        md = self.index.metadata
        rows = np.asarray(rows, dtype=np.int64)

        def text(col: str) -> list[str]:
            return ["" if pd.isna(v) else str(v) for v in md[col].to_numpy()[rows]] if col in md else [""] * len(rows)

        return pd.DataFrame({"x": coords[rows, 0].astype(float), "y": coords[rows, 1].astype(float),
                             "id": text("id"), "label": text("label_name"), "pred": text("pred_fine"),
                             "text": [t if len(t) <= 60 else t[:59] + "…" for t in text("sentence_a")]})

    def _map_corpus_df(self) -> pd.DataFrame:
        return self._map_frame(self._map_rows())

    def _map_similar_df(self) -> pd.DataFrame:
        df = self.results
        if df is None or not len(df):
            return pd.DataFrame({c: [] for c in (*MAP_COLUMNS, "score")})
        out = self._map_frame(df["row"].to_numpy(dtype=np.int64))
        out["score"] = df["score"].astype(float).round(3).to_numpy()
        return out

    def _map_current_df(self) -> pd.DataFrame:
        idx = self.index
        coords, _ = idx.pca()
        xy, cid = None, None
        if self.selected_id is not None:
            with contextlib.suppress(ValueError):
                xy, cid = coords[idx.row_of(self.selected_id)], self.selected_id
        elif self.result is not None:
            try:
                from attnflows_panel.index import result_usage

                usage = result_usage(self.result, idx.tau)
                xy, cid = idx.pca_project(idx.embed_usage(usage[None]))[0], "(new pair)"
            except (ValueError, TypeError, AttributeError):
                pass
        return pd.DataFrame({"x": [float(xy[0])], "y": [float(xy[1])], "id": [cid]} if xy is not None
                            else {"x": [], "y": [], "id": []})

    @param.depends("index", "task", "results", "selected_id", "result")
    def map_element(self):
        """The signature map (2-D PCA of the signatures): the corpus in grey (:meth:`map_corpus`), the
        similar samples in purple (:meth:`map_similar`), the current sample as an orange star
        (:meth:`map_current`). Past :data:`MAP_POINTS` samples the corpus layer is rasterized
        (datashader) or, without datashader, decimated to the points in view."""
        import holoviews as hv

        if self.index is None:
            return hv.Points([])
        corpus = self.map_corpus()
        if len(corpus) > MAP_POINTS:
            corpus = _many_points(corpus)
        return (corpus * self.map_similar() * self.map_current()).opts(**MAP_OPTIONS)

    @param.depends("index", "task")
    def map_corpus(self):
        """The map's corpus layer (grey points), with the plot's title, size and axis labels."""
        import holoviews as hv

        if self.index is None:
            return hv.Points([], kdims=["x", "y"], vdims=["id"], label="corpus")
        _, ratio = self.index.pca()
        return hv.Points(self._map_corpus_df(), kdims=["x", "y"], vdims=list(MAP_COLUMNS[2:]), label="corpus").opts(
            size=4, color=BACKGROUND_COLOR, alpha=0.5, tools=["tap"], hover_tooltips=MAP_TOOLTIPS,
            title="signature map (PCA)", width=420, height=370, xlabel=f"PC 1 ({ratio[0]:.0%})",
            ylabel=f"PC 2 ({ratio[1]:.0%})")

    @param.depends("index", "task", "results")
    def map_similar(self):
        """The map's similar samples (purple points)."""
        import holoviews as hv

        df = (self._map_similar_df() if self.index is not None
              else pd.DataFrame({c: [] for c in (*MAP_COLUMNS, "score")}))
        return hv.Points(df, kdims=["x", "y"], vdims=[*MAP_COLUMNS[2:], "score"], label="similar").opts(
            size=8, color=FINETUNED_COLOR, alpha=0.9, tools=["tap"],
            hover_tooltips=[*MAP_TOOLTIPS, ("similarity", "@score{0.000}")])

    @param.depends("index", "task", "results", "selected_id", "result")
    def map_current(self):
        """The map's current sample (an orange star)."""
        import holoviews as hv

        df = self._map_current_df() if self.index is not None else pd.DataFrame({"x": [], "y": [], "id": []})
        return hv.Points(df, kdims=["x", "y"], vdims=["id"], label="current").opts(
            size=14, marker="star", color=SHARED_COLOR, line_color="black", hover_tooltips=[("current sample", "@id")])

    def _on_map_tap(self, x=None, y=None) -> None:
        """The sample nearest to the tap becomes current (within 3% of the map's extent)."""
        if self.index is None or x is None or y is None:
            return
        coords, _ = self.index.pca()
        rows = self._map_rows()
        if not len(rows):
            return
        pts = coords[rows, :2].astype(float)
        d = np.hypot(pts[:, 0] - float(x), pts[:, 1] - float(y))
        i = int(np.argmin(d))
        extent = float(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]), 1e-9))
        if d[i] <= 0.03 * extent:  # on the next tick, after HoloViews has finished the tap event
            pn.state.execute(functools.partial(self.pick, str(self.index.metadata["id"].iloc[int(rows[i])])),
                             schedule=True)

    # ------------------------------------------------------------------ layout

    def __panel__(self) -> pn.viewable.Viewable:
        # FlexBoxes wrap their widgets when the column is narrower than the row (no overlap)
        # prompts have no gold label, prediction class or training split: only the text search
        labelled = () if self.noun == "prompt" else (self._label_w, self._pred_w, self._correct_w, self._split_w)
        filters = pn.FlexBox(*labelled, self._search_w, sizing_mode="stretch_width")
        # flex bases: side by side when both fit (the similar samples need the heatmap and the map side by
        # side, 860 px), else each takes the whole width
        corpus = pn.Column("### Corpus", filters, self._count, self.table, sizing_mode="stretch_width", min_width=520,
                           styles={"flex": "1 1 520px"})
        controls = pn.FlexBox(
            pn.Column(pn.pane.Markdown("Search space", margin=(0, 5)), self._space_w),
            self._heads_w, self._clear_heads, self._k_w, sizing_mode="stretch_width",
        )
        similar = pn.Column(
            "### Similar samples", self._current, controls, self._within_w, self._status, self.results_table,
            # the heatmap and the map side by side where there is room, else one under the other
            pn.FlexBox(
                pn.Column(self._scope_w, pn.pane.HoloViews(self.heat_plot, backend="bokeh")),
                pn.pane.HoloViews(self.map_plot, backend="bokeh"),
                sizing_mode="stretch_width",
            ),
            sizing_mode="stretch_width",
            min_width=520,
            styles={"flex": "1 1 860px"},
        )
        # the corpus and the similar samples side by side on a wide window, else the similar samples
        # under the corpus: nothing is cut off or scrolls sideways at a laptop's width
        return pn.FlexBox(corpus, similar, sizing_mode="stretch_width")


class _NoQuery(Exception):
    pass


if pn.state.served:  # pragma: no cover - `panel serve attnflows_panel/views/corpus_browser.py`
    import os

    from attnflows_panel import defaults
    from attnflows_panel.index import SignatureIndex

    CorpusBrowser(SignatureIndex.open(os.environ.get("ATTNFLOWS_INDEX") or defaults.index_path())).servable(
        title="attnflows corpus browser"
    )
