"""Head panel: which heads did fine-tuning change, over the corpus or the current search results.

A :class:`HeadPanel` (``pn.viewable.Viewer``) draws a layers × heads heatmap (HoloViews ``HeatMap``;
``selected_head`` is 0-based as the code is, every label the user reads counts from 1) of one of the
per-head measures of :mod:`attnflows_panel.heads` — Kovaleva's cosine (1 = unchanged), the Jensen–Shannon
divergence, the head-usage change — and, when given, the corpus-level ablation accuracy change and
Michel's importance (:mod:`attnflows_panel.ablation`). It averages over the corpus in scope (the samples
of ``task``, as the corpus browser keeps them) or over a subset of sample ids (``subset_ids``: e.g. the
corpus browser's current results), from the per-sample values an index stores, so no model runs. The
samples it lists for a head carry the browser's column names, and a click on one opens it (``on_open``).

Clicking a cell (a HoloViews ``Tap`` stream) sets ``selected_head = (layer, head)``. The app:

(a) watches ``selected_head`` to restrict the flow view to that head;
(b) gets the samples where that head changed most from :meth:`HeadPanel.head_query`: a head-masked
    ``diff`` query of the index around the current sample (``sample_id``), or, without a current sample,
    the samples with the lowest cosine for that head; ``query_fn`` replaces it;
(c) gets what disabling that head does to the current sample's prediction from
    :meth:`HeadPanel.head_ablation` (needs ``pair`` and ``sample`` = (sentence A, sentence B));
    ``ablate_fn`` replaces it.

Both results are shown in the panel after a click. The panel holds no analysis of its own: it asks
``heads``, ``ablation`` and the index. README.md ("Which heads changed") describes the measures.
"""

from __future__ import annotations

import functools
import html
import logging
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param

from attnflows_panel import FINETUNED_COLOR, PRETRAINED_COLOR, SHARED_COLOR
from attnflows_panel import heads as head_measures

__all__ = ["HeadPanel", "EXTRA_METRICS", "METRIC_TITLES"]

log = logging.getLogger(__name__)

#: corpus-level measures the panel shows when they are given (``extra=``), e.g. from a JSON report
EXTRA_METRICS = ("ablation_accuracy_delta", "importance")
METRIC_TITLES = {
    "cosine": "cosine (1 = unchanged)",
    "jsd": "JSD, base 2 (0 = unchanged)",
    "usage_change": "head usage |u_fine − u_pre|",
    "ablation_accuracy_delta": "accuracy change with the head disabled",
    "importance": "gradient importance (per layer)",
}
SCOPES = ("corpus", "subset")


def _ramp(low: str, high: str, n: int = 64) -> list[str]:
    lo = np.array([int(low.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4)], float)
    hi = np.array([int(high.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4)], float)
    return ["#{:02x}{:02x}{:02x}".format(*(int(round(v)) for v in lo + (hi - lo) * t)) for t in np.linspace(0, 1, n)]


def _cmap(metric: str) -> list[str]:
    if metric == "cosine":
        return _ramp(FINETUNED_COLOR, "#ffffff")  # low cosine = changed = purple
    if metric == "ablation_accuracy_delta":
        return _ramp(PRETRAINED_COLOR, "#ffffff", 32) + _ramp("#ffffff", FINETUNED_COLOR, 32)[1:]
    if metric == "importance":
        return _ramp("#ffffff", SHARED_COLOR)
    return _ramp("#ffffff", FINETUNED_COLOR)


