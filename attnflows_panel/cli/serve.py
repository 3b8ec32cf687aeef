"""``attnflows serve`` and ``attnflows demo``: serve the Attention Flows app.

``attnflows demo`` is the README's first command: it prepares the offline default if it is missing (the
packaged all-MiniLM-L6-v2, a MiniLM fine-tuned on demo data, and a signature index over the bundled
demo corpus, all cached under ``defaults.cache_dir()``), with progress on stderr, then serves the app on
it and prints the URL. ``--prepare-only`` stops after preparing.

``attnflows serve`` serves any pair and corpus::

    attnflows serve --pretrained bert-base-uncased --finetuned textattack/bert-base-uncased-MRPC \\
        --data glue/mrpc --task mrpc --limit 2000
    attnflows serve --index index/mrpc-dev            # an index built with `attnflows index build`

With ``--data`` (and no ``--index``) an index over that corpus is built once and cached under
``cache_dir()/index/<key>`` (the key hashes the pair's fingerprint, the source, task, split, limit and τ).

Both commands load the models and the index once, before the first browser connects, and every session
shares them (:mod:`attnflows_panel.registry`); each session gets its own app state because the app is
served as a function.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

DEFAULT_PORT = 5006
#: the address served when --address is not given: this machine only (``attnflows_panel.app.server.DEFAULT_ADDRESS``,
#: repeated here so that parsing the command line imports no Panel); the port check binds the same address
DEFAULT_ADDRESS = "127.0.0.1"


def _num_procs_arg(text: str):
    """``--num-procs``: 'auto' or a positive number (checked before anything loads)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number or 'auto', got {text!r}")
    return n


def _add_server_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server (as in `panel serve`)")
    g.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    g.add_argument("--address", default=DEFAULT_ADDRESS,
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for every interface, "
                        "with --allow-websocket-origin for the name others use, see README.md)")
    g.add_argument(
        "--allow-websocket-origin",
        action="append",
        default=None,
        metavar="HOST[:PORT]",
        help="public hostname allowed to open a websocket (repeatable), as in panel serve",
    )
    g.add_argument("--prefix", default="", help="URL prefix, e.g. /attnflows behind a proxy")
    g.add_argument("--show", action="store_true", help="open the app in a browser")
    g.add_argument(
        "--num-threads",
        type=int,
        default=None,
        help="thread pool size for session callbacks (panel's --num-threads; model runs use a worker thread "
             "regardless)",
    )
    g.add_argument(
        "--num-procs",
        type=_num_procs_arg,
        default="auto",
        metavar="N|auto",
        help="server processes sharing the loaded models (default auto: one per CPU, at most 4, on Linux with the "
             "models on the CPU; 1 elsewhere). More processes build more new sessions at once",
    )


def _add_view_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tau", type=float, default=None,
                   help="initial attention threshold τ (default: the index's τ; else 0.15 for the offline default "
                        "MiniLM pair, 0.3 as in the paper for any other pair)")
    p.add_argument("--device", default=None, help="torch device for the models (default: cpu, or cuda when available)")


def register(subparsers) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="serve the app on a model pair and a corpus or index",
        description="Serve the Attention Flows app. Without --pretrained/--finetuned it uses the offline default pair.",
    )
    serve.add_argument("--pretrained", default=None,
                       help="pre-trained model: hub name or folder (default: packaged MiniLM)")
    serve.add_argument("--finetuned", default=None,
                       help="fine-tuned model: hub name or folder (default: cached fine-tuned MiniLM)")
    src = serve.add_mutually_exclusive_group()
    src.add_argument("--index", default=None, metavar="DIR", help="a signature index folder (attnflows index build)")
    src.add_argument("--data", default=None, metavar="SOURCE",
                     help="a corpus to index and browse: glue/mrpc, a GLUE folder, .csv/.jsonl, or demo")
    from attnflows_panel.cli.finetune import GLUE_TASK_CHOICES

    serve.add_argument("--task", default=None, type=str.lower, choices=GLUE_TASK_CHOICES,
                       help="a GLUE task of --data (its label names); default: the data says")
    serve.add_argument("--split", default=None, help="split of --data (default: the source's dev split)")
    serve.add_argument("--limit", type=int, default=None, help="index at most this many samples of --data")
    serve.add_argument(
        "--allow-model-paths",
        action="store_true",
        help="let browser users load other model pairs by hub name or server path (off by default: never expose on "
             "a shared server)",
    )
    _add_view_options(serve)
    _add_server_options(serve)
    serve.set_defaults(func=run_serve)

    demo = subparsers.add_parser(
        "demo",
        help="prepare the offline default (once) and serve the app on it",
        description=(
            "Prepare the offline default if it is missing (a MiniLM fine-tuned on demo data and an index over "
            "the bundled demo corpus, cached in the user cache folder), then serve the app on it."
        ),
    )
    demo.add_argument("--prepare-only", action="store_true", help="prepare the offline default and exit")
    demo.add_argument(
        "--data",
        default=None,
        metavar="SOURCE",
        help="fine-tuning data for the default model (default: $ATTNFLOWS_GLUE_DIR/MRPC, then glue/mrpc, then demo)",
    )
    demo.add_argument("--rebuild", action="store_true",
                      help="fine-tune the default model and build its index again, even if they are cached")
    _add_view_options(demo)
    _add_server_options(demo)
    demo.set_defaults(func=run_demo)


