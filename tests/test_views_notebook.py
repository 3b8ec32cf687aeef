"""What the view sends to a notebook's browser when it changes, without a browser.

In a notebook (JupyterLab), Panel renders a cell's output into a Bokeh ``Document`` held with the
"combine" policy, and every push sends the held changes over a comm as one PATCH-DOC message. The
tests record those messages with a comm of their own, replay each one into a copy of the document as
the browser would, and check what made BokehJS in JupyterLab raise page errors ("Size mismatch",
"Offset is outside the bounds of the DataView"), which ``tests/test_notebooks_lab.py`` sees in a real
JupyterLab:

- BokehJS redraws a text glyph whose source changed length in steps that wait on each other; a change
  of a layout model (a Panel pane's text, a figure's size) later in the *same* message lays the output
  out again at once and paints the half-updated glyph. So: in one message, no layout model changes
  after a source changed its number of rows.
- One ``param.update(mode=..., selection=...)`` is one redraw: its figure changes arrive in one
  message, in their final state (before, the mode and the selection were drawn and pushed one after
  the other).
- After every message, every ColumnDataSource of the browser's copy has columns of one length, and at
  the end the copy shows what the Python side shows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from bokeh.core.serialization import Serialized
from bokeh.document import Document
from bokeh.models import ColumnDataSource, LayoutDOM
from bokeh.protocol import Protocol
from pyviz_comms import Comm

from attnflows_panel.views.attention_flows import AttentionFlowsView
from test_views import TAU, _attn, _result


class RecordingComm(Comm):
    """A comm whose channel records what Panel sends through it (``pyviz_comms.Comm``'s contract:
    ``init`` opens the channel, ``send`` sends a text or a binary part)."""

    def __init__(self):
        super().__init__()
        self.parts: list[tuple[str | None, list[bytes]]] = []

    def init(self, on_msg=None):
        self._comm = self  # the open channel

    def send(self, data=None, metadata=None, buffers=()):
        self.parts.append((data, [bytes(b) for b in buffers]))

    def take_messages(self) -> list:
        """The Bokeh protocol messages sent since the last call (``panel.io.notebook.send``'s framing:
        header, metadata, content, then a header and a payload per buffer)."""
        parts, self.parts = self.parts, []
        msgs, i = [], 0
        while i < len(parts):
            header = parts[i][0]
            n = json.loads(header).get("num_buffers", 0)
            msg = Protocol().assemble(header, parts[i + 1][0], parts[i + 2][0])
            i += 3
            for _ in range(n):
                msg.assemble_buffer(json.loads(parts[i][0]), parts[i + 1][1][0])
                i += 2
            msgs.append(msg)
        return msgs


def _notebook(view, shown: bool = True):
    """The view as a notebook cell's output: its root in a Document held as Panel holds it
    (``panel.io.notebook.render_mimebundle``), with a recording comm; and the browser's copy. With
    ``shown``, the browser has laid it out (as it has by the time a user changes anything)."""
    comm = RecordingComm()
    comm.init()
    doc = Document()
    root = view.__panel__().get_root(doc, comm=comm)
    doc.add_root(root)
    doc.hold("combine")
    browser = Document.from_json(doc.to_json())
    if shown:  # the browser has laid the output out, and the component says so (radial.js, after_layout)
        view._flow_pane.shown = True
        _replay(comm.take_messages(), browser)
    return doc, comm, browser


def _rows(src) -> set[int]:
    return {len(v) for v in src.data.values()}


def _refs(obj, defined: set, used: set) -> None:
    """The model ids that a serialized event defines (``{"type": "object", "id": ...}``) and the
    references it uses (``{"id": ...}``; buffers are ``{"type": "bytes", "data": {"id": ...}}``)."""
    if isinstance(obj, dict):
        if obj.keys() == {"id"}:
            used.add(obj["id"])
        elif obj.get("type") == "object" and "id" in obj:
            defined.add(obj["id"])
        for k, v in obj.items():
            if not (k == "data" and obj.get("type") == "bytes"):
                _refs(v, defined, used)
    elif isinstance(obj, list):
        for v in obj:
            _refs(v, defined, used)


def _replay(messages, browser: Document) -> list[list[tuple[str, object, str]]]:
    """Apply each message to the browser's copy, one event after the other as BokehJS does; return
    each message's events as (kind, model, attr).

    A ColumnDataChanged event that names its columns replaces those columns and keeps the others
    (BokehJS's ``Document._apply_json_patch``; Python's own ``apply_json_patch`` would drop them).
    Checks that every model an event refers to is one the browser has (a model that left the document
    is one BokehJS has dropped: "reference … isn't known"), that every source's columns have one length
    after every event, and that no layout model changes later in a message in which a source changed its
    number of rows."""
    out = []
    for msg in messages:
        events, resized = [], None
        for ev in msg.content["events"]:
            model = browser.get_model_by_id(ev["model"]["id"]) if "model" in ev else None
            events.append((ev["kind"], model, ev.get("attr")))
            defined, used = set(), set()
            _refs(ev, defined, used)
            unknown = [i for i in used - defined if browser.get_model_by_id(i) is None]
            assert not unknown, (f"{ev['kind']} {type(model).__name__}.{ev.get('attr')} refers to models "
                                 f"the browser dropped: {unknown}")
            old = dict(model.data) if ev["kind"] == "ColumnDataChanged" else None
            browser.apply_json_patch(Serialized({"events": [ev]}, msg.buffers))
            browser.models.recompute()  # BokehJS drops a model that left the document
            if old is not None:
                if ev.get("cols") is not None:
                    model.data = {**old, **model.data}
                assert len(_rows(model)) == 1, f"{model.name}: columns of different lengths {_rows(model)}"
                if resized is None and _rows(model) != {len(v) for v in old.values()}:
                    resized = model.name
            elif resized is not None and ev["kind"] == "ModelChanged" and isinstance(model, LayoutDOM):
                raise AssertionError(f"{resized} changed its number of rows, and later in the same message "
                                     f"{type(model).__name__}.{ev['attr']} changed (a new layout)")
        out.append(events)
    return out


_DRAWN = {"data", "frozen", "states", "level", "focus"}


def _figure_messages(replayed) -> list:
    """The messages that change what the drawing components draw (a source's columns, or a component's
    ``data``, ``frozen``, ``states``, ``level`` or ``focus``)."""
    return [evs for evs in replayed
            if any(kind.startswith("Column") or (kind == "ModelChanged" and attr in _DRAWN
                                                 and (hasattr(m, "frozen") or hasattr(m, "states")))
                   for kind, m, attr in evs)]


def _radial(doc: Document):
    """The radial component's data model (its ``data``, ``frozen``, ... properties) in ``doc``."""
    found = [m for m in doc.models if hasattr(m, "frozen") and hasattr(m, "pick")]
    assert len(found) == 1, found
    return found[0]


