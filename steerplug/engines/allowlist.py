"""The recipes a serving engine may apply, loaded once at start, and what a request may ask of them.

An operator names folders of recipe bundles (``STEERPLUG_VLLM_RECIPES=DIR[:DIR...]``, or the engine's
``steerplug.recipes`` setting); every bundle is loaded, verified and checked against what the engine can
apply before the engine serves. A request then picks one recipe *by name* and optionally a strength factor:
nothing a request sends is ever read as a path or URL. The recipes take slots 1..n in name order, the same
in every process of the engine; :attr:`Allowlist.fingerprint` identifies the set.

Prefix caching: a request's KV blocks may be reused only by requests whose tokens would be computed with
the same edits. :meth:`Allowlist.cache_salt` makes the engine's cache salt depend on the recipe (and its
content digest), the strength and, when the recipe's positions depend on where the prompt ends
(``prompt``, ``generated``, ``last_prompt``, negative range bounds, schedules), on the prompt length too.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerplug.builtin_plugins.source_local import BUNDLE_RECIPE_NAMES
from steerplug.errors import Problem, RecipeError, SteerplugError, did_you_mean, json_pointer
from steerplug.recipe.load import Recipe, load_recipe
from steerplug.runtime.masks import Activation

if TYPE_CHECKING:
    from steerplug.plugins import Plugins

ENV_VAR = "STEERPLUG_VLLM_RECIPES"
"""Folders of recipe bundles, separated by ``:`` (``os.pathsep``)."""
SETTING_KEY = "steerplug"
"""The engine setting's key (vLLM's ``additional_config``): ``{"steerplug": {"recipes": ["DIR", ...]}}``."""
RESOLVED_KEY = "steerplug_resolved"
"""Where the starting process records the folders and the fingerprint for every other process."""
REQUEST_KEY = "steerplug"
"""``SamplingParams.extra_args`` / ``vllm_xargs`` key naming the recipe."""
STRENGTH_KEY = "steerplug_strength"
"""Optional flat key for the strength factor (``vllm_xargs`` values cannot be objects)."""
SUPPORTED_OPERATIONS = ("ablate", "add", "clamp", "scale")
SUPPORTED_SITES = ("resid_post", "resid_pre")
MAX_STRENGTH = 1.0e4
"""Largest strength factor a request may ask for (in absolute value)."""
SALT_PREFIX = "steerplug/"
NOT_YET = "not supported on the vLLM engine yet"


class RequestError(SteerplugError, ValueError):
    """A request's steering arguments are invalid: that request fails, the engine keeps serving."""


@dataclass(frozen=True)
class Served:
    """One allowlisted recipe."""

    name: str
    slot: int
    recipe: Recipe = field(repr=False)
    digest: str
    """sha256 of the recipe document (its artifacts are pinned by sha256 inside it)."""
    prompt_dependent: bool
    """Whether some edit depends on where the prompt ends (then the cache salt includes the prompt length)."""


@dataclass(frozen=True)
class Steering:
    """What one request asked for, validated: an allowlisted recipe name and a strength factor."""

    recipe: str
    strength: float = 1.0
    """Multiplies every intervention's strength (1: the recipe as written; 0: no edit)."""

    def as_arg(self) -> dict[str, Any]:
        """The normalised request argument the engine's workers read."""
        return {"recipe": self.recipe, "strength": self.strength}


def recipe_dirs(env_value: str | None, setting: Any) -> list[Path]:
    """Bundle folders from the environment variable and the engine setting (``{"recipes": [DIR, ...]}``)."""
    dirs = [Path(p) for p in (env_value or "").split(":") if p]
    if setting is None:
        return dirs
    recipes = setting.get("recipes") if isinstance(setting, Mapping) else None
    if not isinstance(setting, Mapping) or set(setting) != {"recipes"} or not isinstance(recipes, list) or not all(
            isinstance(p, str) and p for p in recipes):
        raise SteerplugError('the engine setting "steerplug" must be {"recipes": ["DIR", ...]}, got '
                             f"{json.dumps(setting, default=str)[:200]}")
    return dirs + [Path(p) for p in recipes]


