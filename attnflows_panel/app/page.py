"""The page of one session: its widgets, sidebar, main area, template, busy indicator and notices.

:class:`SessionPage` is the part of :class:`~attnflows_panel.app.session.AttnFlowsApp` that lays the
page out; the session itself (``session.py``) decides what is shown. Stable hooks for browser tests
are the CSS classes listed in the session module's docstring.
"""

from __future__ import annotations

import logging

import panel as pn

from attnflows_panel import FINETUNED_COLOR
from attnflows_panel.app.cards import HELP_HTML, NOTICE_COLORS, esc, notice_html

__all__ = ["SessionPage", "PageFrame", "APP_FLOW_HEIGHT", "APP_SENTENCE_HEIGHT", "heading", "busy_indicator",
           "message_bar", "show_notice", "typed", "fill"]

log = logging.getLogger("attnflows_panel.app.session")

#: CSS height of the radial view in the app: the window's height less the header and the sample card
#: above it (the card keeps each sentence to one line, cards.sample_html, so it is about 100 px high at
#: 1280×800 whatever the pair's length), so the whole drawing is in view when the page opens. The other
#: views sit in a column beside it (SessionPage._main).
APP_FLOW_HEIGHT = "max(420px, calc(100vh - 190px))"
#: CSS max-height of the sentence view in the app's side column, under the context view and the status:
#: beyond it the view scrolls inside itself, so that the column's top part stays above the fold
APP_SENTENCE_HEIGHT = "max(150px, calc(100vh - 560px))"
#: the side column's width (px) beside the radial view
SIDE_WIDTH = 340

#: the edge weights selector's buttons (label -> kind, attnflows_panel.weights.WEIGHT_KINDS)
WEIGHT_LABELS = {"Raw": "raw", "Norm": "norm", "Attribution": "attattr"}


def heading(text: str) -> pn.pane.HTML:
    """A sidebar section heading (plain HTML: nothing to render as Markdown in every new session)."""
    return pn.pane.HTML(f'<h4 style="margin:0">{esc(text)}</h4>', margin=(12, 10, 4, 10))


def busy_indicator() -> tuple[pn.indicators.LoadingSpinner, pn.pane.HTML]:
    """The header's spinner and its note (``af-busy``), shown while a model run is under way."""
    spinner = pn.indicators.LoadingSpinner(value=False, size=22, margin=(8, 5), color="light", bgcolor="dark")
    text = pn.pane.HTML("", margin=(10, 5), styles={"color": "white", "font-size": "13px"}, css_classes=["af-busy"])
    return spinner, text


def message_bar() -> pn.pane.HTML:
    """The notice bar above the views (``af-message``), hidden until :func:`show_notice` fills it."""
    return pn.pane.HTML("", visible=False, sizing_mode="stretch_width", css_classes=["af-message"], margin=(5, 10))


def typed(box) -> str:
    """What a text box holds as typed, even before it loses the focus: Panel's ``value_input`` ("" until
    something is typed, so then its ``value``)."""
    return box.value_input or box.value or ""


def fill(box, text: str) -> None:
    """Put ``text`` in a text box as its value and as its typed text (what :func:`typed` reads)."""
    box.param.update(value=text, value_input=text)


def show_notice(bar: pn.pane.HTML, text: str, kind: str = "warning") -> None:
    """Show ``text`` in ``bar`` as plain text (escaped, never markup or a link); '' hides it."""
    bg, fg = NOTICE_COLORS.get(kind, NOTICE_COLORS["warning"])
    bar.param.update(object=notice_html(text), visible=bool(text),
                     styles={"background": bg, "color": fg, "padding": "8px 12px", "border-radius": "4px",
                             "font-size": "13px"})