def _components(doc: Document) -> list:
    """The data models of the view's three drawing components (radial, sentence, context): what they
    draw is in their ``data`` and ``frozen`` / ``states`` properties."""
    found = [m for m in doc.models if hasattr(m, "data") and (hasattr(m, "frozen") or hasattr(m, "states"))]
    assert len(found) == 3, found
    return found


def _same_as_python(doc: Document, browser: Document) -> None:
    for mine in _components(doc):
        theirs = browser.get_model_by_id(mine.id)
        for prop in ("data", "frozen", "states", "level"):
            if not hasattr(mine, prop):
                continue
            want, got = getattr(mine, prop), getattr(theirs, prop)
            if not isinstance(want, dict):
                assert got == want, prop
                continue
            assert set(want) == set(got), prop
            for k, v in want.items():
                if isinstance(v, np.ndarray):
                    np.testing.assert_array_equal(np.asarray(got[k]), v, err_msg=f"{prop}.{k}")
                else:
                    assert got[k] == v, f"{prop}.{k}"
    for src in doc.models:
        if isinstance(src, ColumnDataSource) and src.name and src.name.startswith("attnflows-"):
            copy = browser.get_model_by_id(src.id)
            assert set(copy.data) == set(src.data), src.name
            for col, values in src.data.items():
                got, want = copy.data[col], values
                if isinstance(want, np.ndarray) and want.dtype != object:
                    np.testing.assert_array_equal(np.asarray(got), want, err_msg=f"{src.name}.{col}")
                else:
                    got_l, want_l = [np.asarray(v).tolist() for v in got], [np.asarray(v).tolist() for v in want]
                    assert got_l == want_l, f"{src.name}.{col}"


