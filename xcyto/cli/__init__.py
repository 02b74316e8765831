"""The ``xcyto`` command line: one sub-command module per area.

Each module in ``SUBCOMMAND_MODULES`` defines ``register(subparsers)``, which adds its
parsers and sets ``func`` to the function that runs them. Errors the user can fix
(:class:`xcyto.errors.XcytoError`) are printed as one line, without a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from xcyto import __version__
from xcyto.errors import XcytoError

__all__ = ["SUBCOMMAND_MODULES", "build_parser", "main"]

SUBCOMMAND_MODULES = ("data", "train", "embedding", "explain", "audit", "compare", "morphology")

EPILOG = """examples:
  xcyto data summary ../shared/data/herlev
  xcyto data synth --n 1000 --out synthetic-cells
  xcyto train --data ../shared/data/herlev --model efficientnet_lite0 --out runs/herlev
  xcyto evaluate --bundle runs/herlev/bundle --data ../shared/data/herlev --split test
  xcyto predict --bundle runs/herlev/bundle cell1.bmp cell2.bmp --out predictions.csv
  xcyto screen --bundle runs/herlev/bundle --sensitivity 0.98     # a threshold that clears normal cells
  xcyto explain cell.bmp --bundle runs/herlev/bundle --out explained
  xcyto audit --bundle runs/herlev/bundle --data ../shared/data/herlev --split test --out audit-herlev
  xcyto concepts --bundle runs/herlev/bundle --data ../shared/data/herlev --out concepts-herlev

Run 'xcyto COMMAND --help' for the options and examples of each command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xcyto",
        description="Train, explain and audit cervical cytology cell classifiers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"xcyto {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"xcyto.cli._{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except XcytoError as error:
        print(f"xcyto: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("xcyto: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
