"""Serving the app: one :class:`~attnflows_panel.app.session.AttnFlowsApp` per browser session, the
models and the index loaded once and shared (README.md, "Serving the app").

:func:`serve` is what ``attnflows serve`` and ``attnflows demo`` run. It listens on 127.0.0.1 unless an
``address`` is given: to let other machines in, pass ``--address 0.0.0.0`` (or the machine's address)
together with ``--allow-websocket-origin HOST:PORT`` for the name they use, and put it behind a proxy
with TLS and authentication for anything beyond a trusted network.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import panel as pn

from attnflows_panel.app.config import AppConfig
from attnflows_panel.app.session import AttnFlowsApp
from attnflows_panel.registry import Registry, shared_registry

__all__ = ["make_app", "preload", "serve", "ServerThread", "DEFAULT_ADDRESS", "auto_num_procs",
           "skip_document_validation", "DISCONNECTED",
           "tune_gc_for_serving"]

log = logging.getLogger(__name__)

#: the address :func:`serve` listens on when none is given: this machine only
DEFAULT_ADDRESS = "127.0.0.1"


#: what a page says when it loses its server (a restart, a crash, a network cut): its views no longer answer
DISCONNECTED = ("Disconnected from the server: the views no longer answer. Reload the page once the server is "
                "back (your view is kept in the page's URL).")


def extensions() -> None:
    """Load the JavaScript of components that arrive after the first render (the corpus browser's
    Tabulator tables): Panel only ships what the first document holds, unless told. A page that loses
    its server says so (Panel's disconnect notification, :data:`DISCONNECTED`)."""
    pn.extension("tabulator", notifications=True, disconnect_notification=DISCONNECTED)


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
        log.debug("building a session in process %d", os.getpid())
        app = _app_class(config)(config, registry=registry)
        if on_create is not None:
            on_create(app)
        template = app.template()
        if doc is None or doc.session_context is None:
            return template
        _local_assets(doc)
        # served: build the page into the session's document here (the `.servable()` pattern: Panel
        # takes a None as "the document is built"), with Bokeh's model index frozen meanwhile, so that
        # its full walk over the document's models runs once, not once for every root and Location
        # added (about a third of the build)
        with _frozen(doc):
            template.server_doc(doc, title=config.title, location=True)
        return None

    return create


def _app_class(config: AppConfig) -> type:
    """The session class for ``config``: the sentence-pair app, or the decoder app for a causal LM pair."""
    if config.decoder:
        from attnflows_panel.app.decoder import DecoderApp

        return DecoderApp
    return AttnFlowsApp


def _local_assets(doc) -> None:
    """Point the session's stylesheets at the server's own copy of Panel's assets from the start.

    Panel decides where the components' stylesheets come from by the document's ``dist_url``, which it
    sets only when it renders the page of a session (so a session built before that, or one created by
    a websocket that reuses another session's page, as every worker of :func:`serve` with several
    processes does, would load them from Panel's CDN, which an offline machine cannot reach). Setting it
    before the components are built also spares Panel rewriting every stylesheet afterwards.
    Bokeh's ``BOKEH_RESOURCES=cdn`` keeps the CDN."""
    from bokeh.settings import settings
    from panel.io.resources import LOCAL_DIST

    if "dist_url" not in doc.template_variables and settings.resources(default="server") == "server":
        doc.template_variables["dist_url"] = LOCAL_DIST


def _frozen(doc):
    """Bokeh's model index of ``doc`` frozen: recomputed once on leaving (``doc.models.freeze()``)."""
    return doc.models.freeze()


def preload(config: AppConfig, registry: Registry | None = None, progress: bool = True) -> None:
    """Load the pair and open the index into the registry before the first session (warm start), run
    the models on the first sample, which every new session shows first, and build one page with it
    once (its document and the JSON a browser would get), so that the first sessions find every import
    and first-use cache ready, in this process and in any worker it forks (:func:`serve`)."""
    registry = registry or shared_registry()
    pre, fine = config.model_refs()
    if progress:
        print("Loading the model pair …", flush=True)
    if config.decoder:
        registry.causal_pair(pre, fine)
        _warm_page(_app_class(config)(config, registry=registry))
        return
    pair = registry.pair(pre, fine, device=config.device)
    if config.index:
        if progress:
            print(f"Opening the index {config.index} …", flush=True)
        index = registry.index(config.index, pair=pair)
        if len(index.metadata):
            _warm_page(AttnFlowsApp(config, registry=registry, sync_url=False))  # also the shared first-sample caches


def _warm_page(app: AttnFlowsApp) -> None:
    """Build ``app``'s page into a document of its own and serialise it, as a session's would be."""
    from bokeh.document import Document

    doc = Document()
    app.template().server_doc(doc, title=app.config.title)
    doc.to_json()


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


#: the most server processes ``num_procs="auto"`` starts (README.md, "Serving the app")
MAX_AUTO_PROCS = 4


def auto_num_procs(device: str | None = None) -> int:
    """How many server processes :func:`serve` starts for ``num_procs="auto"`` (``attnflows serve``'s
    default): one per CPU this process may run on, at most :data:`MAX_AUTO_PROCS`, on Linux with the
    models on the CPU; otherwise one. (A process of its own per core is what lets many sessions be built
    at once: building a session is Python work that holds the interpreter's lock. CUDA cannot be used in
    a process forked after it started, and other systems do not fork servers safely.)"""
    if not sys.platform.startswith("linux") or (device is not None and not str(device).startswith("cpu")):
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - Linux has it
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_AUTO_PROCS))