class PageFrame:
    """The frame both apps' pages share (a mixin): a sidebar column of 330 px beside a stretching main column,
    and for serving, a BootstrapTemplate with the busy indicator in the header.

    The class provides ``_sidebar()`` and ``_main()`` (lists of Panel objects; ``_main`` sets ``_main_top``,
    the part greyed while busy), ``_spinner`` and ``_busy_text`` (:func:`busy_indicator`), ``_alert``
    (:func:`message_bar`), ``config.title`` and a ``message`` parameter (the notice shown)."""

    _layout = None

    def _page(self) -> pn.Row:
        """The page laid out once (the main column first: the sidebar may show the views' controls)."""
        if self._layout is None:
            self._main_parts = self._main()
            self._side_parts = self._sidebar()
            self._layout = pn.Row(pn.Column(*self._side_parts, width=330),
                                  pn.Column(*self._main_parts, sizing_mode="stretch_width"),
                                  sizing_mode="stretch_width")
        return self._layout

    def template(self) -> pn.template.BaseTemplate:
        """The full page (BootstrapTemplate) for serving: sidebar, main area, busy indicator in the header.

        Every asset comes from the Panel server itself, no web font or CDN, so the page works offline.
        """
        self._page()
        return pn.template.BootstrapTemplate(
            title=self.config.title,
            sidebar=self._side_parts,
            main=self._main_parts,
            header=[pn.Row(self._spinner, self._busy_text)],
            header_background=FINETUNED_COLOR,
            sidebar_width=350,
        )

    def __panel__(self):
        return self._page()

    def _on_busy(self, event) -> None:
        self._spinner.value = bool(event.new)
        if self._layout is not None:
            self._main_top.loading = bool(event.new)

    def notify(self, text: str, kind: str = "warning") -> None:
        """Show ``text`` in the message bar as plain text (escaped, never markup or a link); '' hides it."""
        self.message = text
        show_notice(self._alert, text, kind)


