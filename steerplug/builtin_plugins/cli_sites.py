"""Built-in CLI command ``steerplug sites MODEL [--json]``: the site -> module table of a model."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from steerplug.cli.command import Command
from steerplug.cli.models import add_model_options, model_options, warn_remote_code
from steerplug.cli.output import emit
from steerplug.hookspecs import hookimpl
from steerplug.sites.base import SiteBinding

COLUMNS = ("site", "layer", "module", "point", "width")


def _configure(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser, positional_alias=True, weights=False,
                      model_help="'demo', a checkpoint folder, a hub id (config only), or a model_type name for a "
                                 "tiny random model")


def _row(binding: SiteBinding) -> dict[str, object]:
    row: dict[str, object] = {
        "site": binding.site,
        "layer": binding.layer,
        "module": binding.module_name,
        "point": binding.point,
        "width": binding.width,
    }
    if binding.heads is not None:
        row["heads"] = binding.heads
    return row


def format_table(rows: list[dict[str, object]]) -> str:
    """Aligned plain-text table of site rows (``-`` for an unlayered site's layer)."""
    cells = [[("-" if r[c] is None else str(r[c])) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from steerplug.sites.adapter import resolve_adapter
    from steerplug.sites.tiny import load_model_for_sites

    options = model_options(args)
    warn_remote_code(options)
    # user mistakes raise SiteError: cli.main prints one line
    model = load_model_for_sites(options.model, revision=options.revision, trust_remote_code=options.trust_remote_code)
    adapter = resolve_adapter(model)
    rows = [_row(b) for b in adapter.available()]
    info = adapter.info
    document = {"model": {**info.__dict__, "architectures": list(info.architectures)}, "sites": rows}
    head = f"{info.model_type} ({', '.join(info.architectures)}): hidden {info.hidden_size}, {info.num_layers} layers"
    emit(args, document, [head, format_table(rows)], quiet=format_table(rows))
    return 0


SITES_COMMAND = Command(
    name="sites",
    help="list the canonical sites of a model and the modules they resolve to",
    configure=_configure,
    run=_run,
)
"""The ``sites`` sub-command."""


@hookimpl(trylast=True)
def steerplug_register_commands(register: Callable[[Command], None]) -> None:
    """Register the ``sites`` command."""
    register(SITES_COMMAND)
