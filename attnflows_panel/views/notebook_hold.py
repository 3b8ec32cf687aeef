"""A notebook output that is not laid out yet: the view's pushes held until it is (:class:`NotebookHold`).

JupyterLab's "Run All" runs the cells that change a view before the browser has built the output that
shows it; Panel's comm manager drops what reaches a view not yet indexed. The flow view
(:class:`~attnflows_panel.views.attention_flows.AttentionFlowsView`) therefore keeps its changes on the
document until its radial component reports ``shown``, then sends them in one message per output
(:meth:`NotebookHold._holding`, :func:`resync_message`). Served sessions push as usual.

A mixin: the view provides ``_flow_pane`` (the :class:`~attnflows_panel.views.radial.RadialFlow`, whose
``shown`` parameter it watches with :meth:`NotebookHold._on_shown`) and ``_owed`` (a dict).
"""

from __future__ import annotations

import contextlib

import panel as pn

__all__ = ["NotebookHold", "in_session", "resync_message"]


def in_session() -> bool:
    """True in a served session (a Bokeh server document), False in a notebook or plain Python."""
    doc = pn.state.curdoc
    return bool(doc is not None and doc.session_context)


def resync_message(doc, props: dict):
    """A Bokeh PATCH-DOC message that sets every property of ``props`` (``{(model id, property): model}``)
    to its value now, with every model that a value holds written out in full.

    For a notebook output that may have missed messages (:meth:`NotebookHold._holding`): before the
    page has indexed the output's view, Panel's comm manager drops what reaches it, and the models that a
    dropped message defined (a pane's new stylesheets) count as sent on the Python side, so a plain
    ``panel.io.notebook.diff`` of the same events would refer to models the page does not know ("reference
    ... isn't known"). Built as ``panel.io.model.diff`` builds its message, with a serializer that takes no
    model as known; a model the page does know is then merely defined again."""
    from bokeh.core.serialization import Serializer
    from bokeh.document.events import ModelChangedEvent
    from bokeh.document.json import PatchJson
    from bokeh.protocol.messages.patch_doc import patch_doc

    fresh = [ModelChangedEvent(doc, model, attr, getattr(model, attr))
             for (_, attr), model in props.items() if model.document is doc]
    if not fresh:
        return None
    serializer = Serializer(references=set(), deferred=True)
    msg = patch_doc(patch_doc.create_header(), {"use_buffers": True}, PatchJson(events=serializer.encode(fresh)))
    for buffer in serializer.buffers:
        msg.add_buffer(buffer)
    return msg


class NotebookHold:
    """Holds a view's pushes in a notebook until its output is laid out (the module docstring)."""

    def _held(self) -> bool:
        """True in a notebook while the radial component has not said that it is laid out (``shown``)."""
        return not in_session() and not self._flow_pane.shown

    @contextlib.contextmanager
    def _holding(self):
        """Hold every push of the block in a notebook whose output is not laid out yet.

        JupyterLab's "Run All" runs the cells that change a view (``view.param.update(...)``) before the
        browser has built the output of the cell that shows it. Panel sends those changes as soon as the
        output's comm opens, while the browser still builds the view, and its comm manager
        (``panel/models/comm_manager.ts``, ``msg_handler``) drops each message fragment that reaches a view
        not yet indexed: a message straddling that moment leaves its receiver out of step, and the view
        never updates again ("Expected text fragment but received binary fragment"). So until the
        component reports ``shown``, the view's changes stay on the document (``block_comm``, Panel's
        notebook API) and are owed to its output; they go in one message once it is shown
        (:meth:`_on_shown`). Owed, not merely held: a message from the page meanwhile makes Panel apply it
        between ``doc.hold()`` and ``doc.unhold()`` (``Viewable._on_msg``), and that unhold drops the
        document's held events without sending them. Not nested: ``block_comm`` is a flag, not a count."""
        if not self._held():
            yield
            return
        from panel.io.notebook import block_comm

        try:
            with block_comm():
                yield
        finally:
            from bokeh.document.events import ModelChangedEvent

            for doc, comm in self._outputs():
                # the properties that Panel's own push would send now (panel.io.notebook.diff reads the same
                # list): kept as (model, property), their values read when sent, so that a notebook run
                # without a browser keeps one entry per property, not every value it ever had
                owed = self._owed.setdefault(id(doc), (doc, comm, {}))[2]
                for e in doc.callbacks._held_events:
                    if isinstance(e, ModelChangedEvent):
                        owed[(e.model.id, e.attr)] = e.model

    def _outputs(self) -> list:
        """(document, comm) of each notebook output that shows this view's radial component."""
        from panel.io.state import state

        found = {}
        for ref in self._flow_pane._models:
            entry = state._views.get(ref)
            if entry is not None and entry[3] is not None:
                found[id(entry[2])] = (entry[2], entry[3])
        return list(found.values())

    def _on_shown(self, event) -> None:
        """The component is laid out in a page: in a notebook, send what the view owes its output, in
        one message per output (:meth:`_holding`, :func:`resync_message`)."""
        if not event.new or in_session():
            return
        from panel.io.notebook import push

        owed, self._owed = self._owed, {}
        for doc, comm, props in owed.values():
            msg = resync_message(doc, props)
            if msg is not None:
                push(doc, comm, msg=msg)
        pn.io.push_notebook(self._flow_pane)  # anything else the document holds
