"""The app for a decoder pair (base vs instruct): one sequence, a root the user picks (issue #28, 4).

:class:`DecoderApp` is what ``attnflows serve --pretrained BASE --finetuned INSTRUCT`` serves when the two
models are causal language models (:func:`~attnflows_panel.causal.is_causal_lm`). Its page:

- a sidebar with the model pair, a prompt (plain text, or a chat as a JSON list of ``{"role", "content"}``
  messages, which goes through the tokenizer's chat template), an optional greedy continuation by the
  fine-tuned model, the **root** (a token position; by default the prompt's last token, whose state
  predicts the next token) and the view's controls;
- a sequence card: the segments by role, the root, and each model's next-token prediction there (top 5)
  with the KL divergence between the two;
- the radial Attention Flow view, the context view, the status and the sentence view of one
  :class:`~attnflows_panel.views.attention_flows.AttentionFlowsView`, traced from the root through the
  causal attention (:mod:`attnflows_panel.causal_view`). The ring holds the sequence in reading order,
  clockwise from the left (9 o'clock); tokens after the root are never reached (causal attention) and
  fold into one run.

Picking a root: type its position, or click a token in the radial view (it freezes) and press
"Trace from the selected token". A new root re-uses both models' recorded queries and keys: only the
graph's rows are computed again, the models do not run again. A new prompt runs them (in an executor,
never holding the event loop or the document's lock, as the sentence-pair app does).

The page's URL keeps the state (:meth:`DecoderApp.url_query`): the prompt (``p``, up to
:data:`MAX_URL_PROMPT` characters) or the index's prompt (``sample``), the continuation (``gen``), the root
(``root``, from 1) and the view's τ, mode, level, frozen selection and head, with the sentence-pair app's
names; a new prompt, root, freeze, head or mode adds a history entry, τ and the level replace it, and Back
and Forward restore what the address names (the models run again only for another prompt).

Stable hooks for browser tests (CSS classes): ``af-prompt``, ``af-generate``, ``af-analyse``, ``af-root``,
``af-root-from-selection``, ``af-sequence`` (the card), ``af-pair``, ``af-message``, ``af-flow-view``,
``af-sentence-view``, ``af-context-view``, ``af-busy``; the sequence card carries ``data-root`` and
``data-n``.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import panel as pn
import param

from attnflows_panel import FINETUNED_COLOR, PRETRAINED_COLOR
from attnflows_panel.app.cards import esc
from attnflows_panel.app.config import AppConfig, model_label
from attnflows_panel.app.history import BrowserHistory, QuietWrites
from attnflows_panel.app.page import (
    APP_FLOW_HEIGHT,
    APP_SENTENCE_HEIGHT,
    SIDE_WIDTH,
    PageFrame,
    busy_indicator,
    fill,
    heading,
    message_bar,
    typed,
)
from attnflows_panel.app.scheduling import off_loop
from attnflows_panel.app.url_state import UrlState
from attnflows_panel.causal_view import ROLE_COLORS, CausalResult
from attnflows_panel.registry import Registry, shared_registry
from attnflows_panel.views.attention_flows import TAU_BOUNDS, AttentionFlowsView
from attnflows_panel.views.notebook_hold import in_session

__all__ = ["DecoderApp", "EXAMPLE_CHAT", "MAX_PROMPT_CHARS", "MAX_GENERATE"]

log = logging.getLogger(__name__)

#: what the prompt box holds when a session opens
EXAMPLE_CHAT = json.dumps([
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France, and why is it famous?"},
], indent=1)
#: the longest prompt accepted from the form (characters)
MAX_PROMPT_CHARS = 20_000
#: the most tokens the fine-tuned model may add to the prompt
MAX_GENERATE = 64
#: the rows kept for the graph: every weight above the slider's smallest τ, so any τ needs no model run
TAU_MIN = TAU_BOUNDS[0]
#: the longest prompt the page's URL carries (``p=``); a longer one is left out of the link
MAX_URL_PROMPT = 4000
#: the view state kept in the URL; τ and the level replace the current history entry, the rest adds one
_VIEW_STATE = ("tau", "mode", "level", "selection", "head", "head_model")
_CONTINUOUS = frozenset({"tau", "level"})


class _Work:
    """What one analysis needs from a session, run in an executor: the pair and the inputs."""

    def __init__(self, pair, prompt: str, generate: int, root: int | None, runs=None,
                 shown: CausalResult | None = None):
        """``shown`` and ``runs``: the sequence shown and its recorded q/k, traced from ``root`` without a
        model run (its tokens and text re-used); else ``prompt`` is encoded and run."""
        self.pair, self.prompt, self.generate, self.root = pair, prompt, generate, root
        self.runs, self.shown = runs, shown

    def __call__(self, lock) -> tuple[Any, CausalResult]:
        from attnflows_panel.causal import CausalInputError
        from attnflows_panel.causal_view import view_result

        pair = self.pair
        with lock:  # the tokenizer and the models are shared by every session
            encoded, runs = (None, None) if self.shown is None else (self.shown.encoded, self.runs)
            if encoded is None:
                text = self.prompt.strip()
                if not text:
                    raise CausalInputError("the prompt is empty: type a text, or a chat as a JSON list of messages")
                encoded = pair.encode(chat=text) if _is_chat(text) else pair.encode(text=text)
                if self.generate:
                    encoded = pair.generate(encoded, self.generate)
                runs = pair.run(encoded)
            analysis = pair.analyse(encoded, root=self.root, tau_min=TAU_MIN, runs=runs)
            return runs, view_result(encoded, analysis, pair.tokenizer, same_sequence=self.shown)


class DecoderApp(PageFrame, QuietWrites, pn.viewable.Viewer):
    """One session on a decoder pair (the module docstring). ``config`` names the pair (``pretrained``,
    ``finetuned``) and the initial τ; the models come from ``registry`` (loaded once per process)."""

    result = param.Parameter(default=None, doc="The CausalResult shown (the sequence at its root).")
    sample_id = param.String(default=None, allow_None=True, doc=(
        "The id of the index's prompt shown at the index's root (its last token), else None: the corpus "
        "browser then searches with the sequence shown, from its root."))
    busy = param.Boolean(default=False, doc="A model run is under way.")
    message = param.String(default="", doc="The notice shown (plain text).")

    def __init__(self, config: AppConfig, registry: Registry | None = None, pair=None, query: str | None = None,
                 sync_url: bool | None = None, **params):
        super().__init__(**params)
        self.config = config
        self.registry = registry or shared_registry()
        self._pair = pair
        self._served = in_session()
        if query is None and self._served and pn.state.location is not None:
            query = pn.state.location.search or ""
        #: writes the address bar and reports Back / Forward (None: the URL is not kept in step)
        self.history = BrowserHistory() if (self._served if sync_url is None else sync_url) else None
        if self.history is not None:
            self.history.on_pop(self.restore)
        self._url: UrlState | None = None  # the view state a link asks for, applied once its run is shown
        self._notes: list[str] = []  # what a link's bad values left out
        self._quiet = 0  # > 0 while the app sets the view state itself (one history entry for all)
        self._runs = None  # the recorded q/k of the sequence shown (self.result.encoded)
        self._run_seq = 0
        self.index = None  # the prompt index (config.index), opened with the first run
        self.browser = None
        self.view = AttentionFlowsView(tau=float(config.tau), flow_height=APP_FLOW_HEIGHT,
                                       cache=self.registry.shared)
        self.view.param.watch(self._on_selection, ["selection"])
        self.view.param.watch(self._on_view_state, list(_VIEW_STATE))
        self._build_widgets()
        if self._served:
            pn.state.onload(functools.partial(self.restore, query or "", True))
        else:
            self.restore(query or "", True)

    # ------------------------------------------------------------------ page

    def _build_widgets(self) -> None:
        W = pn.widgets
        self._spinner, self._busy_text = busy_indicator()
        self._alert = message_bar()
        pre, fine = self.config.pretrained, self.config.finetuned
        self._pair_info = pn.pane.HTML(
            f'<div style="font-size:13px"><span style="color:{PRETRAINED_COLOR}">■</span> base: '
            f'<b>{esc(model_label(pre))}</b><br><span style="color:{FINETUNED_COLOR}">■</span> fine-tuned: '
            f'<b>{esc(model_label(fine))}</b></div>', sizing_mode="stretch_width", css_classes=["af-pair"],
            margin=(0, 10))
        self._prompt_w = W.TextAreaInput(label="Prompt: a text, or a chat as a JSON list of messages",
                                         value=EXAMPLE_CHAT, max_length=MAX_PROMPT_CHARS, rows=8,
                                         sizing_mode="stretch_width", css_classes=["af-prompt"])
        self._generate_w = W.IntInput(label="Let the fine-tuned model continue (tokens)", value=0, start=0,
                                      end=MAX_GENERATE, sizing_mode="stretch_width", css_classes=["af-generate"])
        self._analyse_w = W.Button(label="Analyse", color="primary", sizing_mode="stretch_width",
                                   css_classes=["af-analyse"])
        self._analyse_w.on_click(lambda event: self.analyse())
        self._root_w = W.IntInput(label="Root (token position, from 1)", value=None, start=1,
                                  sizing_mode="stretch_width", css_classes=["af-root"])
        self._root_w.param.watch(self._on_root_widget, ["value"])
        self._root_sel_w = W.Button(label="Trace from the selected token", disabled=True,
                                    sizing_mode="stretch_width", css_classes=["af-root-from-selection"])
        self._root_sel_w.on_click(lambda event: self.root_from_selection())
        self._card = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["af-sequence"], margin=(0, 10))
        self._browser_slot = pn.Column(sizing_mode="stretch_width", css_classes=["af-browser"])
        parts = self.view.parts()
        parts.sentence.scroll_height = APP_SENTENCE_HEIGHT
        self._parts = parts
        self.param.watch(self._on_busy, ["busy"])

    def _sidebar(self) -> list:
        form = pn.Column(heading("Your prompt"), self._prompt_w, self._generate_w, self._analyse_w,
                         sizing_mode="stretch_width", css_classes=["af-form"])
        root = pn.Column(heading("Root"), self._root_w, self._root_sel_w, sizing_mode="stretch_width")
        view = pn.Column(heading("View"), self._parts.controls, sizing_mode="stretch_width")
        return [pn.Column(heading("Model pair"), self._pair_info, form, root, view, sizing_mode="stretch_width")]

    def _main(self) -> list:
        p = self._parts
        side = pn.Column(pn.Column(p.context_view, css_classes=["af-context-view"]), p.status,
                         pn.Column(p.sentence, sizing_mode="stretch_width", css_classes=["af-sentence-view"]),
                         p.legend, width=SIDE_WIDTH, css_classes=["af-side-views"])
        flows = pn.Row(pn.Row(p.flow, sizing_mode="stretch_width", css_classes=["af-flow-view"]), side,
                       sizing_mode="stretch_width")
        self._main_top = pn.Column(self._alert, self._card, flows, sizing_mode="stretch_width",
                                   css_classes=["af-main"])
        extra = [] if self.history is None else [self.history]  # the address bar's writer: draws nothing
        return [pn.Column(self._main_top, self._browser_slot, *extra, sizing_mode="stretch_width")]

    # ------------------------------------------------------------------ runs

    def pair(self):
        """The decoder pair, loaded once per process through the registry."""
        if self._pair is None:
            self._pair = self.registry.causal_pair(self.config.pretrained, self.config.finetuned)
        return self._pair

    def open_index(self):
        """The prompt index of ``config.index`` (opened once per process), checked against the pair; None
        without one."""
        if self.index is None and self.config.index:
            from attnflows_panel.index.build_causal import check_causal_index

            index, pair = self.registry.index(self.config.index), self.pair()
            # checked once per process (it hashes the models' weight files), not by every session
            self.registry.shared(index, ("causal-index-check", id(pair)), lambda: check_causal_index(index, pair))
            self.index = index
        return self.index

    def analyse(self, root: int | None = None, sample_id: str | None = None) -> None:
        """Run the prompt through both models and show it at ``root`` (default: the prompt's last token);
        ``sample_id``: the index's prompt that the box holds."""
        w = self._prompt_w
        prompt, gen = typed(w), self._generate_w.value or 0
        if prompt != w.value:
            w.value = prompt
        if len(prompt) > MAX_PROMPT_CHARS:
            self.notify(f"The prompt has {len(prompt)} characters; at most {MAX_PROMPT_CHARS} are accepted.")
            return

        def work():
            self.open_index()
            return _Work(self.pair(), prompt, int(gen), root)(self.registry.run_lock(self.pair()))

        self._run(work, "Running both models …", sample_id if root is None and not gen else None)

    def open_sample(self, sample_id: str, root: int | None = None) -> None:
        """Show the index's prompt ``sample_id`` (a pick in the corpus browser) at ``root`` (default: its
        last token, where the index's signature is taken)."""
        from attnflows_panel.index.build_causal import prompt_of_row

        try:
            self.open_index()  # a link's sample comes before the first run has opened the index
        except (ValueError, OSError) as exc:
            self.notify(str(exc))
            return
        md = self.index.metadata if self.index is not None else None
        rows = [] if md is None else np.flatnonzero(md["id"].astype(str).to_numpy() == str(sample_id))
        if not len(rows):
            self.notify(f"There is no prompt {sample_id!r} in the index.")
            return
        prompt = prompt_of_row(md.iloc[int(rows[0])])
        text = json.dumps(prompt["chat"], indent=1, ensure_ascii=False) if "chat" in prompt else str(prompt["text"])
        fill(self._prompt_w, text)
        self._generate_w.value = 0
        self.analyse(root=root, sample_id=str(sample_id))

    def set_root(self, root: int) -> None:
        """Trace the graph from token ``root`` (0-based) of the sequence shown; the models do not run again."""
        shown, runs = self.result, self._runs
        if shown is None:
            return

        def work():
            return _Work(self.pair(), "", 0, int(root), runs=runs, shown=shown)(self.registry.run_lock(self.pair()))

        self._run(work, "Tracing from the new root …")

    def root_from_selection(self) -> None:
        """Make the one frozen token the root."""
        sel = self.view.selection
        if len(sel) != 1:
            self.notify("Select one token in the radial view first (click it), then trace from it.", "info")
            return
        self.set_root(int(sel[0][1]))

    def _run(self, work: Callable[[], Any], busy_text: str, sample_id: str | None = None) -> None:
        self._run_seq += 1
        seq = self._run_seq
        if not self._served:
            try:
                self._show(seq, work(), sample_id)
            except Exception as exc:  # noqa: BLE001 - a failing run is a message
                self._failed(seq, exc)
            return
        self.busy = True
        self._busy_text.object = esc(busy_text)

        off_loop(work, lambda out: self._show(seq, out, sample_id), functools.partial(self._failed, seq))

    def _done(self) -> None:
        self.busy = False
        self._busy_text.object = ""

    def _failed(self, seq: int, exc: BaseException) -> None:
        from attnflows_panel.causal import CausalInputError
        from attnflows_panel.models import ModelLoadError, ModelPairError

        if seq != self._run_seq:
            return
        self._done()
        self._url = None
        if isinstance(exc, (CausalInputError, ModelPairError, ModelLoadError, ValueError, FileNotFoundError)):
            self.notify(str(exc))
        else:
            log.error("a decoder run failed: %s", exc, exc_info=exc)
            self.notify(f"Something went wrong: {type(exc).__name__}: {exc}", "danger")

    def _show(self, seq: int, out, sample_id: str | None = None) -> None:
        if seq != self._run_seq:  # a later run supersedes this one
            return
        self._done()
        self._runs, result = out
        self.notify("\n".join(self._notes))  # what a link's bad values left out, else nothing
        self._notes = []
        url, self._url = self._url, None
        with self._quietly():  # one history entry for the new sequence or root and its view state
            self.param.update(result=result, sample_id=sample_id)
            self.view.param.update(result=result, selection=[], head=[])
            if url is not None:  # a link's (or Back's) view state, on the sequence it names
                self._apply_view_state(url)
        self._root_w.param.update(end=result.n, value=result.root + 1)
        self._card.object = sequence_html(result, sample_id)
        if self.index is not None and self.browser is None:
            self._build_browser()
        self._write_url(push=url is None)

    def _build_browser(self) -> None:
        """The corpus browser over the prompt index: it searches with the index's own signature of the
        prompt shown (``sample_id``), or with the sequence shown from its root."""
        from attnflows_panel.views.corpus_browser import CorpusBrowser

        try:
            self.browser = CorpusBrowser(self.index, selected_id=self.param.sample_id,
                                         result=pn.bind(_unless_sample, self.param.result, self.param.sample_id),
                                         on_pick=self.open_sample)
        except Exception as exc:  # noqa: BLE001 - the flow views keep working without it
            log.exception("building the corpus browser failed")
            self.notify(f"The corpus browser failed to start: {exc}", "danger")
            return
        self._browser_slot.objects = [self.browser]

    # ------------------------------------------------------------------ the page's URL

    def restore(self, query: str, first: bool = False) -> None:
        """Show what the URL's ``query`` names (a link, Back or Forward): the index's prompt ``sample`` or the
        prompt ``p`` (with ``gen`` tokens of continuation), the root ``root`` (counted from 1), and the view
        state (``tau``, ``mode``, ``level``, ``sel``, ``head``, ``hm`` as in the sentence-pair app). The
        models run only for another prompt; a bad value is named and left out."""
        url, errors = UrlState.parse(query)
        prompt, gen, root, keep_root, more = _decoder_query(query)
        self._notes = errors + more  # shown once the state is (shown now when nothing runs)
        if gen is None:  # a bad value: the current one stays
            gen = self._generate_w.value or 0
        self._url = url
        current = self.result
        # with the prompt named, no root means its default one (the prompt's last token)
        default = None if current is None else current.encoded.prompt_len - 1
        if keep_root and current is not None:  # a bad root in the link: the current one stays
            default = current.root
        wanted = root if root is not None else default
        if url.sample and self.config.index:
            if current is None or url.sample != self.sample_id or wanted != current.root:
                self.open_sample(url.sample, root=root)
                return
        elif prompt is not None:
            if current is None or prompt != self._prompt_w.value or gen != (self._generate_w.value or 0):
                fill(self._prompt_w, prompt)
                self._generate_w.value = gen
                self.analyse(root=root)
                return
            if wanted != current.root:
                self.set_root(wanted)
                return
        elif current is None or first:
            self.analyse(root=root)
            return
        elif root is not None and root != current.root:
            self.set_root(root)
            return
        self._url = None
        self._apply_view_state(url)
        self._write_url(push=False)
        self.notify("\n".join(self._notes))
        self._notes = []

    def _apply_view_state(self, url: UrlState) -> None:
        n, L = self.result.n, int(self.result.pretrained.attentions.shape[0])  # the view draws on its next tick
        sel = [[lv, pos] for lv, pos in (url.selection or []) if 0 <= lv <= L and 0 <= pos < n]
        head = url.head if url.head and sel and 0 <= url.head[0] < L else []
        state = {"tau": self.config.tau if url.tau is None else url.tau, "mode": url.mode or "combined",
                 "selection": sel, "head": head, "head_model": url.head_model or "both"}
        if url.level is not None:
            state["level"] = min(int(url.level), max(0, L - 1))
        with self._quietly():
            self.view.param.update(**state)

    def url_query(self) -> str:
        """The query string that restores this view (defaults and empty values left out)."""
        import urllib.parse

        r, v = self.result, self.view
        if r is None:
            return ""
        extra: dict[str, str] = {}
        if not self.sample_id:
            prompt = self._prompt_w.value or ""
            if prompt and len(prompt) <= MAX_URL_PROMPT:
                extra["p"] = prompt
            if self._generate_w.value:
                extra["gen"] = str(int(self._generate_w.value))
        if r.root != r.encoded.prompt_len - 1:
            extra["root"] = str(r.root + 1)
        state = UrlState(sample=self.sample_id or None, tau=float(v.tau), mode=v.mode, level=v.level,
                         selection=list(v.selection), head=list(v.head), head_model=v.head_model)
        return "&".join(q for q in (urllib.parse.urlencode(extra), state.query(self.config.tau)) if q)

    def _write_url(self, push: bool = False) -> None:
        if self.history is not None and self.result is not None:
            self.history.write(self.url_query(), push)

    def _on_view_state(self, *events) -> None:
        if not self._quiet and self.result is not None:
            self._write_url(push=not all(e.name in _CONTINUOUS for e in events))

    # ------------------------------------------------------------------ root controls

    def _on_root_widget(self, event) -> None:
        if event.new is None or self.result is None or event.new - 1 == self.result.root:
            return
        if not 1 <= event.new <= self.result.n:
            self.notify(f"The root must be a token position from 1 to {self.result.n}.")
            return
        self.set_root(int(event.new) - 1)

    def _on_selection(self, event) -> None:
        sel = event.new
        self._root_sel_w.disabled = not (len(sel) == 1 and self.result is not None
                                         and int(sel[0][1]) != self.result.root)


def _is_chat(text: str) -> bool:
    """Whether the prompt box holds a chat (a JSON list of message objects) rather than a plain text: it
    opens with ``[`` and then ``{`` (so a text such as "[1] See the note" stays a text)."""
    return text.startswith("[") and text[1:].lstrip().startswith(("{", "]"))


class _LinkState(NamedTuple):
    """The decoder's own part of a URL query (:func:`_decoder_query`)."""

    prompt: str | None  #: ``p``, None when absent or bad
    gen: int | None  #: ``gen``: 0 when absent, None when bad (the current value stays)
    root: int | None  #: ``root`` 0-based (the link counts from 1); None when absent or bad
    keep_root: bool  #: the link's root was bad: the current root stays
    errors: list[str]  #: one message per bad value


def _decoder_query(query: str) -> _LinkState:
    """The decoder's own part of a URL query: the prompt ``p``, ``gen`` and ``root``, with a message for
    each bad value."""
    import urllib.parse

    get = {k: v[-1] for k, v in urllib.parse.parse_qs(query.lstrip("?"), keep_blank_values=True).items()}
    errors = []
    prompt = get.get("p")
    if prompt is not None and (not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS):
        errors.append(f"the prompt (p) in the link must hold 1 to {MAX_PROMPT_CHARS} characters; left out")
        prompt = None
    gen: int | None = 0
    if get.get("gen"):
        if get["gen"].isdigit() and int(get["gen"]) <= MAX_GENERATE:
            gen = int(get["gen"])
        else:
            gen = None
            errors.append(f"gen in the link must be a whole number from 0 to {MAX_GENERATE}; got {get['gen']!r}, "
                          "kept the current one")
    root, keep_root = None, False
    if get.get("root"):
        if get["root"].isdigit() and int(get["root"]) >= 1:
            root = int(get["root"]) - 1
        else:
            keep_root = True
            errors.append(f"root in the link must be a token position from 1; got {get['root']!r}, kept the "
                          "current root")
    return _LinkState(prompt, gen, root, keep_root, errors)


def _unless_sample(result, sample_id):
    """The browser's query by example: the sequence shown, unless it is an index prompt at its own root."""
    return None if sample_id else result


def sequence_html(result: CausalResult, sample_id: str | None = None) -> str:
    """The sequence card: segments by role, the root, both models' next token (top 5) and their KL."""
    roles = []
    for label, s, e in result.encoded.segments:
        color = ROLE_COLORS.get(label, "#333")
        roles.append(f'<span style="color:{color};font-weight:600">{esc(label)}</span> {s + 1}–{e}')
    root = result.root
    tok = result.tokens[root]
    preds = []
    for which, name, color in (("pretrained", "base", PRETRAINED_COLOR), ("finetuned", "fine-tuned", FINETUNED_COLOR)):
        items = " · ".join(f"<b>{esc(t)}</b> {p:.2f}" for t, p in result.top_tokens[which])
        preds.append(f'<span style="color:{color}">■</span> {name}: {items}')
    where = f"Prompt <code>{esc(sample_id)}</code> of the index: " if sample_id else ""
    return (f'<div class="af-sequence-card" data-root="{root}" data-n="{result.n}" style="font-size:13px;'
            f'line-height:1.5">{where}{result.n} tokens: {" · ".join(roles)}. Root: token {root + 1} '
            f'“<b>{esc(tok)}</b>” ({esc(result.roles[root])}); next token there:<br>{"<br>".join(preds)}<br>'
            f'KL(fine-tuned ‖ base) = {result.kl:.3f} nats</div>')