def test_a_mode_switch_from_python_is_one_message_with_no_layout_change_after_the_new_rows():
    """Notebook 01's cell: ``view.param.update(mode="finetuned", selection=[[L, 0]])``."""
    view = AttentionFlowsView(_result(), tau=TAU, mode="combined", level=0)
    doc, comm, browser = _notebook(view)
    rows = view.flow.data["N"]
    view.param.update(mode="finetuned", selection=[[2, 0]])
    assert view.flow.data["N"] < rows  # the rings shrink: the sources change length
    replayed = _replay(comm.take_messages(), browser)
    figure = _figure_messages(replayed)
    assert len(figure) == 1, [[(k, type(m).__name__, a) for k, m, a in evs] for evs in figure]
    # the Panel panes (status line, legend) follow, both in one message: Panel's own push would send
    # each in a message of its own, and in JupyterLab the second (which may refer to a stylesheet model
    # that Panel defined in the first) overtook the first while the output's comm was not open yet
    def pane_texts(evs):  # Panel's HTML panes' models (bokeh's Div is the hover box of the figure)
        return [m for _, m, a in evs if a == "text" and type(m).__name__ == "HTML"]

    panes = [evs for evs in replayed if pane_texts(evs)]
    assert len(panes) == 1, [[(k, type(m).__name__, a) for k, m, a in evs] for evs in panes]
    assert len(pane_texts(panes[0])) == 2  # the status line and the legend
    assert any(a == "text" and "selected" in m.text for _, m, a in panes[0])
    _same_as_python(doc, browser)
    st = np.asarray(_radial(browser).frozen["nodes"])
    assert (st != 0).any() and len(st) == len(view.data.nodes)  # the frozen [CLS] trace is drawn


def test_changes_before_the_output_is_laid_out_are_held_then_sent_in_one_message():
    """JupyterLab's Run All: the cell that changes the view runs before the browser has built the
    output that shows it. Nothing is sent until the component reports that it is laid out (Panel's
    comm manager drops fragments that reach a view not yet indexed); then all of it, at once."""
    view = AttentionFlowsView(_result(), tau=TAU, mode="combined", level=0)
    doc, comm, browser = _notebook(view, shown=False)
    view.param.update(mode="finetuned", selection=[[2, 0]], tau=0.55, level=1)
    assert view._tau_slider.value == 0.55 and view._mode_buttons.value == "finetuned"  # the controls follow
    assert comm.take_messages() == []
    # meanwhile the page misses what Panel sends before it has indexed the output's view (its comm
    # manager drops it): the held events went out in a message that never arrived ...
    from panel.io.notebook import push

    push(doc, comm)
    assert comm.take_messages()  # dropped
    view.param.update(selection=[[1, 1]])
    # ... and a message from the page: Panel applies it between doc.hold() and doc.unhold()
    # (Viewable._on_msg), and that unhold drops the document's held events unsent
    doc.unhold()
    doc.hold("combine")
    view._flow_pane.shown = True  # what radial.js sets after its first layout
    messages = comm.take_messages()
    assert messages
    _replay(messages, browser)
    _same_as_python(doc, browser)
    st = np.asarray(_radial(browser).frozen["nodes"])
    assert (st != 0).any()  # the frozen selection arrived
    # once shown, a change goes out at once
    view.param.update(mode="combined")
    assert comm.take_messages()


def test_a_view_shown_again_holds_its_changes_until_the_new_output_is_laid_out():
    """A second cell displays the same view: its new output is not laid out yet, although the first one is.
    The view's changes wait for the new output to report itself laid out (Panel's comm manager would drop
    what reaches it before), then reach both outputs, each of which then equals Python's document."""
    view = AttentionFlowsView(_result(), tau=TAU, mode="combined", level=0)
    first = _notebook(view)
    second = _notebook(view, shown=False)
    assert view._flow_pane.shown is False  # the new output has not said so yet
    view.param.update(mode="finetuned", selection=[[2, 0]], tau=0.55)
    assert first[1].take_messages() == [] and second[1].take_messages() == []
    view._flow_pane.shown = True  # what radial.js sets after the new output's first layout
    for doc, comm, browser in (first, second):
        messages = comm.take_messages()
        assert messages
        _replay(messages, browser)
        _same_as_python(doc, browser)
        assert (np.asarray(_radial(browser).frozen["nodes"]) != 0).any()  # the frozen selection arrived
    view.param.update(mode="combined")  # both shown: a change goes out at once, to both
    assert first[1].take_messages() and second[1].take_messages()