def bundles_in(folder: Path) -> list[Path]:
    """The bundle itself if ``folder`` holds a recipe, else its sub-folders that do (sorted)."""
    if not folder.is_dir():
        raise SteerplugError(f"{folder}: no such folder of recipe bundles (from {ENV_VAR} or the steerplug setting)")
    if _is_bundle(folder):
        return [folder]
    found = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and _is_bundle(p))
    if not found:
        raise SteerplugError(f"{folder}: no recipe bundles in this folder",)
    return found


def _is_bundle(folder: Path) -> bool:
    return any((folder / name).is_file() for name in BUNDLE_RECIPE_NAMES)


def engine_problems(recipe: Recipe) -> list[Problem]:
    """What in a valid recipe the engine cannot apply, as located problems."""
    problems: list[Problem] = []
    spec = recipe.spec
    for index, item in enumerate(getattr(spec, "interventions", [])):
        here = json_pointer(["interventions", index])
        if item.op not in SUPPORTED_OPERATIONS:
            problems.append(Problem(recipe.source, f"{here}/op", f"operation '{item.op}' is {NOT_YET}",
                                    "supported: " + ", ".join(SUPPORTED_OPERATIONS)))
        if item.site not in SUPPORTED_SITES:
            problems.append(Problem(recipe.source, f"{here}/site", f"site '{item.site}' is {NOT_YET}",
                                    "supported: " + ", ".join(SUPPORTED_SITES)))
        if item.when is not None:
            problems.append(Problem(recipe.source, f"{here}/when", f"probe gating ('when') is {NOT_YET}"))
    for section in ("probes", "monitors"):
        if getattr(spec, section, None):
            problems.append(Problem(recipe.source, f"/{section}", f"{section} are {NOT_YET}",
                                    f"remove '{section}' from the served copy of this recipe"))
    return problems


