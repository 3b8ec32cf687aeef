"""The ``attnflows`` console script.

Each sub-command lives in its own module under ``attnflows_panel.cli`` and exposes
``register(subparsers)``; heavy imports (torch, panel, faiss) happen only inside the command that
needs them, so ``attnflows --help`` stays fast.

Errors. A user's mistake (a missing or unreadable file, an unwritable output folder, damaged weights or
index files, a port in use, a closed output pipe) ends the command with one line on stderr,
``attnflows COMMAND: error: ...``, and a non-zero exit status; ``--debug`` shows the traceback as well
(and debug-level log lines). Anything unexpected says so in one line too, and asks for ``--debug``.
Ports of ``serve`` and ``demo`` are checked before any model loads.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys

# module name -> registers these sub-commands
_COMMAND_MODULES = ("finetune", "index", "serve", "heads", "inspect", "causal")

log = logging.getLogger("attnflows_panel.cli")

#: exit status after the reader of our output went away (``attnflows index query ... | head``)
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a command killed by it


def build_parser() -> argparse.ArgumentParser:
    from attnflows_panel import __version__

    parser = argparse.ArgumentParser(
        prog="attnflows",
        description="Attention Flows: compare pre-trained and fine-tuned attention, "
                    "search corpora by attention pattern.",
    )
    parser.add_argument("--version", action="version", version=f"attnflows {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error, and debug log lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"attnflows_panel.cli.{name}")
        except ModuleNotFoundError as exc:  # a command module not written yet
            if exc.name == f"attnflows_panel.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def _expected_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean "the input or the machine is not as it should be", not a bug."""
    kinds: list[type[BaseException]] = [ValueError, OSError, RuntimeError, LookupError, UnicodeError]
    try:
        from safetensors import SafetensorError  # damaged weights, where a loader let it through

        kinds.append(SafetensorError)
    except ImportError:  # pragma: no cover - a dependency of transformers
        pass
    return tuple(kinds)


def describe_error(exc: BaseException) -> str:
    """One line for a user: what went wrong and, where it helps, what to do."""
    if isinstance(exc, OSError) and exc.errno and exc.strerror and exc.strerror != os.strerror(exc.errno):
        return exc.strerror  # our own message, e.g. attnflows_panel._io.check_writable's
    if isinstance(exc, PermissionError):
        target = exc.filename or ""
        return (f"permission denied: {target!s}" if target else f"permission denied: {exc}") + (
            " (check that you may read the input and write the output folder; choose another --out if needed)")
    if isinstance(exc, IsADirectoryError) and exc.filename:
        return f"{exc.filename} is a folder, a file was expected"
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"no such file or folder: {exc.filename}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" writing {exc.filename}" if exc.filename else ""
        return f"no space left on the device{where}; free some space or choose another --out"
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return f"read-only file system{f': {exc.filename}' if exc.filename else ''}; choose another --out"
    if type(exc).__name__ == "SafetensorError":
        return f"a model's weights file is damaged ({exc}); copy or download the model again"
    if isinstance(exc, UnicodeDecodeError):
        return f"the input is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    if len(first) > 2000:
        first = first[:2000] + " …"
    return first


def _stdout_gone() -> None:
    """The reader of stdout went away: point stdout at /dev/null so that Python's own flush at exit
    does not raise a second BrokenPipeError (the recipe of Python's signal module documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is no real file (tests): nothing to flush
        pass


def _check_ports(args: argparse.Namespace) -> None:
    """A server's address and port, checked before any model loads (``serve``, ``demo``)."""
    if getattr(args, "port", None) is None or getattr(args, "prepare_only", False):
        return
    from attnflows_panel._io import check_port

    check_port(getattr(args, "address", None), args.port)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug is taken anywhere on the line (before or after the command), up to a "--"
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    argv = [a for i, a in enumerate(argv) if not (i < end and a == "--debug")]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = debug
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from attnflows_panel._io import configure_cli_logging

    configure_cli_logging(debug=args.debug)
    command = " ".join(x for x in (args.command, getattr(args, "index_command", None)) if x)
    try:
        _check_ports(args)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below, not at exit
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _stdout_gone()
        if args.debug:
            raise
        print(f"attnflows {command}: the output was closed before it was all written (e.g. by `| head`); stopped",
              file=sys.stderr)
        return EXIT_BROKEN_PIPE
    except _expected_errors() as exc:
        if args.debug:
            raise
        print(f"attnflows {command}: error: {describe_error(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug, not a user's mistake: still no traceback by default
        if args.debug:
            raise
        print(f"attnflows {command}: unexpected error ({type(exc).__name__}): {describe_error(exc)}. "
              "Rerun with `attnflows --debug ...` for the traceback, and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