#: the loggers that report a browser's closed connection with a traceback (Tornado, asyncio, Bokeh's server)
CLOSED_CONNECTION_LOGGERS = ("tornado.application", "tornado.general", "tornado.websocket", "asyncio",
                             "bokeh.server.views.ws", "bokeh.server.protocol_handler", "bokeh.server.server",
                             "bokeh.server.tornado")


class ClosedConnectionFilter:
    """A :mod:`logging` filter: a record about a connection the browser closed (Tornado's
    ``WebSocketClosedError`` or ``StreamClosedError``, a reset or broken pipe) becomes one line, without
    the traceback. A session closed abruptly (a tab or a browser killed) is no error of the server."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and _is_closed_connection(exc):
            record.msg = f"{record.getMessage()} (the browser closed the connection: {type(exc).__name__})"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def _is_closed_connection(exc: BaseException) -> bool:
    names = {"WebSocketClosedError", "StreamClosedError"}
    return (type(exc).__name__ in names or isinstance(exc, (ConnectionResetError, BrokenPipeError))
            or (exc.__cause__ is not None and type(exc.__cause__).__name__ in names))


def install_closed_connection_filter() -> ClosedConnectionFilter:
    """Add :class:`ClosedConnectionFilter` to the loggers that report closed connections (once)."""
    for name in CLOSED_CONNECTION_LOGGERS:
        logger = logging.getLogger(name)
        existing = next((f for f in logger.filters if isinstance(f, ClosedConnectionFilter)), None)
        if existing is None:
            logger.addFilter(ClosedConnectionFilter())
    return next(f for f in logging.getLogger(CLOSED_CONNECTION_LOGGERS[0]).filters
                if isinstance(f, ClosedConnectionFilter))


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _server_kwargs(args) -> dict:
    return dict(
        port=args.port,
        address=args.address,
        websocket_origin=args.allow_websocket_origin,
        prefix=args.prefix,
        show=args.show,
        num_threads=args.num_threads,
        num_procs=args.num_procs,
    )


def _check_tau(tau):
    from attnflows_panel.app import TAU_BOUNDS

    if tau is not None and not TAU_BOUNDS[0] <= tau <= TAU_BOUNDS[1]:
        raise ValueError(f"--tau must lie in [{TAU_BOUNDS[0]}, {TAU_BOUNDS[1]}], got {tau}")
    return tau


def _cached_index_for(pair, data: str, task: str | None, split: str | None, limit: int | None, tau: float) -> Path:
    """Build (once) and return an index over ``data`` for ``pair`` under ``cache_dir()/index``."""
    from attnflows_panel import defaults
    from attnflows_panel.index import build_index

    key = json.dumps(
        {"fp": pair.fingerprint, "data": str(Path(data).resolve()) if Path(data).exists() else data,
         "task": task, "split": split, "limit": limit, "tau": tau},
        sort_keys=True,
        default=str,
    )
    out = defaults.cache_dir() / "index" / ("serve-" + hashlib.sha256(key.encode()).hexdigest()[:16])
    # build_index returns a finished index as it is and resumes an interrupted one
    _err(f"Index of {data} (task {task or 'from the source'}): {out}")
    return Path(build_index(pair, data, task, out, split=split, tau=tau, limit=limit, progress=True))


def run_serve(args) -> int:
    from attnflows_panel.app import AppConfig, initial_tau, serve
    from attnflows_panel.registry import shared_registry

    _check_tau(args.tau)
    if args.task and not args.data:
        raise ValueError("--task goes with --data (an --index knows its task)")
    if args.index and not Path(args.index).is_dir():
        raise FileNotFoundError(f"--index: no index folder at {args.index}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be a positive number, got {args.limit}")
    if _decoder_pair(args):
        return _serve_decoder(args)
    # None: the index's τ, else the rule of initial_tau for the pair (also the τ a --data index is built at)
    tau = args.tau if args.tau is not None or args.index else initial_tau(args.pretrained, args.finetuned)
    registry = shared_registry()
    index = args.index
    if args.data:
        refs = AppConfig(pretrained=args.pretrained, finetuned=args.finetuned).model_refs()
        _err("Loading the model pair …")
        pair = registry.pair(*refs, device=args.device)
        index = str(_cached_index_for(pair, args.data, args.task, args.split, args.limit, tau))
    config = AppConfig(
        pretrained=args.pretrained,
        finetuned=args.finetuned,
        index=index,
        tau=tau,
        allow_model_paths=args.allow_model_paths,
        device=args.device,
    )
    install_closed_connection_filter()
    serve(config, registry=registry, **_server_kwargs(args))
    return 0


def _decoder_pair(args) -> bool:
    """Whether --pretrained and --finetuned name causal LMs (a decoder pair); an error for one of each."""
    from attnflows_panel.causal import is_causal_lm

    if not args.pretrained or not args.finetuned:
        return False
    pre, fine = is_causal_lm(args.pretrained), is_causal_lm(args.finetuned)
    if pre != fine:
        causal, other = (args.pretrained, args.finetuned) if pre else (args.finetuned, args.pretrained)
        raise ValueError(f"{causal} is a causal language model and {other} is not: compare two encoders (BERT-like) "
                         "or two decoders (a base and its instruct model)")
    return pre


def _serve_decoder(args) -> int:
    """Serve the decoder app (one sequence, a root the user picks) on a causal LM pair."""
    from attnflows_panel.app import AppConfig, serve
    from attnflows_panel.registry import shared_registry

    if args.data:
        raise ValueError("--data goes with a sentence-pair (encoder) model pair; for a decoder pair index the prompts "
                         "with `attnflows causal index --data FILE.jsonl --out DIR` and serve with --index DIR")
    if args.allow_model_paths:
        raise ValueError("--allow-model-paths goes with a sentence-pair (encoder) model pair")
    config = AppConfig(pretrained=args.pretrained, finetuned=args.finetuned, index=args.index, tau=args.tau,
                       device=args.device, decoder=True, title="Attention Flows: base vs fine-tuned decoder")
    install_closed_connection_filter()
    serve(config, registry=shared_registry(), **_server_kwargs(args))
    return 0


def run_demo(args) -> int:
    from attnflows_panel import defaults
    from attnflows_panel.prepare import prepare

    _check_tau(args.tau)
    _err("Preparing the offline default (done once, then cached) …")
    info = prepare(data=args.data, progress=True, force=args.rebuild) or {}
    for key, value in info.items():
        if isinstance(value, (str, int, float, Path)) or value is None:
            _err(f"  {key}: {value}")
    if args.prepare_only:
        _err(f"The offline default is ready in {defaults.cache_dir()}.")
        return 0

    from attnflows_panel.app import AppConfig, demo_index_path, serve
    from attnflows_panel.registry import shared_registry

    registry = shared_registry()
    index = demo_index_path()
    config = AppConfig(
        pretrained=str(info.get("pretrained") or defaults.pretrained_path()),
        finetuned=str(info.get("finetuned") or defaults.finetuned_path()),
        index=str(index),
        tau=args.tau,  # None: the demo index's τ (DEFAULT_TAU), see initial_tau
        device=args.device,
    )
    if not (index / "manifest.json").exists():
        # prepare() builds it; should it have been skipped, build it here once
        from attnflows_panel.index import build_index

        _err(f"Indexing the demo corpus into {index} …")
        pair = registry.pair(config.pretrained, config.finetuned, device=args.device)
        build_index(pair, "demo", None, index, progress=True)
    install_closed_connection_filter()
    serve(config, registry=registry, **_server_kwargs(args))
    return 0
