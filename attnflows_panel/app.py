"""The Attention Flows app: the views of one sentence pair next to a searchable corpus (§4 + future work).

:class:`AttnFlowsApp` (a ``pn.viewable.Viewer``) composes

- the **Sentence view** (influence I_l, eq. 4, as 5-circle ratings for the chosen level l), the radial
  **Attention Flow view** (token rings = levels of the Attention Graph at threshold τ, head glyphs,
  sparklines) and the **Sentence Context view**, all from
  :class:`~attnflows_panel.views.attention_flows.AttentionFlowsView`;
- the **corpus browser** with its similar-samples panel,
  :class:`~attnflows_panel.views.corpus_browser.CorpusBrowser`, over a
  :class:`~attnflows_panel.index.SignatureIndex`;
- a sidebar with the model pair in use, τ, the mode, the level, a form for a typed sentence pair (run
  through both models, shown, and used as the similarity query), and help text in the views' colours.

Ways to run it::

    attnflows demo                                    # offline default, prepared once
    attnflows serve --index index/mrpc-dev --port 5006
    panel serve attnflows_panel/app.py                # configured by ATTNFLOWS_* variables (AppConfig.from_env)

and in a notebook::

    from attnflows_panel.app import AttnFlowsApp
    AttnFlowsApp(pair=pair, index=idx)                # a cell output; .template() for the full page

**Shared and per-session state.** Models, indexes and recent model outputs live in a
:class:`~attnflows_panel.registry.Registry` (one per process, :func:`shared_registry`): loaded once,
read-only afterwards, shared by every session. Everything a user changes (sample, τ, mode, level,
frozen selection, typed sentences, the browser's filters) lives in the session's own app object,
because the server calls :func:`make_app` once per session.

**Shareable state.** The URL query holds ``sample`` (or ``a``/``b`` for a typed pair), ``tau``,
``mode``, ``level``, ``sel`` (the frozen selection, ``level:token`` pairs, levels 0-based with level L =
[CLS]) and ``head`` (``layer:head``, 0-based) plus ``hm`` (the model(s) of a head restriction). The app
reads the query itself (every value checked, each bad one named in a visible message) and writes it
back on every change, leaving out defaults and empty values, rather than ``pn.state.location.sync``:
that one turns ``"0123"`` into the int 123, keeps stale keys, and rejects a whole query when one value
is bad.

**Responsiveness.** Model runs (a corpus sample, a typed pair, another model pair) go to a worker
thread (``asyncio.to_thread``) while a spinner and a busy overlay show; τ, mode, level and selection
changes only rebuild graphs (P1: a few ms) on the server. Hover highlighting never leaves the browser.

**Bad input never breaks a session.** Empty sentences, over-long text (cut to ``max_chars`` characters,
and the models truncate to their maximum length, both with a visible note), HTML or ``<script>`` in a
sentence (escaped everywhere it is shown: it is text, never markup), a bad URL value or unknown sample
id, or a failing model folder each give a visible message and the session keeps working. Model paths
can be typed in the browser only when the server was started with ``--allow-model-paths``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import html
import io
import logging
import os
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

import numpy as np
import panel as pn
import param

from attnflows_panel import DEFAULT_TAU, FINETUNED_COLOR, PAPER_TAU, PRETRAINED_COLOR, SHARED_COLOR
from attnflows_panel.defaults import initial_tau, peek_index_manifest
from attnflows_panel.registry import Registry, shared_registry

__all__ = ["AppConfig", "AttnFlowsApp", "UrlState", "make_app", "preload", "serve", "demo_index_path", "MODES",
           "HELP_HTML", "DEFAULT_TAU", "PAPER_TAU", "initial_tau", "MAX_CHARS"]

log = logging.getLogger(__name__)

MODES = ("combined", "pretrained", "finetuned")
MODE_LABELS = {"Combined": "combined", "Pre-trained": "pretrained", "Fine-tuned": "finetuned"}
#: the longest sentence accepted from the form or the URL (characters); the models then truncate to
#: their maximum number of tokens
MAX_CHARS = 2000
TAU_BOUNDS = (0.01, 0.95)
#: a pair shown before any sample is picked when no index is loaded
EXAMPLE_PAIR = (
    "The new vaccine was 91 percent effective at preventing illness, the company said.",
    "According to the company, the vaccine prevented illness in 91 percent of cases.",
)

_TRUE = {"1", "true", "yes", "on"}


def demo_index_path() -> Path:
    """``defaults.cache_dir()/index/demo``: the demo index that ``attnflows demo`` prepares."""
    from attnflows_panel import defaults

    return defaults.index_path("demo")


def _esc(text: Any) -> str:
    """HTML-escape anything shown to the user (sentences, ids, paths, error messages)."""
    return html.escape(str(text), quote=True)


_MD_SPECIAL = frozenset("\\`*_[](){}#!|~<>&\"'")


def _md_text(text: Any) -> str:
    """Plain text for a Markdown pane: every HTML or Markdown special character as a numeric entity, so
    that neither a tag nor a link nor emphasis can come out of user input (an id, a path, a sentence)."""
    return "".join(f"&#{ord(c)};" if c in _MD_SPECIAL else c for c in str(text))


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AppConfig:
    """What a server (or ``panel serve attnflows_panel/app.py``) serves; the same for every session.

    pretrained, finetuned: hub names or folders; both None = the index's models (its manifest names
        them), else the offline default pair.
    index: a signature index folder (``attnflows index build``), or None for no corpus browser.
    tau: the initial threshold τ of the Attention Graph (§4.1); None = :func:`initial_tau`'s rule (the
        index's τ, else 0.15 for the offline default pair, else the paper's 0.3).
    allow_model_paths: whether browser users may load another model pair by name or server path.
    device: torch device for the models (None = CUDA when available, else CPU).
    max_chars: longest sentence accepted from the form or the URL.
    """

    pretrained: str | None = None
    finetuned: str | None = None
    index: str | None = None
    tau: float | None = None
    allow_model_paths: bool = False
    device: str | None = None
    max_chars: int = MAX_CHARS
    title: str = "Attention Flows"

    def __post_init__(self):
        if self.tau is None:
            tau = initial_tau(self.pretrained, self.finetuned, self.index)
            object.__setattr__(self, "tau", float(np.clip(tau, *TAU_BOUNDS)))  # an index may be built outside them
        if not TAU_BOUNDS[0] <= float(self.tau) <= TAU_BOUNDS[1]:
            raise ValueError(f"tau must lie in [{TAU_BOUNDS[0]}, {TAU_BOUNDS[1]}], got {self.tau}")
        if int(self.max_chars) < 1:
            raise ValueError(f"max_chars must be positive, got {self.max_chars}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AppConfig:
        """Configuration for ``panel serve attnflows_panel/app.py``.

        ``ATTNFLOWS_PRETRAINED``, ``ATTNFLOWS_FINETUNED`` (model refs; default: the offline default
        pair), ``ATTNFLOWS_INDEX`` (index folder; default: the demo index when it exists, ``none`` for no
        browser), ``ATTNFLOWS_TAU`` (default: :func:`initial_tau`), ``ATTNFLOWS_ALLOW_MODEL_PATHS`` (1/true), ``ATTNFLOWS_DEVICE``.
        """
        env = os.environ if environ is None else environ
        index = env.get("ATTNFLOWS_INDEX") or None
        if index is None:
            demo = demo_index_path()
            index = str(demo) if (demo / "manifest.json").exists() else None
        elif index.lower() == "none":
            index = None
        tau = env.get("ATTNFLOWS_TAU")
        try:
            tau_value = float(tau) if tau else None
        except ValueError:
            raise ValueError(f"ATTNFLOWS_TAU must be a number, got {tau!r}") from None
        return cls(
            pretrained=env.get("ATTNFLOWS_PRETRAINED") or None,
            finetuned=env.get("ATTNFLOWS_FINETUNED") or None,
            index=index,
            tau=tau_value,
            allow_model_paths=env.get("ATTNFLOWS_ALLOW_MODEL_PATHS", "").strip().lower() in _TRUE,
            device=env.get("ATTNFLOWS_DEVICE") or None,
        )

    def model_refs(self) -> tuple[str | None, str | None]:
        """The model pair to load: as given, else the models named in the index's manifest (when
        they are still where it says), else (None, None) = the offline default."""
        if self.pretrained is not None or self.finetuned is not None or not self.index:
            return self.pretrained, self.finetuned
        manifest = peek_index_manifest(self.index)
        try:
            names = [manifest["fingerprint"][role]["name"] for role in ("pretrained", "finetuned")]
        except (KeyError, TypeError):
            return None, None
        if all(Path(n).is_dir() for n in names):
            return names[0], names[1]
        return None, None


# --------------------------------------------------------------------------------------------------
# help text (the encodings, in the views' colours)
# --------------------------------------------------------------------------------------------------


def _swatch(color: str, width: int = 12) -> str:
    return (f'<span style="display:inline-block;width:{width}px;height:12px;background:{color};'
            f'vertical-align:middle;border-radius:2px"></span>')


HELP_HTML = f"""
<div class="af-help" style="font-size:13px;line-height:1.45">
<p><b>Models.</b> {_swatch(PRETRAINED_COLOR)} <b style="color:{PRETRAINED_COLOR}">pre-trained</b> ·
{_swatch(FINETUNED_COLOR)} <b style="color:{FINETUNED_COLOR}">fine-tuned</b> ·
{_swatch(SHARED_COLOR)} <b style="color:{SHARED_COLOR}">shared by both</b>. The same colours are used in
every view.</p>
<p><b>Attention Graph (§4.1).</b> An edge joins token <i>b</i> at level <i>k</i> to token <i>a</i> at level
<i>k</i>+1 when some head of layer <i>k</i> puts more than τ of <i>a</i>'s attention on <i>b</i>. The graph is
traced back from [CLS] (the root, level L); lower τ = more edges.</p>
<p><b>Radial Attention Flow view (§4.3).</b> [CLS] sits in the centre; each ring outwards is one level
further from the output (level 0 outermost). Sentence A runs clockwise, sentence B counter-clockwise; the
black tick marks where they meet. Next to each token, one small <b>head glyph</b> per head: its shade says
how many tokens that head attends to in the level below (light = 1 … dark = 6+). In the combined mode a
glyph is {_swatch(PRETRAINED_COLOR, 8)} or {_swatch(FINETUNED_COLOR, 8)} when only one model uses the
head, and split {_swatch(PRETRAINED_COLOR, 6)}{_swatch(FINETUNED_COLOR, 6)} when both do. The
<b>sparkline</b> under a token shows where the tokens it attends to lie (left = earlier, centre =
itself, right = later; height = number of heads, up to 3).</p>
<p><b>Sentence view (§4.2).</b> Up to five circles above each token: its influence
I<sub>l</sub> (eq. 4) at the chosen level, rounded up. In the combined mode
{_swatch(SHARED_COLOR, 8)} circles are influence both models share, the rest is
{_swatch(PRETRAINED_COLOR, 8)} or {_swatch(FINETUNED_COLOR, 8)} for the model with more.</p>
<p><b>Sentence Context view.</b> Where in the sentence pair the tokens of each ring come from, coloured by
model.</p>
<p><b>Interactions (§4.4).</b> Hover a token: what it depends on (lower levels) and what depends on it
(higher levels). Hover a head glyph: the same through that head only. Click to freeze, shift-click to add
tokens, brush tokens in one ring for their common dependencies, or in two rings for the paths between
them. The frozen selection, τ, mode and level are kept in the page's URL: copy it to share the view.</p>
<p><b>Corpus browser.</b> Every sample's per-head usage in both models is indexed. Similar samples are
searched in the pre-trained, fine-tuned or difference space, or all three, optionally on chosen heads
only. A typed pair is searched like a corpus sample.</p>
</div>
"""


# --------------------------------------------------------------------------------------------------
# URL state
# --------------------------------------------------------------------------------------------------


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
            if get["level"].strip().isdigit():
                state.level = int(get["level"])
            else:
                errors.append(f"level in the link must be a whole number; got {get['level']!r}")
        if get.get("sel", "").strip():
            try:
                state.selection = _parse_pairs(get["sel"], "the selection (sel) in the link")
            except ValueError as exc:
                errors.append(str(exc))
        if get.get("head", "").strip():
            try:
                pairs = _parse_pairs(get["head"], "head in the link (layer:head)")
                if len(pairs) != 1:
                    raise ValueError(f"head in the link must be one 'layer:head'; got {get['head']!r}")
                state.head = pairs[0]
            except ValueError as exc:
                errors.append(str(exc))
        if get.get("hm"):
            if get["hm"] in ("both", "pretrained", "finetuned"):
                state.head_model = get["hm"]
            else:
                errors.append(f"hm in the link must be both, pretrained or finetuned; got {get['hm']!r}")
        return state, errors


# --------------------------------------------------------------------------------------------------
# the app
# --------------------------------------------------------------------------------------------------


#: how long a finished model run waits for its session's next tick; a session closed meanwhile never
#: gives one, and its coroutine then ends instead of holding the session's objects forever
LOCKED_TIMEOUT_S = 120.0


async def _locked(doc, fn: Callable[[], Any]) -> None:
    """Run ``fn`` on ``doc``'s next tick, holding the document lock, and wait for it.

    Work done in a worker thread comes back here: Bokeh then sends the changes to the browser in order.
    (Changing Bokeh models directly from an unlocked coroutine leaves them pending, and
    ``pn.io.hold``'s event combining reorders a data swap and a column update of one source.)
    """
    future = asyncio.get_running_loop().create_future()

    def call():
        if future.done():
            return
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            future.set_exception(exc)
        else:
            future.set_result(None)

    try:
        doc.add_next_tick_callback(call)
    except Exception:  # noqa: BLE001 - the session is gone
        return
    try:
        await asyncio.wait_for(future, LOCKED_TIMEOUT_S)
    except asyncio.TimeoutError:
        log.debug("session closed before a finished run could be shown")


class AttnFlowsApp(pn.viewable.Viewer):
    """One user's session: the Attention Flows views of one sentence pair plus the corpus browser.

    Parameters
    ----------
    config:
        :class:`AppConfig` (models, index, initial τ, whether model paths may be typed).
    registry:
        Where models, indexes and results are shared (default: :func:`shared_registry`).
    pair, index:
        An already loaded ``ModelPair`` / ``SignatureIndex`` (notebooks, tests); they take precedence
        over ``config``. ``index=False`` means no corpus browser.
    query:
        A URL query string to restore (default: the session's URL when served).
    sync_url:
        Write the state back into the browser's URL (default: when served).

    The shareable state is in parameters (``sample_id``, ``tau``, ``mode``, ``level``, ``selection``,
    ``head``, ``head_model``, ``sentence_a``/``sentence_b`` for a typed pair); setting them from Python
    updates the views.
    """

    sample_id = param.String(default="", doc="id of the corpus sample shown ('' when a typed pair is shown)")
    sentence_a = param.String(default="", doc="sentence A of a typed pair ('' when a corpus sample is shown)")
    sentence_b = param.String(default="", doc="sentence B of a typed pair")
    tau = param.Number(default=DEFAULT_TAU, bounds=TAU_BOUNDS, step=0.01, doc="τ: attention above τ is an edge (§4.1)")
    mode = param.Selector(default="combined", objects=list(MODES), doc="combined (both models), pretrained or finetuned")
    level = param.Integer(default=0, bounds=(0, None), doc="level k (0-based) whose influence I_k (eq. 4) the sentence view shows")
    selection = param.List(default=[], doc="frozen selection [[level, token], ...]")
    head = param.List(default=[], doc="[] or [layer, h]: the head restriction of the frozen selection")
    head_model = param.Selector(default="both", objects=["both", "pretrained", "finetuned"])

    result = param.Parameter(default=None, doc="the PairResult shown (read-only)")
    message = param.String(default="", doc="the last notice or error shown to the user (plain text)")
    busy = param.Boolean(default=False, doc="True while models load or run")

    def __init__(
        self,
        config: AppConfig | None = None,
        *,
        registry: Registry | None = None,
        pair: Any = None,
        index: Any = None,
        query: str | None = None,
        sync_url: bool | None = None,
        **params: Any,
    ) -> None:
        self.config = config or AppConfig()
        params.setdefault("tau", self.config.tau)
        super().__init__(**params)
        self.registry = registry or shared_registry()
        self.pair = pair
        self.index = None if index is False else index
        self._want_index = index is not False
        self.view = None  # AttentionFlowsView, once a result exists
        self.browser = None  # CorpusBrowser, once an index is open
        self._sample_row: dict | None = None
        self._guard = False  # True while the app itself pushes state into its children
        self._run_seq = 0  # the latest model run: an older one that finishes later is dropped
        self._pending_url: UrlState | None = None
        served = bool(pn.state.curdoc and pn.state.curdoc.session_context)
        self._served = served
        self._sync_url = served if sync_url is None else bool(sync_url)
        if query is None and served and pn.state.location is not None:
            query = pn.state.location.search or ""
        self._build_widgets()
        self._layout = self._make_layout()
        self.param.watch(self._on_view_params, ["tau", "mode", "level"])
        self.param.watch(self._on_selection_params, ["selection", "head", "head_model"])
        self.param.watch(self._write_url, ["sample_id", "sentence_a", "sentence_b", "tau", "mode", "level",
                                           "selection", "head", "head_model"])
        self.param.watch(self._on_busy, ["busy"])
        self._notices: list[str] = []
        url_state, errors = UrlState.parse(query or "")
        self._notices.extend(errors)
        self._pending_url = url_state
        if self._resources_ready():
            self._start(url_state)
        else:
            self._set_busy(True, "Loading the model pair and the index …")
            if served:
                pn.state.onload(self._start_async)
            else:  # a notebook or a test without a server: load right here
                self._start(url_state)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_env(cls, **kwargs: Any) -> AttnFlowsApp:
        """An app configured by ``ATTNFLOWS_*`` environment variables (see :meth:`AppConfig.from_env`)."""
        return cls(AppConfig.from_env(), **kwargs)

    def _build_widgets(self) -> None:
        cfg = self.config
        self._spinner = pn.indicators.LoadingSpinner(value=False, size=22, name="", margin=(8, 5), color="light",
                                                     bgcolor="dark")
        self._busy_text = pn.pane.HTML("", margin=(10, 5), styles={"color": "white", "font-size": "13px"},
                                       css_classes=["af-busy"])
        self._alert = pn.pane.Alert("", alert_type="warning", visible=False, sizing_mode="stretch_width",
                                    css_classes=["af-message"], margin=(5, 10))
        self._pair_info = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["af-pair"], margin=(0, 5))

        self._tau_w = pn.widgets.FloatSlider(name="τ (attention threshold)", start=TAU_BOUNDS[0], end=TAU_BOUNDS[1],
                                             step=0.01, value=self.tau, sizing_mode="stretch_width")
        self._tau_w.param.watch(lambda e: setattr(self, "tau", round(float(e.new), 4)), "value_throttled")
        self._mode_w = pn.widgets.RadioButtonGroup(options=MODE_LABELS, value=self.mode, sizing_mode="stretch_width",
                                                   button_type="default")
        self._mode_w.param.watch(lambda e: setattr(self, "mode", e.new), "value")
        self._level_w = pn.widgets.IntSlider(name="Level (sentence view, 0 = input)", start=0, end=1, value=self.level,
                                             sizing_mode="stretch_width")
        self._level_w.param.watch(lambda e: setattr(self, "level", int(e.new)), "value_throttled")
        self._clear_w = pn.widgets.Button(name="Clear selection", button_type="default", sizing_mode="stretch_width")
        self._clear_w.on_click(lambda e: self.param.update(selection=[], head=[], head_model="both"))
        self._svg_w = pn.widgets.FileDownload(callback=lambda: self._export("svg"), filename="attention-flows.svg",
                                              label="SVG", embed=False, button_type="default", sizing_mode="stretch_width")
        self._png_w = pn.widgets.FileDownload(callback=lambda: self._export("png"), filename="attention-flows.png",
                                              label="PNG", embed=False, button_type="default", sizing_mode="stretch_width")

        self._a_w = pn.widgets.TextAreaInput(name="Sentence A", placeholder="first sentence / premise / question",
                                             max_length=cfg.max_chars, rows=3, sizing_mode="stretch_width",
                                             css_classes=["af-input-a"])
        self._b_w = pn.widgets.TextAreaInput(name="Sentence B", placeholder="second sentence / hypothesis / answer",
                                             max_length=cfg.max_chars, rows=3, sizing_mode="stretch_width",
                                             css_classes=["af-input-b"])
        self._run_w = pn.widgets.Button(name="Run pair and find similar samples", button_type="primary",
                                        sizing_mode="stretch_width", css_classes=["af-run"])
        self._run_w.on_click(self._on_run_click)
        self._form_note = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["af-form-note"], margin=(0, 10),
                                       styles={"font-size": "12px"})

        self._model_pre_w = self._model_fine_w = self._model_load_w = None
        if cfg.allow_model_paths:
            self._model_pre_w = pn.widgets.TextInput(name="Pre-trained (hub name or server folder)",
                                                     sizing_mode="stretch_width", css_classes=["af-model-pre"])
            self._model_fine_w = pn.widgets.TextInput(name="Fine-tuned (hub name or server folder)",
                                                      sizing_mode="stretch_width", css_classes=["af-model-fine"])
            self._model_load_w = pn.widgets.Button(name="Load model pair", sizing_mode="stretch_width",
                                                   css_classes=["af-model-load"])
            self._model_load_w.on_click(self._on_load_models)

        self._sample_card = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["af-sample"], margin=(0, 10))
        self._status = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["af-status"], margin=(0, 10),
                                    styles={"font-size": "12px", "color": "#444"})
        self._sentence_slot = pn.Column(sizing_mode="stretch_width", css_classes=["af-sentence-view"])
        self._flow_slot = pn.Column(css_classes=["af-flow-view"])
        self._context_slot = pn.Column(css_classes=["af-context-view"])
        self._browser_slot = pn.Column(sizing_mode="stretch_width", css_classes=["af-browser"])
        self._help = pn.pane.HTML(HELP_HTML, sizing_mode="stretch_width", css_classes=["af-help"])

    def _sidebar(self) -> list:
        view_controls = pn.Column(
            "#### View", self._mode_w, self._tau_w, self._level_w, self._clear_w,
            pn.Row(pn.pane.HTML("Export:", margin=(12, 5)), self._svg_w, self._png_w, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
        form = pn.Column(
            "#### Your sentence pair", self._a_w, self._b_w, self._run_w, self._form_note,
            sizing_mode="stretch_width", css_classes=["af-form"],
        )
        models = [self._pair_info]
        if self.config.allow_model_paths:
            models += [self._model_pre_w, self._model_fine_w, self._model_load_w]
        pair_box = pn.Column("#### Model pair", *models, sizing_mode="stretch_width")
        # one root per template area: every extra Bokeh root costs a full model-graph walk per session
        return [pn.Column(pair_box, view_controls, form,
                          pn.Card(self._help, title="How to read the views", collapsed=True, sizing_mode="stretch_width"),
                          sizing_mode="stretch_width")]

    def _main(self) -> list:
        flows = pn.Row(self._flow_slot, pn.Column(self._context_slot, self._status, width=340),
                       sizing_mode="stretch_width")
        top = self._main_top = pn.Column(self._alert, self._sample_card, self._sentence_slot, flows,
                                         sizing_mode="stretch_width", css_classes=["af-main"])
        return [pn.Column(top, self._browser_slot, sizing_mode="stretch_width")]

    def _make_layout(self):
        self._main_parts = self._main()
        self._side_parts = self._sidebar()
        return pn.Row(pn.Column(*self._side_parts, width=330), pn.Column(*self._main_parts, sizing_mode="stretch_width"),
                      sizing_mode="stretch_width")

    def template(self) -> pn.template.BaseTemplate:
        """The full page (BootstrapTemplate) for serving: sidebar, main area, busy indicator in the header.

        Every asset comes from the Panel server itself, no web font or CDN, so the page works offline
        (FastListTemplate's design would pull Open Sans from Google Fonts).
        """
        return pn.template.BootstrapTemplate(
            title=self.config.title,
            sidebar=self._side_parts,
            main=self._main_parts,
            header=[pn.Row(self._spinner, self._busy_text)],
            header_background=FINETUNED_COLOR,
            sidebar_width=350,
        )

    def __panel__(self):
        return self._layout

    # ------------------------------------------------------------------ busy / messages

    def _set_busy(self, on: bool, text: str = "") -> None:
        self.busy = on
        self._busy_text.object = _esc(text) if on else ""

    def _on_busy(self, event) -> None:
        self._spinner.value = bool(event.new)
        self._main_top.loading = bool(event.new)

    def notify(self, text: str, kind: str = "warning") -> None:
        """Show ``text`` (plain text, escaped) in the message bar; '' hides it."""
        self.message = text
        self._alert.alert_type = kind
        self._alert.object = "<br>".join(_md_text(line) for line in str(text).split("\n"))
        self._alert.visible = bool(text)

    def _push(self) -> None:
        """In a notebook, Bokeh models changed in place (the views' figures) need an explicit push."""
        if self._served:
            return
        for part in (self._layout, *self._main_parts, *self._side_parts):
            if getattr(part, "_models", None):
                try:
                    pn.io.push_notebook(part)
                except Exception:  # noqa: BLE001 - no comm to push to (a test, a script)
                    pass

    def _flush_notices(self) -> None:
        self.notify("\n".join(self._notices))
        self._notices = []

    # ------------------------------------------------------------------ loading

    def _model_refs(self) -> tuple[str | None, str | None]:
        return self.config.model_refs()

    def _resources_ready(self) -> bool:
        """Whether the pair (and index) are loaded already, so that the first view can be built now."""
        if self.pair is None:
            pre, fine = self._model_refs()
            self.pair = self.registry.cached_pair(pre, fine, device=self.config.device)
            if self.pair is None:
                return False
        if self.index is None and self._want_index and self.config.index:
            self.index = self.registry.cached_index(self.config.index, pair=self.pair)
            if self.index is None:
                return False
        return True

    def _load_resources(self) -> None:
        """Load the pair and open the index through the registry (blocking; run in a thread when served)."""
        if self.pair is None:
            pre, fine = self._model_refs()
            self.pair = self.registry.pair(pre, fine, device=self.config.device)
        if self.index is None and self._want_index and self.config.index:
            try:
                self.index = self.registry.index(self.config.index, pair=self.pair)
            except (OSError, ValueError) as exc:
                self._notices.append(f"The corpus browser is off: {exc}")
                self._want_index = False

    async def _start_async(self) -> None:
        locked = functools.partial(_locked, pn.state.curdoc)
        try:
            await asyncio.to_thread(self._load_resources)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the session stays usable
            log.exception("loading the model pair failed")
            await locked(lambda: (self._set_busy(False), self.notify(f"Loading the model pair failed: {exc}", "danger")))
            return
        await locked(lambda: self._start(self._pending_url or UrlState(), loaded=True))

    def _start(self, url: UrlState, loaded: bool = False) -> None:
        """Build the first view: from the URL's state when it has one, else the first sample."""
        if not loaded:
            try:
                self._load_resources()
            except Exception as exc:  # noqa: BLE001
                log.exception("loading the model pair failed")
                self._set_busy(False)
                self.notify(f"Loading the model pair failed: {exc}", "danger")
                return
        self._pair_info.object = self._pair_html()
        self._level_w.end = max(1, self.pair.num_layers - 1)
        self._setup_browser()
        # what to show first
        a = b = None
        sample_id = ""
        if url.a is not None or url.b is not None:
            a, b, notes = self._clean_pair(url.a or "", url.b or "")
            self._notices.extend(f"Link: {n}" for n in notes)
            if a is None:
                a = b = None
        elif url.sample is not None:
            if self.index is None:
                self._notices.append(f"The link names sample {url.sample!r}, but no corpus index is loaded.")
            elif self._sample_known(url.sample):
                sample_id = url.sample
        if a is None and not sample_id:
            sample_id = self._first_sample_id() or ""
            if not sample_id:
                a, b = EXAMPLE_PAIR
        state = {k: v for k, v in (("tau", url.tau), ("mode", url.mode)) if v is not None}
        try:
            if sample_id:
                row = self.index.sample(sample_id)
                result = self.registry.run(self.pair, row["sentence_a"], row["sentence_b"])
                self._apply_result(result, sample_id=sample_id, row=row, **state)
            else:
                result = self.registry.run(self.pair, a, b)
                self._apply_result(result, a=a, b=b, **state)
                if (a, b) != EXAMPLE_PAIR:
                    self._a_w.value, self._b_w.value = a, b  # the link's pair, ready to edit
            self._apply_url_view_state(url)
        except Exception as exc:  # noqa: BLE001
            log.exception("building the first view failed")
            self._notices.append(f"Could not show the first sample: {exc}")
        self._set_busy(False)
        self._flush_notices()
        self._write_url()

    def _apply_url_view_state(self, url: UrlState) -> None:
        """Level and frozen selection from the link, checked against the sample shown."""
        if url.level is not None:
            top = self.pair.num_layers - 1
            if 0 <= url.level <= top:
                self.level = url.level
            else:
                self._notices.append(f"level {url.level} in the link is out of range 0 … {top}; kept {self.level}")
        if url.selection:
            try:
                self.param.update(selection=url.selection, head=url.head or [], head_model=url.head_model or "both")
            except ValueError as exc:
                self._notices.append(f"The selection in the link does not fit this sample: {exc}")
                with param.parameterized.discard_events(self):
                    self.param.update(selection=[], head=[], head_model="both")
                self.view.param.update(selection=[], head=[], head_model="both")

    def _setup_browser(self) -> None:
        """The corpus browser, or a note when there is no index.

        When served, the browser (two tables, a heatmap, a signature map: about 40% of a session's
        models) is built once the page has been drawn (``pn.state.onload``), so that the first view,
        the sample and its flow views, arrives sooner; a spinner holds its place meanwhile.
        """
        if self.index is None:
            note = ("No corpus index is loaded: type a sentence pair in the sidebar. Build one with "
                    "<code>attnflows index build</code> and start the app with <code>--index</code>.")
            self._browser_slot.objects = [pn.pane.HTML(f"<p>{note}</p>", css_classes=["af-no-index"])]
            return
        if not self._served:
            self._build_browser()
            return
        self._browser_slot.objects = [pn.Row(
            pn.indicators.LoadingSpinner(value=True, size=24, name=""),
            pn.pane.HTML("Loading the corpus browser …", margin=(12, 5)),
            css_classes=["af-browser-loading"],
        )]
        pn.state.onload(self._build_browser)

    def _build_browser(self) -> None:
        from attnflows_panel.views.corpus_browser import CorpusBrowser

        if self.index is None or self.browser is not None:
            return
        index = self.index
        try:
            browser = CorpusBrowser(index)
        except Exception as exc:  # noqa: BLE001 - the flow views keep working without it
            log.exception("building the corpus browser failed")
            self._browser_slot.objects = []
            self.notify(f"The corpus browser failed to start: {exc}", "danger")
            return
        self.browser = browser
        self._sync_browser()
        browser.param.watch(self._on_browser_pick, "selected_id")
        self._browser_slot.objects = [browser]

    def _sync_browser(self) -> None:
        """Point the browser's similar-samples search at what is shown: a corpus sample or a typed pair."""
        if self.browser is None or self.result is None:
            return
        guard, self._guard = self._guard, True
        try:
            if self.sample_id:
                self.browser.param.update(result=None, selected_id=self.sample_id)
            else:
                self.browser.param.update(selected_id=None, result=self.result)
        finally:
            self._guard = guard

    def _first_sample_id(self) -> str | None:
        if self.index is None or not len(self.index.metadata):
            return None
        return str(self.index.metadata["id"].iloc[0])

    def _sample_known(self, sample_id: str, where: str = " in the link", then: str = " Showing another sample instead.") -> bool:
        from attnflows_panel.index import UnknownSampleError

        try:
            self.index.row_of(sample_id)
            return True
        except UnknownSampleError:
            ids = ", ".join(repr(str(x)) for x in self.index.metadata["id"].iloc[:3])
            self._notices.append(
                f"Unknown sample id {sample_id!r}{where}: this corpus has {len(self.index)} samples "
                f"(ids like {ids}).{then}"
            )
            return False

    # ------------------------------------------------------------------ showing a result

    def _apply_result(self, result, *, sample_id: str = "", row: dict | None = None, a: str = "", b: str = "",
                      **state: Any) -> None:
        """Show ``result`` (on the server's event loop): views, sample card, browser, URL."""
        from attnflows_panel.views.attention_flows import AttentionFlowsView

        self._guard = True
        try:
            L = int(np.asarray(result.pretrained.attentions).shape[0])
            level = min(self.level, L - 1)
            values = dict(tau=self.tau, mode=self.mode, level=level)
            values.update(state)
            self._sample_row = row
            with param.parameterized.discard_events(self):
                self.param.update(result=result, sample_id=sample_id, sentence_a=a, sentence_b=b,
                                  selection=[], head=[], head_model="both", **values)
            if self.view is None:
                self.view = AttentionFlowsView(result=result, tau=self.tau, mode=self.mode, level=self.level)
                self.view.param.watch(self._on_view_selection, ["selection", "head", "head_model"])
                self.view.param.watch(self._on_view_status, ["status"])
                parts = self.view.parts()  # live: later results, τ, mode and level update them in place
                self._sentence_slot.objects = [parts.sentence]
                self._flow_slot.objects = [parts.flow]
                self._context_slot.objects = [parts.context]
            else:
                self.view.param.update(result=result, tau=self.tau, mode=self.mode, level=self.level)
            self._tau_w.value = self.tau
            self._mode_w.value = self.mode
            self._level_w.param.update(end=max(1, L - 1), value=self.level)
            self._sample_card.object = self._sample_html(result, sample_id, row)
            self._status.object = self.view.status_html()
            self._sync_browser()
        finally:
            self._guard = False
        self._write_url()
        self._push()

    # ------------------------------------------------------------------ reactions

    def _on_view_params(self, *events) -> None:
        """τ, mode or level changed (sidebar, URL or Python): rebuild the graphs / views on the server."""
        if self._guard or self.view is None:
            return
        values = {e.name: e.new for e in events}
        t0 = time.perf_counter()
        try:
            self.view.param.update(**values)
        except ValueError as exc:
            self.notify(str(exc))
            return
        self._tau_w.value = self.tau
        self._mode_w.value = self.mode
        self._level_w.value = self.level
        self._status.object = self.view.status_html()
        self._push()
        log.debug("%s in %.1f ms", values, 1e3 * (time.perf_counter() - t0))

    def _on_selection_params(self, *events) -> None:
        if self._guard or self.view is None:
            return
        # a selection that does not fit the sample raises ValueError for the caller (URL restore, Python)
        self.view.param.update(**{e.name: e.new for e in events})
        self._push()

    def _on_view_selection(self, *events) -> None:
        """Clicks and brushes in the browser set the view's selection: mirror it into the app (and URL)."""
        if self._guard:
            return
        self._guard = True
        try:
            self.param.update(**{e.name: e.new for e in events})
        finally:
            self._guard = False
        self._write_url()

    def _on_view_status(self, event) -> None:
        if self.view is not None:
            self._status.object = self.view.status_html()

    def _on_browser_pick(self, event) -> None:
        if self._guard or not event.new or event.new == self.sample_id:
            return
        self.show_sample(str(event.new))

    def _on_run_click(self, event) -> None:
        self.run_pair(self._a_w.value_input if self._a_w.value_input is not None else self._a_w.value,
                      self._b_w.value_input if self._b_w.value_input is not None else self._b_w.value)

    # ------------------------------------------------------------------ public actions

    def _clean_pair(self, a: str, b: str) -> tuple[str | None, str | None, list[str]]:
        """Check a typed pair: both non-empty, each at most ``max_chars`` characters (cut, with a note)."""
        notes = []
        a, b = str(a or ""), str(b or "")
        if not a.strip() or not b.strip():
            missing = " and ".join(n for n, t in (("sentence A", a), ("sentence B", b)) if not t.strip())
            notes.append(f"Please type both sentences: {missing} is empty.")
            return None, None, notes
        cut = []
        limit = self.config.max_chars
        if len(a) > limit:
            a, _ = a[:limit], cut.append("A")
        if len(b) > limit:
            b, _ = b[:limit], cut.append("B")
        if cut:
            notes.append(f"Sentence {' and '.join(cut)} was cut to {limit} characters.")
        return a, b, notes

    def run_pair(self, sentence_a: str, sentence_b: str) -> None:
        """Run a typed pair through both models (in a worker thread when served), show it and search
        the corpus for samples like it. Empty or over-long input gives a visible note."""
        a, b, notes = self._clean_pair(sentence_a, sentence_b)
        if a is None:
            self._form_note.object = f'<span style="color:#b00020">{_esc(notes[0])}</span>'
            self.notify(notes[0])
            return
        self._form_note.object = ""
        self._run_then(lambda: self.registry.run(self.pair, a, b),
                       lambda r: self._after_typed(r, a, b, notes),
                       "Running both models on your sentence pair …")

    def _after_typed(self, result, a: str, b: str, notes: list[str]) -> None:
        self._apply_result(result, a=a, b=b)
        self._a_w.value, self._b_w.value = a, b
        if result.truncated:
            notes.append(f"The pair is longer than the models' maximum of {self.pair.max_length} tokens: "
                         "it was truncated (tokens were dropped from the end of the longer sentence).")
        self._form_note.object = "<br>".join(_esc(n) for n in notes)
        self.notify("\n".join(notes), "info" if notes else "warning")

    def show_sample(self, sample_id: str) -> None:
        """Show a corpus sample by id (a visible message for an unknown id)."""
        if self.index is None:
            self.notify(f"No corpus index is loaded, so there is no sample {sample_id!r}.")
            return
        if not self._sample_known(sample_id, where="", then=""):
            self._flush_notices()
            return
        row = self.index.sample(sample_id)
        self._run_then(lambda: self.registry.run(self.pair, row["sentence_a"], row["sentence_b"]),
                       lambda r: (self._apply_result(r, sample_id=sample_id, row=row), self.notify("")),
                       f"Running both models on sample {sample_id} …")

    def _run_then(self, work: Callable[[], Any], then: Callable[[Any], Any], busy_text: str) -> None:
        """``then(work())``: in a worker thread with a busy indicator when served, inline otherwise."""
        self._run_seq += 1
        seq = self._run_seq
        if not self._served:
            try:
                then(work())
            except Exception as exc:  # noqa: BLE001
                self.notify(f"{type(exc).__name__}: {exc}", "danger")
            return

        doc = pn.state.curdoc
        locked = functools.partial(_locked, doc)

        async def task():
            await locked(lambda: self._set_busy(True, busy_text))
            try:
                result = await asyncio.to_thread(work)  # the models run off the event loop
                if seq == self._run_seq:  # a later pick or run supersedes this one
                    await locked(lambda: then(result))
            except Exception as exc:  # noqa: BLE001 - a failing run is a message, not a broken session
                log.exception("model run failed")
                await locked(lambda: self.notify(f"{type(exc).__name__}: {exc}", "danger"))
            finally:
                if seq == self._run_seq:
                    await locked(lambda: self._set_busy(False))

        pn.state.execute(task)

    def _on_load_models(self, event) -> None:
        if not self.config.allow_model_paths:  # pragma: no cover - the widgets do not exist then
            self.notify("This server does not allow loading other models (start it with --allow-model-paths).")
            return
        pre = (self._model_pre_w.value or "").strip() or None
        fine = (self._model_fine_w.value or "").strip() or None
        if fine is None:
            self.notify("Type at least the fine-tuned model (hub name or a folder on the server).")
            return

        def load():
            return self.registry.pair(pre, fine, device=self.config.device)

        def then(pair):
            self.pair = pair
            self._pair_info.object = self._pair_html()
            if self.index is not None:
                try:
                    self.index.check_pair(pair)
                except ValueError as exc:
                    self.index, self.browser = None, None
                    self._setup_browser()
                    self.notify(f"Loaded {fine}. The corpus browser is off: {exc}")
            a = self.sentence_a or (self._sample_row or {}).get("sentence_a") or EXAMPLE_PAIR[0]
            b = self.sentence_b or (self._sample_row or {}).get("sentence_b") or EXAMPLE_PAIR[1]
            self._apply_result(self.registry.run(pair, a, b), a=a, b=b)

        self._run_then(load, then, "Loading the model pair …")

    def _export(self, fmt: str):
        if self.view is None:
            return io.BytesIO(b"")
        return io.BytesIO(self.view.export(fmt))

    # ------------------------------------------------------------------ URL

    def url_query(self) -> str:
        """The query string that restores this view (defaults and empty values left out)."""
        q: dict[str, str] = {}
        if self.sample_id:
            q["sample"] = self.sample_id
        elif self.sentence_a or self.sentence_b:
            q["a"], q["b"] = self.sentence_a, self.sentence_b
        if abs(self.tau - self.config.tau) > 1e-9:
            q["tau"] = f"{self.tau:g}"
        if self.mode != "combined":
            q["mode"] = self.mode
        if self.level:
            q["level"] = str(self.level)
        if self.selection:
            q["sel"] = _format_pairs(self.selection)
            if self.head:
                q["head"] = f"{int(self.head[0])}:{int(self.head[1])}"
                if self.head_model != "both":
                    q["hm"] = self.head_model
        return urllib.parse.urlencode(q)

    def _write_url(self, *events) -> None:
        if self._guard or not self._sync_url or self.result is None:
            return
        loc = pn.state.location
        if loc is None:
            return
        query = self.url_query()
        search = f"?{query}" if query else ""
        if loc.search != search:
            loc.search = search

    # ------------------------------------------------------------------ html

    def _pair_html(self) -> str:
        p = self.pair
        if p is None:
            return "<i>loading …</i>"

        def short(name):
            text = str(name)
            return _esc(text if len(text) <= 48 else "…" + text[-46:])

        labels = ", ".join(_esc(x) for x in (p.labels or [])) or "none"
        rows = [
            f'{_swatch(PRETRAINED_COLOR)} <span title="{_esc(p.pretrained_name)}">{short(p.pretrained_name)}</span>',
            f'{_swatch(FINETUNED_COLOR)} <span title="{_esc(p.finetuned_name)}">{short(p.finetuned_name)}</span>',
            f"L = {p.num_layers} layers × H = {p.num_heads} heads · max {p.max_length} tokens",
            f"labels: {labels}",
        ]
        if self.index is not None:
            rows.append(f"corpus index: {len(self.index)} samples (τ = {self.index.tau:g})")
        return "<div style='font-size:12px;line-height:1.6'>" + "<br>".join(rows) + "</div>"

    @staticmethod
    def _probs_html(out, color: str) -> str:
        probs = getattr(out, "probs", None)
        if not probs:
            return "<span style='color:#777'>no classification head (a bare pre-trained encoder)</span>"
        label = getattr(out, "label", None)
        bars = []
        for name, p in sorted(probs.items(), key=lambda kv: -kv[1]):
            bold = "font-weight:600;" if name == label else ""
            bars.append(
                f"<span style='display:inline-block;min-width:150px;{bold}'>{_esc(name)}</span>"
                f"<span style='display:inline-block;width:{int(round(120 * float(p)))}px;height:10px;background:{color};"
                f"vertical-align:middle;margin-right:6px'></span>{float(p):.2f}"
            )
        return "<br>".join(bars)

    def _sample_html(self, result, sample_id: str, row: dict | None) -> str:
        if sample_id:
            head = f"<b>Sample</b> <code class='af-sample-id'>{_esc(sample_id)}</code>"
            if row is not None and row.get("label_name") is not None:
                head += f" · gold label: <b class='af-gold'>{_esc(row['label_name'])}</b>"
        else:
            head = "<b>Your sentence pair</b> (not in the corpus)"
        notes = []
        if getattr(result, "truncated", False):
            notes.append(f"<span style='color:#b00020'>truncated to {result.n} tokens, the models' maximum</span>")
        preds = (
            f"<div style='display:flex;gap:30px;flex-wrap:wrap;margin-top:4px'>"
            f"<div><b style='color:{FINETUNED_COLOR}'>fine-tuned</b> predicts "
            f"<b class='af-pred-fine'>{_esc(result.finetuned.label)}</b><br>{self._probs_html(result.finetuned, FINETUNED_COLOR)}</div>"
            f"<div><b style='color:{PRETRAINED_COLOR}'>pre-trained</b> "
            f"{'predicts <b>' + _esc(result.pretrained.label) + '</b>' if result.pretrained.label else ''}<br>"
            f"{self._probs_html(result.pretrained, PRETRAINED_COLOR)}</div></div>"
        )
        return (
            "<div style='font-size:13px;line-height:1.5'>"
            f"{head} · {result.n} tokens{' · ' + ' · '.join(notes) if notes else ''}<br>"
            f"<span style='color:#666'>A:</span> <span class='af-text-a'>{_esc(result.sentence_a)}</span><br>"
            f"<span style='color:#666'>B:</span> <span class='af-text-b'>{_esc(result.sentence_b)}</span>"
            f"{preds}</div>"
        )


# --------------------------------------------------------------------------------------------------
# serving
# --------------------------------------------------------------------------------------------------


def _extensions() -> None:
    """Load the JavaScript of components that arrive after the first render (the corpus browser's
    Tabulator tables): Panel only ships what the first document holds, unless told."""
    pn.extension("tabulator")


def make_app(config: AppConfig | None = None, registry: Registry | None = None,
             on_create: Callable[[AttnFlowsApp], None] | None = None) -> Callable[[], pn.viewable.Viewable]:
    """The per-session factory that a server calls for every new session (its own app, shared models).

    ``on_create(app)`` is called with each new session's app (monitoring, tests).
    """
    config = config or AppConfig()
    registry = registry or shared_registry()

    def create():
        _extensions()
        app = AttnFlowsApp(config, registry=registry)
        if on_create is not None:
            on_create(app)
        return app.template()

    return create


def preload(config: AppConfig, registry: Registry | None = None, progress: bool = True) -> None:
    """Load the pair and open the index into the registry before the first session (warm start)."""
    registry = registry or shared_registry()
    pre, fine = config.model_refs()
    if progress:
        print("Loading the model pair …", flush=True)
    pair = registry.pair(pre, fine, device=config.device)
    if config.index:
        if progress:
            print(f"Opening the index {config.index} …", flush=True)
        registry.index(config.index, pair=pair)


def serve(
    config: AppConfig,
    *,
    registry: Registry | None = None,
    port: int = 5006,
    address: str | None = None,
    websocket_origin: list[str] | str | None = None,
    prefix: str = "",
    show: bool = False,
    num_threads: int | None = None,
    threaded: bool = False,
    preload_resources: bool = True,
    on_create: Callable[[AttnFlowsApp], None] | None = None,
    **kwargs: Any,
):
    """Serve the app with ``pn.serve``: one :class:`AttnFlowsApp` per session, models shared.

    Loads the models and the index first (``preload_resources``), prints the URL, then serves until
    interrupted. ``threaded=True`` starts the server on a thread and returns ``(thread, server)``
    (tests, notebooks). ``port=0`` picks a free port.
    """
    registry = registry or shared_registry()
    if preload_resources:
        preload(config, registry)
    origins = [websocket_origin] if isinstance(websocket_origin, str) else list(websocket_origin or [])
    extra = dict(kwargs)
    if num_threads:
        extra["num_threads"] = num_threads
    path = "/" + prefix.strip("/") if prefix and prefix.strip("/") else ""
    if path:
        extra["prefix"] = path
    common = dict(port=port, address=address, websocket_origin=origins or None, show=show, title=config.title,
                  verbose=False, **extra)
    app = make_app(config, registry, on_create)
    if threaded:
        import uuid

        server_id = uuid.uuid4().hex
        thread = pn.serve(app, threaded=True, start=True, server_id=server_id, **common)
        deadline = time.monotonic() + 60
        while server_id not in pn.state._servers:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the app server did not start")
            time.sleep(0.02)
        server = pn.state._servers[server_id][0]
        print(f"Attention Flows is served at {_url(address, server.port, path)}", flush=True)
        return thread, server
    server = pn.serve(app, start=False, **common)
    print(f"Attention Flows is served at {_url(address, server.port, path)}", flush=True)
    server.start()
    try:
        server.io_loop.start()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        print("stopped", flush=True)
    return server


def _url(address: str | None, port: int, path: str = "") -> str:
    host = "localhost" if address in (None, "", "0.0.0.0", "::") else address
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}{path}/"


if pn.state.served:  # `panel serve attnflows_panel/app.py`: configured by ATTNFLOWS_* variables
    _extensions()
    AttnFlowsApp.from_env().template().servable(title="Attention Flows")