def _num_procs(num_procs: int | str | None, device: str | None) -> int:
    if num_procs in (None, "auto"):
        return auto_num_procs(device)
    try:
        n = int(num_procs)
    except (TypeError, ValueError):
        raise ValueError(f"--num-procs must be a positive number or 'auto', got {num_procs!r}") from None
    if n < 1:
        raise ValueError(f"--num-procs must be a positive number or 'auto', got {num_procs!r}")
    if n > 1 and not sys.platform.startswith("linux"):
        raise ValueError("--num-procs above 1 needs Linux (the server forks its worker processes); use 1")
    if n > 1 and device is not None and not str(device).startswith("cpu"):
        raise ValueError(f"--num-procs above 1 needs the models on the CPU (CUDA cannot be used after a fork); "
                         f"the pair is on {device}: use --num-procs 1")
    return n


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
    num_procs: int | str | None = 1,
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

    ``num_procs`` (``"auto"``: :func:`auto_num_procs`, what ``attnflows serve`` does) above 1 serves from
    that many processes forked once the models and the index are loaded, so that every process shares
    the one loaded copy (the operating system copies a memory page only when a process writes to it,
    which inference does not), and the kernel spreads new connections over them (each has its own
    listening socket on the same port, ``SO_REUSEPORT``). Each process runs the models on one thread.
    Sessions live in the process their websocket reached; all their state is in the URL, so a reload
    that reaches another process shows the same view. Panel's ``reuse_sessions`` is on there, so that
    the page a browser loads first is not a second session built in another process.
    """
    registry = registry or shared_registry()
    several = not threaded and str(num_procs) != "1"
    if preload_resources or several:  # worker processes share what is loaded before they are forked
        preload(config, registry)
    pair = None if config.decoder else registry.cached_pair(*config.model_refs(), device=config.device)
    procs = 1 if threaded else _num_procs(num_procs, str(pair.device) if pair is not None else config.device)
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
    app = make_app(config, registry, on_create)
    if procs > 1:
        warm = ((lambda: _warm_page(_app_class(config)(config, registry=registry, sync_url=False)))
                if preload_resources else None)
        return _serve_processes(app, procs, warm=warm, port=port, address=address, origins=origins, path=path,
                                show=show,
                                title=config.title, extra=extra)
    common = dict(port=port, address=address, websocket_origin=origins or None, show=show, title=config.title,
                  verbose=False, **extra)
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


def _serve_processes(app, procs: int, *, warm: Callable[[], None] | None, port: int, address: str,
                     origins: list[str], path: str, show: bool, title: str, extra: dict) -> None:
    """Serve ``app`` from ``procs`` forked worker processes, each with its own ``SO_REUSEPORT`` socket on
    ``address:port`` (see :func:`serve`). Returns in this process once every worker has stopped (or on
    Ctrl-C); a worker returns once it stops serving, or exits when this process is gone."""
    from tornado import netutil, process
    from tornado.ioloop import PeriodicCallback

    reserved = _reserve_port(port, address)  # a port in use fails now, once; port 0 becomes one port for all
    port = reserved.getsockname()[1]
    url = _url(address, port, path)
    parent = os.getpid()
    print(f"Starting {procs} server processes …", flush=True)
    try:
        worker = process.fork_processes(procs, max_restarts=10)
    except KeyboardInterrupt:  # pragma: no cover - interactive
        print("stopped", flush=True)
        return None
    # ---- a worker process from here on
    reserved.close()
    _die_with(parent)
    _one_thread_per_worker()
    if warm is not None:
        # one page built here first: a new worker's first sessions would also pay for the memory it
        # starts to write (each page it shares with the first process is copied then)
        warm()
    own = netutil.bind_sockets(port, address, reuse_port=True)
    pn.config.reuse_sessions = True
    hosts = {"localhost", "127.0.0.1"} | ({address} if address not in ("0.0.0.0", "::", "") else set())
    allowed = list(origins) + [f"{h}:{port}" for h in sorted(hosts)]
    # Panel's server, built as usual on a port of its own on the loopback address (unused), then given
    # this worker's socket on the shared port
    server = pn.serve(app, start=False, port=0, address="127.0.0.1", websocket_origin=allowed, show=False,
                      title=title, verbose=False, **extra)
    http = getattr(server, "_http", None)  # Bokeh's BaseServer keeps its tornado HTTPServer there
    if http is None or not hasattr(http, "add_sockets"):  # pragma: no cover - a Bokeh that changed it
        raise RuntimeError("this Bokeh version does not let a worker listen on the shared port; "
                           "run with --num-procs 1")
    http.add_sockets(own)
    log.info("worker %d of %d (pid %d) serves %s", worker + 1, procs, os.getpid(), url)

    def orphaned():  # the first process is gone (killed): stop too, freeing the port
        if os.getppid() != parent:
            server.io_loop.stop()

    PeriodicCallback(orphaned, 1000).start()
    if show and worker == 0:
        import webbrowser

        server.io_loop.add_callback(lambda: webbrowser.open(url))
    server.start()
    if worker == 0:  # the address works once one worker listens (the kernel only hands connections to those)
        server.io_loop.add_callback(lambda: print(f"Attention Flows is served at {url} (by {procs} processes)",
                                                  flush=True))
    with contextlib.suppress(KeyboardInterrupt):  # pragma: no cover - interactive
        server.io_loop.start()
    return None


def _reserve_port(port: int, address: str):
    """A socket bound to ``address:port`` with ``SO_REUSEPORT`` but not listening: it holds the port while
    the workers start (each binds its own listening socket to it), and receives no connections. A port
    taken since the CLI checked it is a :class:`attnflows_panel._io.PortError` with the same message."""
    from attnflows_panel._io import bind_port

    return bind_port(address, port, reuse_port=True)


def _die_with(parent: int) -> None:
    """Ask Linux to end this worker when the process that forked it ends (``prctl(PR_SET_PDEATHSIG)``),
    so that killing ``attnflows serve`` frees its port at once. Best effort: the workers also check
    every second (see :func:`_serve_processes`)."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return
    if os.getppid() != parent:  # it ended before the request above
        os._exit(0)


def _one_thread_per_worker() -> None:
    """Each worker runs torch and FAISS on one thread: the workers are one per core already, and GNU
    OpenMP (torch's and FAISS's thread pool) hangs in a forked process that asks for more threads
    than one once the first process has used its pool (as loading the first sample does)."""
    import torch

    torch.set_num_threads(1)
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:  # pragma: no cover - a dependency
        pass


def _url(address: str | None, port: int, path: str = "") -> str:
    host = "localhost" if address in (None, "", "0.0.0.0", "::") else address
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}{path}/"