class Allowlist:
    """The served recipes by name (slots 1..n in name order) and the rules for requests."""

    def __init__(self, served: Sequence[Served]):
        self.served: dict[str, Served] = {s.name: s for s in served}

    @classmethod
    def load(cls, dirs: Sequence[Path], plugins: Plugins | None = None) -> Allowlist:
        """Load every bundle under ``dirs``; one RecipeError lists every recipe the engine cannot serve."""
        loaded: dict[str, Recipe] = {}
        problems: list[Problem] = []
        for folder in dirs:
            for bundle in bundles_in(folder):
                try:
                    recipe = load_recipe(str(bundle.resolve()), plugins=plugins)
                except RecipeError as exc:
                    problems.extend(exc.problems)
                    continue
                problems.extend(engine_problems(recipe))
                if recipe.name in loaded:
                    problems.append(Problem(recipe.source, "/metadata/name", f"recipe name '{recipe.name}' is "
                                            f"also used by {loaded[recipe.name].source}", "names must be unique"))
                loaded.setdefault(recipe.name, recipe)
        if problems:
            raise RecipeError(problems)
        return cls([_served(slot, recipe) for slot, recipe in enumerate(sorted(
            loaded.values(), key=lambda r: r.name), start=1)])

    @property
    def fingerprint(self) -> str:
        """sha256 over the steerplug version and every (name, digest): equal sets, equal compiled graphs."""
        from steerplug._version import __version__

        payload = json.dumps([__version__, sorted((s.name, s.digest) for s in self.served.values())])
        return hashlib.sha256(payload.encode()).hexdigest()

    def slots(self) -> list[tuple[int, Recipe]]:
        """``(slot, recipe)`` pairs in slot order."""
        return [(s.slot, s.recipe) for s in sorted(self.served.values(), key=lambda s: s.slot)]

    def parse(self, extra_args: Mapping[str, Any] | None) -> Steering | None:
        """The request's steering, or None for an unsteered request; raises :class:`RequestError`."""
        args = extra_args or {}
        if REQUEST_KEY not in args:
            if STRENGTH_KEY in args:
                raise RequestError(f"steerplug: '{STRENGTH_KEY}' needs '{REQUEST_KEY}' (a recipe name)")
            return None
        value, strength = args[REQUEST_KEY], args.get(STRENGTH_KEY)
        if isinstance(value, Mapping):
            extra = sorted(set(value) - {"recipe", "strength"})
            if extra or "recipe" not in value:
                raise RequestError(f"steerplug: expected {{\"recipe\": NAME, \"strength\": NUMBER}}, got keys "
                                   f"{sorted(map(str, value))[:8]}")
            if "strength" in value and STRENGTH_KEY in args:
                raise RequestError(f"steerplug: give the strength once (in '{REQUEST_KEY}' or '{STRENGTH_KEY}')")
            value, strength = value["recipe"], value.get("strength", strength)
        name = self._name(value)
        return Steering(name, _strength(1.0 if strength is None else strength))

    def _name(self, value: Any) -> str:
        if not isinstance(value, str):
            raise RequestError(f"steerplug: expected a recipe name (a string), got {type(value).__name__}")
        if value in self.served:
            return value
        shown = value if len(value) <= 64 else value[:61] + "..."
        if not self.served:
            raise RequestError(f"steerplug: unknown recipe {shown!r}: this engine serves no steerplug recipes "
                               f"(start it with {ENV_VAR}=DIR)")
        hint = did_you_mean(value, self.served)
        raise RequestError(f"steerplug: unknown recipe {shown!r}" + (f" ({hint})" if hint else ""))

    def cache_salt(self, steering: Steering | None, user_salt: str | None, prompt_len: int) -> str | None:
        """The cache salt for a request: distinct whenever cached KV blocks would hold different edits.

        Unsteered requests keep their own salt unless it could collide with ours (then it is escaped)."""
        if steering is None:
            if user_salt is None or not user_salt.startswith(SALT_PREFIX):
                return user_salt
            return SALT_PREFIX + "u:" + json.dumps(user_salt)
        served = self.served[steering.recipe]
        parts = [user_salt, served.name, served.digest, float(steering.strength).hex(),
                 prompt_len if served.prompt_dependent else None]
        return SALT_PREFIX + "s:" + json.dumps(parts)


def requested(allowlist: Allowlist | None, extra_args: Any) -> Steering | None:
    """A request's steering from its extra arguments (None: unsteered); RequestError for anything invalid,
    including any steering argument sent to an engine that serves no recipes."""
    if not isinstance(extra_args, Mapping) or (REQUEST_KEY not in extra_args and STRENGTH_KEY not in extra_args):
        return None
    return (allowlist or Allowlist([])).parse(extra_args)


def normalised(extra_args: Mapping[str, Any], steering: Steering) -> dict[str, Any]:
    """New extra arguments whose ``steerplug`` is ``{"recipe": ..., "strength": ...}``."""
    args = {k: v for k, v in extra_args.items() if k != STRENGTH_KEY}
    args[REQUEST_KEY] = steering.as_arg()
    return args


def slot_and_strength(allowlist: Allowlist, extra_args: Any) -> tuple[int, float]:
    """``(slot, strength)`` of one running request (slot 0: unsteered)."""
    steering = requested(allowlist, extra_args)
    if steering is None:
        return 0, 1.0
    return allowlist.served[steering.recipe].slot, steering.strength


def _served(slot: int, recipe: Recipe) -> Served:
    digest = recipe.sha256
    dependent = any(Activation(item.positions, item.schedule).needs_boundary
                    for item in recipe.spec.interventions if item.enabled)  # type: ignore[attr-defined]
    return Served(recipe.name, slot, recipe, digest, dependent)


def _strength(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"steerplug: strength must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or abs(value) > MAX_STRENGTH:
        raise RequestError(f"steerplug: strength must be finite and within ±{MAX_STRENGTH:g}, got {value!r}")
    return float(value)
