"""``steerplug`` entry point: builds the parser from the registered command plugins.

Every leaf command gets ``--quiet`` and ``--json`` (unless it defines them itself). Usage mistakes print one
line with a did-you-mean, never the usage dump; options and positionals may be given in any order.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from steerplug._version import __version__
from steerplug.errors import RecipeError, SteerplugError, did_you_mean
from steerplug.plugins import get_plugins

EXIT_USAGE = 2
EXIT_INVALID = 1
_CHOICE = re.compile(r"argument (?P<arg>[^:]+): invalid choice: '?(?P<value>[^'\s]*)'? \(choose from (?P<choices>.*)\)")


class UsageError(Exception):
    """A command-line mistake, reported as one line by :func:`main`."""

    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser
        self.message = message


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are :class:`UsageError` (one line, with a hint) instead of usage."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


def build_parser() -> Parser:
    """The top-level parser with one sub-parser per registered command."""
    parser = Parser(prog="steerplug", description="Declarative activation-steering recipes for Transformers models.")
    parser.add_argument("--version", action="version", version=f"steerplug {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for command in sorted(get_plugins().commands.values(), key=lambda c: c.name):
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        command.configure(child)
        child.set_defaults(_run=command.run)
        add_common_options(child)
    return parser


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``--json`` on every leaf parser that lacks them."""
    nested = _subcommands(parser)
    if nested:
        for child in nested.values():
            add_common_options(child)
        return
    if "--quiet" not in parser._option_string_actions:
        parser.add_argument("--quiet", "-q", action="store_true", help="print only the result (no progress)")
    if "--json" not in parser._option_string_actions:
        parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; options may follow or precede optional positionals (``pull SOURCE --locked DIR``)."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args, extras = parser.parse_known_args(words)
    except UsageError as error:
        raise _unknown_option(parser, words) or error from None
    if not extras:
        return args
    child = _subcommands(parser)[args.command]
    if not _subcommands(child):
        rest = words[words.index(args.command) + 1:]
        reparsed = child.parse_intermixed_args(rest)
        reparsed.command = args.command
        return reparsed
    raise UsageError(child, "unrecognized arguments: " + " ".join(extras))


def _unknown_option(parser: argparse.ArgumentParser, words: list[str]) -> UsageError | None:
    """The first option the addressed (sub-)command does not know: reported before anything else it misses."""
    for index, word in enumerate(words):
        nested = _subcommands(parser)
        if word in nested:
            return _unknown_option(nested[word], words[index + 1:])
        if word.startswith("--") and word.split("=", 1)[0] not in parser._option_string_actions and not nested:
            return UsageError(parser, f"unrecognized arguments: {word}")
    return None


def usage_line(error: UsageError) -> str:
    """The one line printed for a usage mistake: what is wrong, and the closest valid spelling."""
    prog, message = error.parser.prog, error.message
    if message.startswith("unrecognized arguments: "):
        word = message.split(": ", 1)[1].split()[0]
        if word.startswith("-"):
            option = word.split("=", 1)[0]
            hint = did_you_mean(option, _options(error.parser), max_listed=0)
            return f"{prog}: unknown option '{option}' ({hint or f'see {prog} --help'})"
        return f"{prog}: unexpected argument '{word}' (see {prog} --help)"
    match = _CHOICE.search(message)
    if match:
        choices = re.findall(r"'([^']*)'", match["choices"]) or [c.strip() for c in match["choices"].split(",")]
        hint = did_you_mean(match["value"], choices)
        what = "unknown command" if match["arg"] in ("COMMAND", "ACTION") else f"{match['arg']}: unknown value"
        return f"{prog}: {what} '{match['value']}'" + (f" ({hint})" if hint else "")
    return f"{prog}: {message} (see {prog} --help)"


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [o for o in parser._option_string_actions if o.startswith("--")]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user mistakes print one located line per problem, never a traceback."""
    try:
        args = parse_args(argv)
    except UsageError as exc:
        print(usage_line(exc), file=sys.stderr)
        return EXIT_USAGE
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
