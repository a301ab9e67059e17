"""Recipe checks for ``probes:`` and ``when:``: names first (with hints), then cross-field references."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from steerplug.errors import Problem, did_you_mean, json_pointer, shown
from steerplug.probes.conditions import Condition
from steerplug.sites.base import SITES, UNLAYERED_SITES

if TYPE_CHECKING:
    from steerplug.plugins import Plugins
    from steerplug.recipe.document import RecipeBase

ReferenceCheck = Callable[[Any, str, Any, str, Any], list[Problem]]


def probe_name_problems(doc: dict[str, Any], source: str, plugins: Plugins) -> list[Problem]:
    """Unknown probe kinds and sites, reported before schema validation so they get a 'did you mean'."""
    probes = doc.get("probes")
    if not isinstance(probes, list):
        return []
    problems: list[Problem] = []
    for index, item in enumerate(probes):
        if not isinstance(item, dict):
            continue
        here = json_pointer(["probes", index])
        kind = item.get("kind")
        if kind is None:
            problems.append(Problem(source, here, "missing required field 'kind'",
                                    did_you_mean("", plugins.probe_kinds)))
        elif not isinstance(kind, str) or kind not in plugins.probe_kinds:
            problems.append(Problem(source, f"{here}/kind", f"unknown probe kind {shown(kind)}",
                                    did_you_mean(kind if isinstance(kind, str) else "", plugins.probe_kinds)))
        site = item.get("site")
        if isinstance(site, str) and site not in SITES:
            problems.append(Problem(source, f"{here}/site", f"unknown site {shown(site)}", did_you_mean(site, SITES)))
    return problems


def probe_problems(spec: RecipeBase, source: str, plugins: Plugins, references: ReferenceCheck) -> list[Problem]:
    """Duplicate probe ids, layer/site mismatches, unknown artifacts and unknown probes named in ``when:``."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    probes = getattr(spec, "probes", [])
    for index, probe in enumerate(probes):
        if probe is None:  # invalid on its own (validation reports it)
            continue
        here = json_pointer(["probes", index])
        if probe.id in seen:
            problems.append(Problem(source, f"{here}/id", f"duplicate probe id '{probe.id}'",
                                    f"already used by /probes/{seen[probe.id]}"))
        seen.setdefault(probe.id, index)
        if probe.site in UNLAYERED_SITES and probe.layer is not None:
            problems.append(Problem(source, f"{here}/layer", f"site '{probe.site}' has no layers", "remove 'layer'"))
        if probe.site not in UNLAYERED_SITES and probe.layer is None:
            problems.append(Problem(source, here, f"site '{probe.site}' needs 'layer'", "e.g. layer: 6"))
        problems.extend(references(probe, here, spec, source, plugins))
    for index, item in enumerate(getattr(spec, "interventions", [])):
        if item is None or item.when is None:
            continue
        for pointer, name in _condition_probes(item.when, json_pointer(["interventions", index, "when"])):
            if name not in seen:
                hint = did_you_mean(name, seen) if seen else "declare it under 'probes:'"
                problems.append(Problem(source, f"{pointer}/probe", f"unknown probe '{name}'", hint))
    return problems


def _condition_probes(condition: Condition, pointer: str) -> Iterator[tuple[str, str]]:
    if condition.probe is not None:
        yield pointer, condition.probe
    elif condition.form == "not":
        yield from _condition_probes(condition.children[0], f"{pointer}/not")
    else:
        for index, child in enumerate(condition.children):
            yield from _condition_probes(child, f"{pointer}/{condition.form}/{index}")
