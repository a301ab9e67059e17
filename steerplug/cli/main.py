"""``steerplug`` entry point: builds the parser from the registered command plugins."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from steerplug import __version__
from steerplug.errors import RecipeError, SteerplugError
from steerplug.plugins import get_plugins

EXIT_USAGE = 2
EXIT_INVALID = 1


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per registered command."""
    parser = argparse.ArgumentParser(
        prog="steerplug", description="Declarative activation-steering recipes for Transformers models."
    )
    parser.add_argument("--version", action="version", version=f"steerplug {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in sorted(get_plugins().commands.values(), key=lambda c: c.name):
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        command.configure(child)
        child.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user mistakes print one located line per problem, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args))
    except RecipeError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    except SteerplugError as exc:
        print(f"steerplug {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `steerplug sites llama | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
