"""Serving the app: one :class:`~attnflows_panel.app.session.AttnFlowsApp` per browser session, the
models and the index loaded once and shared (README.md, "Serving the app").

:func:`serve` is what ``attnflows serve`` and ``attnflows demo`` run. It listens on 127.0.0.1 unless an
``address`` is given: to let other machines in, pass ``--address 0.0.0.0`` (or the machine's address)
together with ``--allow-websocket-origin HOST:PORT`` for the name they use, and put it behind a proxy
with TLS and authentication for anything beyond a trusted network.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from typing import Any, Callable

import panel as pn

from attnflows_panel.app.config import AppConfig
from attnflows_panel.app.session import AttnFlowsApp
from attnflows_panel.registry import Registry, shared_registry

__all__ = ["make_app", "preload", "serve", "ServerThread", "DEFAULT_ADDRESS", "skip_document_validation", "tune_gc_for_serving"]

log = logging.getLogger(__name__)

#: the address :func:`serve` listens on when none is given: this machine only
DEFAULT_ADDRESS = "127.0.0.1"


def extensions() -> None:
    """Load the JavaScript of components that arrive after the first render (the corpus browser's
    Tabulator tables): Panel only ships what the first document holds, unless told."""
    pn.extension("tabulator")


def make_app(config: AppConfig | None = None, registry: Registry | None = None,
             on_create: Callable[[AttnFlowsApp], None] | None = None) -> Callable[[], pn.viewable.Viewable]:
    """The per-session factory that a server calls for every new session (its own app, shared models).

    ``on_create(app)`` is called with each new session's app (monitoring, tests). In a served session
    the factory builds the page into ``pn.state.curdoc`` itself and returns None; elsewhere it returns
    the page (a template).
    """
    config = config or AppConfig()
    registry = registry or shared_registry()

    def create():
        extensions()
        doc = pn.state.curdoc
        app = AttnFlowsApp(config, registry=registry)
        if on_create is not None:
            on_create(app)
        template = app.template()
        if doc is None or doc.session_context is None:
            return template
        # served: build the page into the session's document here (the `.servable()` pattern: Panel
        # takes a None as "the document is built"), with Bokeh's model index frozen meanwhile, so that
        # its full walk over the document's models runs once, not once for every root and Location
        # added (about a third of the build)
        with _frozen(doc):
            template.server_doc(doc, title=config.title, location=True)
        return None

    return create


def _frozen(doc):
    """Bokeh's model index of ``doc`` frozen: recomputed once on leaving (``doc.models.freeze()``)."""
    return doc.models.freeze()


def preload(config: AppConfig, registry: Registry | None = None, progress: bool = True) -> None:
    """Load the pair and open the index into the registry before the first session (warm start), and
    run the models on the first sample, which every new session shows first."""
    registry = registry or shared_registry()
    pre, fine = config.model_refs()
    if progress:
        print("Loading the model pair …", flush=True)
    pair = registry.pair(pre, fine, device=config.device)
    if config.index:
        if progress:
            print(f"Opening the index {config.index} …", flush=True)
        index = registry.index(config.index, pair=pair)
        if len(index.metadata):
            AttnFlowsApp(config, registry=registry, sync_url=False)  # warms the shared first-sample caches


#: Python's cyclic garbage collector, tuned for a server process (see :func:`tune_gc_for_serving`): a young
#: collection after this many allocations (Python's default is 700), then the default ratios
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc_for_serving() -> None:
    """Tune the garbage collector of a server process, once the models and the index are loaded.

    Building a session allocates many thousand small objects (Bokeh and Panel models), so with
    Python's defaults the collector runs hundreds of times per session and its full passes walk the
    millions of objects of the loaded models and index each time: measured, a fifth of a session's
    build. ``gc.freeze()`` moves everything loaded so far out of the collector's reach (it stays alive
    as long as it is referenced), and a higher young-generation threshold makes collections rare.
    Process-wide, so :func:`serve` does it for a server of its own (``attnflows serve``), not for a
    server on a thread of a notebook or a test unless asked (``tune_gc=True``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def skip_document_validation() -> None:
    """Turn off Bokeh's integrity check of every new session's document in this process.

    Bokeh checks each document it builds for a session (``Document.validate``: missing renderers,
    mismatched column lengths and the like, which it only logs): measured, an eighth of a session's
    build. The app's documents are the same for every session and the test suite builds them with the
    check on, so a server process of its own (``attnflows serve``) skips it; ``BOKEH_VALIDATE_DOC=true``
    in the environment keeps it on. Bokeh's documented setting ``settings.perform_document_validation``
    (environment ``BOKEH_VALIDATE_DOC``)."""
    import os

    from bokeh.settings import settings

    if os.environ.get("BOKEH_VALIDATE_DOC") is None:
        settings.perform_document_validation.set_value(False)


class ServerThread(threading.Thread):
    """A Bokeh server for the app on a thread of its own (its own event loop): tests, notebooks.

    ``server`` is the running ``bokeh.server.server.Server`` (``server.port`` is the port it listens
    on); :meth:`stop` stops it and ends the thread.
    """

    def __init__(self, make_server: Callable[[], Any]):
        super().__init__(daemon=True, name="attnflows-server")
        self._make_server = make_server
        self._ready = threading.Event()
        self.server = None
        self.error: BaseException | None = None

    def run(self) -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        try:
            self.server = self._make_server()
            self.server.start()
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits for the start
            self.error = exc
            self._ready.set()
            return
        self._ready.set()
        self.server.io_loop.start()

    def wait_started(self, timeout: float = 60.0):
        if not self._ready.wait(timeout):
            raise RuntimeError("the app server did not start")
        if self.error is not None:
            raise RuntimeError(f"the app server did not start: {self.error}") from self.error
        return self.server

    def stop(self, timeout: float = 30.0) -> None:
        server = self.server
        if server is None:
            return
        loop = server.io_loop

        def shutdown():
            server.stop()
            loop.stop()

        loop.add_callback(shutdown)
        self.join(timeout)


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
    tune_gc: bool | None = None,
    **kwargs: Any,
):
    """Serve the app with ``pn.serve``: one :class:`AttnFlowsApp` per session, models shared.

    Listens on ``address`` (default 127.0.0.1: this machine only). Loads the models and the index first
    (``preload_resources``), prints the URL, then serves until interrupted. ``threaded=True`` starts
    the server on a :class:`ServerThread` and returns ``(thread, server)`` (tests, notebooks).
    ``port=0`` picks a free port. ``num_threads`` is Panel's thread pool for session callbacks.
    ``tune_gc`` (default: when not ``threaded``) tunes the process for serving once everything is
    loaded: its garbage collector (:func:`tune_gc_for_serving`) and no integrity check of each
    session's document (:func:`skip_document_validation`).
    """
    registry = registry or shared_registry()
    if preload_resources:
        preload(config, registry)
    if tune_gc if tune_gc is not None else not threaded:
        tune_gc_for_serving()
        skip_document_validation()
    address = address or DEFAULT_ADDRESS
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
        thread = ServerThread(lambda: pn.serve(app, start=False, **common))
        thread.start()
        server = thread.wait_started()
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