def test_tau_level_and_selection_changes_keep_the_messages_consistent():
    """The browser's controls (τ slider, level, a click) set the same parameters: each change sends
    its figure changes in one message, with no layout change after new rows."""
    view = AttentionFlowsView(_result(), tau=TAU, mode="combined", level=0)
    doc, comm, browser = _notebook(view)
    for change in ({"tau": 0.55}, {"mode": "pretrained"}, {"level": 1}, {"selection": [[0, 3]]},
                   {"tau": TAU, "mode": "combined", "selection": [[1, 1]]}, {"selection": []}):
        view.param.update(**change)
        figure = _figure_messages(_replay(comm.take_messages(), browser))
        assert len(figure) == 1, change
        _same_as_python(doc, browser)


def test_a_new_result_of_another_depth_sends_no_layout_change_after_the_new_rows():
    """A new pair with one layer instead of two: the rings, and with them the figure's design size,
    change; the figure's size changes before its sources' rows do."""
    view = AttentionFlowsView(_result(), tau=TAU, mode="combined", level=1, selection=[[1, 1]])
    doc, comm, browser = _notebook(view)
    small = _attn({(0, 0, 0): {1: 0.9}, (0, 1, 0): {3: 0.8}}, L=1, H=2, n=5)
    view.result = _result(small, small, tokens=["[CLS]", "a", "b", "[SEP]", "[SEP]"], segments=[0, 0, 0, 0, 1])
    replayed = _replay(comm.take_messages(), browser)
    assert _figure_messages(replayed)
    _same_as_python(doc, browser)
    assert _radial(browser).data["N"] == 3


@pytest.mark.parametrize("focus", [True, False])
def test_focus_and_size_changes_replay_cleanly(focus):
    view = AttentionFlowsView(_result(), tau=TAU, mode="combined", level=0, selection=[[0, 1]])
    doc, comm, browser = _notebook(view)
    view.param.update(focus=focus, size=500)
    _replay(comm.take_messages(), browser)
    assert [m.width for m in browser.models if getattr(m, "data", None) is _radial(browser)] == [500]
    _same_as_python(doc, browser)


def test_no_model_enters_or_leaves_the_document_after_its_first_render():
    """Every change the view can make (mode both ways, focus on and off, τ, level, a selection, a head,
    a size, a new pair) changes properties of the models the first render sent, and adds or drops
    none. So every message refers only to models the browser has had from the start, whatever
    order the messages arrive in: before the browser opens the output's comm, Panel's ``push`` retries
    each message on a timer of its own, and messages made in one cell can overtake each other
    (BokehJS then raised "reference … isn't known" for a model defined in the overtaken message)."""
    view = AttentionFlowsView(_result(), tau=TAU, mode="combined", level=0)
    doc, comm, first = _notebook(view)
    models = {m.id for m in doc.models}
    initial = doc.to_json()
    messages = []
    small = _attn({(0, 0, 0): {1: 0.9}, (0, 1, 0): {3: 0.8}}, L=1, H=2, n=5)
    for change in ({"mode": "finetuned", "selection": [[2, 0]]}, {"mode": "combined"}, {"focus": True},
                   {"tau": 0.55}, {"mode": "pretrained", "level": 1}, {"focus": False}, {"selection": [[0, 3]]},
                   {"mode": "combined", "selection": [[1, 1]], "head": [0, 1]}, {"size": 500},
                   {"result": _result(small, small, tokens=["[CLS]", "a", "b", "[SEP]", "[SEP]"],
                                      segments=[0, 0, 0, 0, 1])},
                   {"result": _result(), "mode": "finetuned"}):
        view.param.update(**change)
        assert {m.id for m in doc.models} == models, f"{change}: models added or dropped"
        messages += comm.take_messages()
    assert len(messages) > 10
    # in order, the browser's copy ends where Python is; each message alone, on the first render's
    # document, refers to nothing the browser lacks (any order of arrival)
    _replay(messages, first)
    _same_as_python(doc, first)
    browser = {m.id for m in Document.from_json(initial).models}
    for msg in messages:
        defined, used = set(), set()
        _refs(msg.content, defined, used)
        assert not defined, "a message defines a new model"
        assert used <= browser, f"refers to models the first render did not send: {used - browser}"