class HeadPanel(pn.viewable.Viewer):
    """Layers × heads heatmap of how much fine-tuning changed each head (see the module docstring)."""

    index = param.Parameter(default=None, doc="a SignatureIndex with stored head change (or give change=)")
    change = param.Parameter(default=None, doc="an attnflows_panel.ablation.CorpusChange (instead of an index)")
    extra = param.Dict(default={}, doc="corpus-level [L, H] measures by name: ablation_accuracy_delta, importance")

    metric = param.Selector(default="cosine", objects=list(head_measures.METRICS), doc="the measure the heatmap shows")
    scope = param.Selector(default="corpus", objects=list(SCOPES), doc="whole corpus, or the samples in subset_ids")
    subset_ids = param.List(default=[], allow_refs=True,
                            doc="sample ids of the subset (e.g. the current search results)")
    task = param.String(default=None, allow_None=True, doc=(
        "keep the corpus scope to this task's samples, as the corpus browser does (None: every sample)"))
    selected_head = param.Tuple(default=None, length=2, allow_None=True, doc="(layer, head), 0-based; set by a click")

    sample_id = param.String(default=None, allow_None=True, allow_refs=True,
                             doc="the current sample's id (for the head query)")
    sample = param.Tuple(default=None, length=2, allow_None=True, allow_refs=True,
                         doc="the current pair (sentence A, sentence B)")
    on_open = param.Callable(default=None, doc="called with a sample id when a listed sample is clicked (opens it)")
    pair = param.Parameter(default=None, doc="the ModelPair, for the current sample's ablation")
    ablation_mode = param.Selector(default="mask", objects=["mask", "uniform"], doc="how a head is disabled")
    k = param.Integer(default=10, bounds=(1, 200), doc="samples listed for the selected head")

    query_fn = param.Callable(default=None, doc="(layer, head) -> DataFrame; replaces head_query")
    ablate_fn = param.Callable(default=None, doc="(layer, head) -> SampleAblation or text; replaces head_ablation")

    def __init__(self, index: Any = None, **params):
        if index is not None:
            params["index"] = index
        super().__init__(**params)
        if self.index is None and self.change is None:
            raise ValueError("HeadPanel needs an index (SignatureIndex) or change= (a CorpusChange)")
        if self.index is not None and not self.index.has_head_change:
            # the index's own message says how to get the values
            self.index.head_change([])
        bad = sorted(set(self.extra) - set(EXTRA_METRICS))
        if bad:
            raise ValueError(f"unknown extra measure(s) {bad}; allowed: {', '.join(EXTRA_METRICS)}")
        self.param.metric.objects = list(head_measures.METRICS) + [m for m in EXTRA_METRICS if m in self.extra]
        self._cache: dict[tuple, head_measures.HeadChange] = {}
        self._query_result: pd.DataFrame | None = None
        self._ablation_result: Any = None
        self._message = ""
        self._build()

    # ------------------------------------------------------------------ data (no Bokeh)

    @property
    def shape(self) -> tuple[int, int]:
        if self.index is not None:
            return self.index.num_layers, self.index.num_heads
        return tuple(self.change.cosine.shape[1:])  # type: ignore[return-value]

    def _rows(self, ids: list[str]) -> np.ndarray:
        if self.index is not None:
            return self.index.rows_of(ids)
        lookup = {x: i for i, x in enumerate(self.change.ids)}
        missing = [x for x in ids if x not in lookup]
        if missing:
            raise ValueError(f"unknown sample id {missing[0]!r}")
        return np.asarray([lookup[x] for x in ids], dtype=np.int64)

    def scope_rows(self) -> np.ndarray | None:
        """The corpus in scope: the rows of ``task`` (as the corpus browser keeps them), None = all."""
        if self.index is None or not self.task:
            return None
        from attnflows_panel.views.corpus_browser import task_rows

        return task_rows(self.index, self.task)

    def summary(self) -> head_measures.HeadChange:
        """The HeadChange of the current scope (cached per subset)."""
        ids = tuple(str(x) for x in self.subset_ids) if self.scope == "subset" else None
        if ids is not None and not ids:
            raise ValueError("the subset is empty: run a search or choose the whole corpus")
        key = (ids, self.task)
        if key not in self._cache:
            rows = self.scope_rows() if ids is None else self._rows(list(ids))
            self._cache[key] = (self.index.head_change_summary(rows) if self.index is not None
                                else self.change.summary(rows))
        return self._cache[key]

    def values(self) -> np.ndarray:
        """The [L, H] values the heatmap shows now."""
        if self.metric in EXTRA_METRICS:
            return np.asarray(self.extra[self.metric], dtype=np.float64)
        return np.asarray(self.summary().metric(self.metric), dtype=np.float64)

    def heatmap_data(self) -> pd.DataFrame:
        """One row per head: layer, head, value (what the heatmap draws)."""
        v = self.values()
        L, H = v.shape
        return pd.DataFrame({"head": np.tile(np.arange(H), L), "layer": np.repeat(np.arange(L), H),
                             "value": v.ravel()})

    def title(self) -> str:
        if self.metric in EXTRA_METRICS:
            return f"{METRIC_TITLES[self.metric]} (corpus)"
        try:
            n = self.summary().n_samples
        except ValueError as exc:
            return str(exc)
        if self.scope == "subset":
            where = "similar samples"
        else:
            where = f"{self.task.upper()} corpus" if self.scope_rows() is not None else "corpus"
        return f"{METRIC_TITLES[self.metric]}, mean over {n} samples ({where})"

    # ------------------------------------------------------------------ the selected head

    def head_query(self, layer: int, head: int) -> pd.DataFrame:
        """(b) Samples where head (layer, head) changed most: a head-masked ``diff`` query of the index
        around ``sample_id`` when there is one, else the samples with the lowest cosine of that head."""
        if self.query_fn is not None:
            return self.query_fn(layer, head)
        scope = self.scope_rows()
        if self.index is not None and self.sample_id is not None:
            df = self.index.query(sample_id=self.sample_id, space="diff", heads=[(layer, head)], k=self.k,
                                  exclude_self=True, filters=None if scope is None else {"rows": scope})
            cols = [c for c in ("rank", "id", "score", "label_name", "pred_fine", "sentence_a", "sentence_b")
                    if c in df]
            return df[cols]
        if self.index is not None:
            cos, _ = self.index.head_change()
            col = cos[:, layer, head]
            ids = self.index.metadata["id"].to_numpy(dtype=object)
            md = self.index.metadata
        else:
            col = self.change.cosine[:, layer, head]
            ids = np.asarray(self.change.ids, dtype=object)
            md = None
        rows = np.arange(len(col)) if scope is None else np.asarray(scope, dtype=np.int64)
        order = rows[np.argsort(col[rows], kind="stable")[: self.k]]
        out = pd.DataFrame({"rank": np.arange(1, len(order) + 1), "id": ids[order], "cosine": col[order]})
        if md is not None:
            for c in ("label_name", "pred_fine", "sentence_a", "sentence_b"):
                if c in md:
                    out[c] = md[c].to_numpy()[order]
        return out

    def head_ablation(self, layer: int, head: int) -> Any:
        """(c) What disabling head (layer, head) does to the current sample's prediction
        (:func:`attnflows_panel.ablation.ablate_sample`), or None without a pair and a sample."""
        if self.ablate_fn is not None:
            return self.ablate_fn(layer, head)
        if self.pair is None or self.sample is None:
            return None
        from attnflows_panel.ablation import ablate_sample

        return ablate_sample(self.pair, self.sample[0], self.sample[1], [(layer, head)], self.ablation_mode)

    @param.depends("selected_head", watch=True)
    def _on_selected(self) -> None:
        self._query_result, self._ablation_result, self._message = None, None, ""
        if self.selected_head is None:
            self._refresh_details()
            return
        layer, head = (int(x) for x in self.selected_head)
        L, H = self.shape
        if not (0 <= layer < L and 0 <= head < H):
            self._message = (f"head {head + 1} of layer {layer + 1} is out of range for {L} layers × {H} heads "
                             "(counted from 1)")
            self._refresh_details()
            return
        try:
            self._query_result = self.head_query(layer, head)
        except Exception as exc:  # noqa: BLE001 - shown in the panel, never a broken session
            log.warning("head query for %s:%s failed: %s", layer, head, exc)
            self._message = f"query failed: {exc}"
        try:
            self._ablation_result = self.head_ablation(layer, head)
        except Exception as exc:  # noqa: BLE001
            log.warning("ablation of %s:%s failed: %s", layer, head, exc)
            self._message += f" ablation failed: {exc}"
        self._refresh_details()

    # ------------------------------------------------------------------ figure

    def _heatmap(self, metric: str, scope: str, subset_ids: list, task: str | None = None):
        import holoviews as hv

        try:
            df = self.heatmap_data()
        except ValueError:
            L, H = self.shape
            df = pd.DataFrame({"head": np.tile(np.arange(H), L), "layer": np.repeat(np.arange(L), H),
                               "value": np.full(L * H, np.nan)})
        metric_label = METRIC_TITLES[metric]
        vmax = float(np.nanmax(np.abs(df["value"]))) if df["value"].notna().any() else 1.0
        if metric == "ablation_accuracy_delta":
            clim = (-max(vmax, 1e-6), max(vmax, 1e-6))
        elif metric == "cosine":
            clim = (float(np.nanmin(df["value"])) if df["value"].notna().any() else 0.0, 1.0)
        else:
            clim = (0.0, max(vmax, 1e-6))
        # cells at 0-based positions (a tap rounds to them); every label the user reads counts from 1
        df = df.assign(layer_no=df["layer"] + 1, head_no=df["head"] + 1)
        hm = hv.HeatMap(df, kdims=["head", "layer"], vdims=[hv.Dimension("value", label=metric_label), "layer_no",
                                                             "head_no"])
        L, H = self.shape
        return hm.opts(
            cmap=_cmap(metric), clim=clim, colorbar=True, tools=["tap"], xlabel="head", ylabel="layer",
            nonselection_alpha=1.0, selection_alpha=1.0,  # a click marks its head (orange), dims no other
            hover_tooltips=[("layer", "@layer_no"), ("head", "@head_no"), (metric_label, "@value{0.000}")],
            title=self.title(), responsive=False, width=560, height=340,
            line_color="white", toolbar="above", default_tools=[], fontsize={"title": "10pt"},
            xlim=(-0.5, H - 0.5), ylim=(-0.5, L - 0.5), xticks=[(h, str(h + 1)) for h in range(H)],
            yticks=[(k, str(k + 1)) for k in range(L)],
        )

    def _marker(self, selected_head: Any):
        """The selected head, outlined in orange (an empty layer when none is selected)."""
        import holoviews as hv

        points = [] if selected_head is None else [(int(selected_head[1]), int(selected_head[0]))]
        return hv.Points(points, kdims=["head", "layer"]).opts(
            marker="square", size=22, fill_alpha=0, line_color=SHARED_COLOR, line_width=3)

    def _build(self) -> None:
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401 - the Bokeh backend, for the options below

        # (not hv.extension: in a notebook that emits a second BokehJS loader, from the CDN, which an
        # offline notebook cannot fetch; Panel's HoloViews pane loads what it renders)
        # the heatmap and the marker of the selected head are two DynamicMaps, overlaid: a Tap stream whose
        # source returns an Overlay is never linked to the plot (holoviews issue #3533), and no click arrives
        heat = hv.DynamicMap(pn.bind(self._heatmap, metric=self.param.metric, scope=self.param.scope,
                                     subset_ids=self.param.subset_ids, task=self.param.task))
        self._dmap = heat * hv.DynamicMap(pn.bind(self._marker, selected_head=self.param.selected_head))
        self.tap = hv.streams.Tap(source=heat, x=None, y=None)
        self.tap.add_subscriber(self._on_tap)
        self._details = pn.Column(sizing_mode="stretch_width")
        self._refresh_details()

    def _on_tap(self, x=None, y=None) -> None:
        if x is None or y is None:
            return
        try:
            head, layer = int(round(float(str(x)))), int(round(float(str(y))))
        except ValueError:
            return
        # on the next tick (served), after HoloViews has finished the tap event: the selection redraws
        # the marker layer of this very plot
        pn.state.execute(functools.partial(setattr, self, "selected_head", (layer, head)), schedule=True)

    def _refresh_details(self) -> None:
        parts: list[Any] = []
        if self.selected_head is None:
            parts.append(pn.pane.Markdown("Click a head to list the samples where it changed most and to see what "
                                          "disabling it does to the current sample."))
        else:
            layer, head = self.selected_head
            parts.append(pn.pane.HTML(f"<b>head {head + 1} of layer {layer + 1}</b> · the samples where it "
                                      "changed most (click one to open it)", css_classes=["af-head-title"]))
            if self._query_result is not None:
                parts.append(self._rows_table(self._query_result))
            abl = self._ablation_result
            if abl is not None:
                text = abl.summary() if hasattr(abl, "summary") else str(abl)
                parts.append(pn.pane.Markdown(f"Current sample: {html.escape(text)}"))
            elif self.pair is None or self.sample is None:
                parts.append(pn.pane.Markdown("(no current sample to ablate)"))
        if self._message:
            parts.append(pn.pane.Alert(html.escape(self._message.strip()), alert_type="warning"))
        self._details.objects = parts

    def _rows_table(self, df: pd.DataFrame) -> pn.widgets.Tabulator:
        """The listed samples, with the corpus browser's column names; a click on a row opens it."""
        from attnflows_panel.views.corpus_browser import COLUMN_WIDTHS, RESULT_COLUMNS, TABLE_CONFIG, TABLE_STYLE

        shown = df.copy()
        for c in ("score", "cosine"):
            if c in shown:
                shown[c] = shown[c].astype(float).round(3)
        titles = {**RESULT_COLUMNS, "score": "similarity", "cosine": "cosine"}
        table = pn.widgets.Tabulator(
            shown, titles={c: titles.get(c, c) for c in shown.columns}, show_index=False, disabled=True,
            selectable=False, layout="fit_columns", sizing_mode="stretch_width", configuration=TABLE_CONFIG,
            widths={c: w for c, w in {**COLUMN_WIDTHS, "score": 100, "cosine": 90}.items() if c in shown.columns},
            height=40 + 29 * min(max(len(shown), 1), 10), css_classes=["af-head-rows"], stylesheets=[TABLE_STYLE],
        )
        if "id" in shown:
            table.on_click(lambda event: self.open_row(shown, event.row))
        return table

    def open_row(self, rows: pd.DataFrame, i: int | None) -> None:
        """Open the sample of listed row ``i`` (``on_open``), on the next tick: after the table's event."""
        if self.on_open is None or i is None or not 0 <= i < len(rows):
            return
        pn.state.execute(functools.partial(self.on_open, str(rows["id"].iloc[i])), schedule=True)

    def __panel__(self) -> pn.viewable.Viewable:
        controls = pn.Row(
            pn.widgets.Select.from_param(self.param.metric, label="measure", width=200),
            pn.widgets.RadioButtonGroup.from_param(self.param.scope, width=160),
            pn.widgets.Select.from_param(self.param.ablation_mode, label="disable by", width=110),
        )
        return pn.Column(controls, pn.pane.HoloViews(self._dmap, linked_axes=False), self._details)


if pn.state.served:  # pragma: no cover - `panel serve attnflows_panel/views/head_panel.py`
    from attnflows_panel import defaults
    from attnflows_panel.index import SignatureIndex

    HeadPanel(SignatureIndex.open(defaults.index_path())).servable()