class SessionPage(PageFrame):
    """Widgets and layout of a session (a mixin of ``AttnFlowsApp``: it reads ``config``, ``view``,
    ``history``, ``busy`` and ``message`` of the app)."""

    def _build_widgets(self) -> None:
        cfg = self.config
        widgets = pn.widgets
        self._spinner, self._busy_text = busy_indicator()
        self._alert = message_bar()
        self._pair_info = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["af-pair"], margin=(0, 5))
        self._a_w = widgets.TextAreaInput(label="Sentence A", placeholder="first sentence / premise / question",
                                          max_length=cfg.max_chars, rows=3, sizing_mode="stretch_width",
                                          css_classes=["af-input-a"])
        self._b_w = widgets.TextAreaInput(label="Sentence B", placeholder="second sentence / hypothesis / answer",
                                          max_length=cfg.max_chars, rows=3, sizing_mode="stretch_width",
                                          css_classes=["af-input-b"])
        self._run_w = widgets.Button(label="Run pair and find similar samples", color="primary",
                                     sizing_mode="stretch_width", css_classes=["af-run"])
        self._run_w.on_click(self._on_run_click)
        self._form_note = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["af-form-note"], margin=(0, 10),
                                       styles={"font-size": "12px"})
        self._model_pre_w = self._model_fine_w = self._model_load_w = None
        if cfg.allow_model_paths:
            self._model_pre_w = widgets.TextInput(label="Pre-trained (hub name or server folder)",
                                                  sizing_mode="stretch_width", css_classes=["af-model-pre"])
            self._model_fine_w = widgets.TextInput(label="Fine-tuned (hub name or server folder)",
                                                   sizing_mode="stretch_width", css_classes=["af-model-fine"])
            self._model_load_w = widgets.Button(label="Load model pair", sizing_mode="stretch_width",
                                                css_classes=["af-model-load"])
            self._model_load_w.on_click(self._on_load_models)
        # the kind of edge weights the graph follows (README.md, "Edge weights"): the models run again on a change
        self._weights_w = widgets.RadioButtonGroup(options=WEIGHT_LABELS, value=self.weights, margin=(0, 10),
                                                   sizing_mode="stretch_width", css_classes=["af-weights"])
        self._weights_w.param.watch(self._on_weights_widget, ["value"])
        self._weights_note = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["af-weights-note"],
                                          margin=(0, 10), styles={"font-size": "12px", "color": "#444"})
        self._sample_card = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["af-sample"], margin=(0, 10))
        self._status = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["af-status"], margin=(0, 10),
                                    styles={"font-size": "12px", "color": "#444"})
        parts = self.view.parts()
        parts.sentence.scroll_height = APP_SENTENCE_HEIGHT
        self._sentence_slot = pn.Column(parts.sentence, sizing_mode="stretch_width", css_classes=["af-sentence-view"])
        # a Row: across a row the radial view takes the view's CSS height (APP_FLOW_HEIGHT)
        self._flow_slot = pn.Row(parts.flow, sizing_mode="stretch_width", css_classes=["af-flow-view"])
        self._context_slot = pn.Column(parts.context_view, css_classes=["af-context-view"])
        self._legend = parts.legend
        self._controls = parts.controls
        self._browser_slot = pn.Column(sizing_mode="stretch_width", css_classes=["af-browser"])
        #: where a head panel goes, beside the corpus browser (empty until one is placed there)
        self.head_panel_slot = pn.Column(sizing_mode="stretch_width", css_classes=["af-head-panel"])
        # the help folds open in the page itself (an HTML <details>), without a round trip to the server
        self._help = pn.pane.HTML(
            '<details><summary style="cursor:pointer;font-weight:600;padding:6px 0">How to read the views</summary>'
            f"{HELP_HTML}</details>", sizing_mode="stretch_width", css_classes=["af-help"], margin=(10, 10))

    def _sidebar(self) -> list:
        weights = pn.Column(pn.pane.HTML("Edge weights", margin=(0, 10), styles={"font-size": "13px"}),
                            self._weights_w, self._weights_note, sizing_mode="stretch_width")
        view_controls = pn.Column(heading("View"), self._controls, weights, sizing_mode="stretch_width")
        form = pn.Column(heading("Your sentence pair"), self._a_w, self._b_w, self._run_w, self._form_note,
                         sizing_mode="stretch_width", css_classes=["af-form"])
        models = [self._pair_info]
        if self.config.allow_model_paths:
            models += [self._model_pre_w, self._model_fine_w, self._model_load_w]
        pair_box = pn.Column(heading("Model pair"), *models, sizing_mode="stretch_width")
        # one root per template area: every extra Bokeh root costs a full model-graph walk per session
        return [pn.Column(pair_box, view_controls, form, self._help, sizing_mode="stretch_width")]

    def _main(self) -> list:
        # the radial view on the left at the window's height; beside it one column: the context view, the
        # status (predictions, ring sizes, the selection), the sentence view (scrolling inside itself
        # beyond APP_SENTENCE_HEIGHT) and the legend
        side = pn.Column(self._context_slot, self._status, self._sentence_slot, self._legend, width=SIDE_WIDTH,
                         css_classes=["af-side-views"])
        flows = pn.Row(self._flow_slot, side, sizing_mode="stretch_width")
        top = self._main_top = pn.Column(self._alert, self._sample_card, flows,
                                         sizing_mode="stretch_width", css_classes=["af-main"])
        extra = [] if self.history is None else [self.history]  # the address bar's writer: draws nothing
        return [pn.Column(top, self._browser_slot, self.head_panel_slot, *extra, sizing_mode="stretch_width")]

    # ------------------------------------------------------------------ busy / messages / errors

    def _set_busy(self, on: bool, text: str = "") -> None:
        self.busy = on
        self._busy_text.object = esc(text) if on else ""

    def report_error(self, exc: BaseException) -> None:
        """An exception in a callback of this session: logged with its traceback, shown to the user."""
        log.error("a callback of this session failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        self.notify(f"Something went wrong: {type(exc).__name__}: {exc}", "danger")

    def _flush_notices(self) -> None:
        self.notify("\n".join(self._notices))
        self._notices = []
