"""The ``attnflows`` console script.

Each sub-command lives in its own module under ``attnflows_panel.cli`` and exposes
``register(subparsers)``; heavy imports (torch, panel, faiss) happen only inside the command that
needs them, so ``attnflows --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module name -> registers these sub-commands
_COMMAND_MODULES = ("finetune", "index", "serve", "heads")


def build_parser() -> argparse.ArgumentParser:
    from attnflows_panel import __version__

    parser = argparse.ArgumentParser(
        prog="attnflows",
        description="Attention Flows: compare pre-trained and fine-tuned attention, search corpora by attention pattern.",
    )
    parser.add_argument("--version", action="version", version=f"attnflows {__version__}")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # user errors: a clear one-line message, no traceback
        print(f"attnflows {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
