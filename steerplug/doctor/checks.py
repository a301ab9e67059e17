"""``steerplug doctor``'s checks: is steering exact on the installed stack, in every generation mode?

Each check runs ``generate()`` on a tiny random Llama twice with the same settings: once steered by a
recipe, once with :class:`~steerplug.doctor.reference.HandHook`, which knows every token's position by
construction, and compares tokens and logits bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from steerplug.doctor.reference import POSITION_KINDS, HandHook, Where
from steerplug.engines.transformers import cache_argument, returned_cache
from steerplug.errors import SteerplugError

PROMPTS = ((0, 5, 9, 14, 3, 7), (0, 0, 0, 21, 8, 30), (4, 12, 19, 25, 6, 11))
"""Three left-padded prompts (pad id 0): prompt lengths 5, 3 and 6."""
NEXT_TURN = ((17, 23, 4), (8, 44, 13), (29, 3, 61))
LAYER, NEW_TOKENS = 1, 4
SCHEDULE: dict[str, Any] = {"start": 1, "stop": 4, "decay": "linear"}

KINDS: dict[str, tuple[Any, Where]] = {
    **{kind: POSITION_KINDS[kind] for kind in ("all", "prompt", "generated", "last_prompt", "range")},
    "schedule": ("generated", lambda p, n: (p - n >= 1) & (p - n < 4)),
}
"""Position kinds checked: ``positions:`` value and the hand reference's rule."""


@dataclass(frozen=True)
class Mode:
    """A generation mode: ``generate`` options, the prompt rows used, and the rows a per-row map steers."""

    name: str
    options: dict[str, Any]
    rows: tuple[int, ...] = (0, 1, 2)
    second_turn: bool = False
    per_row: int | None = None

    @property
    def expand(self) -> int:
        """Batch rows per prompt."""
        return int(self.options.get("num_beams", self.options.get("num_return_sequences", 1)))


MODES = (
    Mode("dynamic cache, batch 1", {}, rows=(2,)),
    Mode("dynamic cache, left padding", {}),
    Mode("static cache, left padding", {"cache_implementation": "static"}),
    Mode("second turn on the reused cache", {}, second_turn=True),
    Mode("beams + returned sequences", {"num_beams": 2, "num_return_sequences": 2}),
    Mode("per-row recipe under beams", {"num_beams": 2}, per_row=1),
)


@dataclass(frozen=True)
class Outcome:
    """One cell: ``ok`` (tokens and logits equal the reference bit for bit), ``MISMATCH`` or ``error``."""

    mode: str
    kind: str
    status: str
    detail: str = ""


def tiny_llama() -> torch.nn.Module:
    """The checks' model: a 2-layer Llama with random weights from a fixed seed (no download)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                         eos_token_id=None, max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    torch.random.set_rng_state(generator_state)
    return model


def run_checks(model: torch.nn.Module | None = None, modes: tuple[Mode, ...] = MODES) -> list[Outcome]:
    """Every mode × position kind (on one CPU thread: a tiny model only loses time to more)."""
    model = tiny_llama() if model is None else model
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [_check(model, mode, kind) for mode in modes for kind in KINDS]
    finally:
        torch.set_num_threads(threads)


def _check(model: torch.nn.Module, mode: Mode, kind: str) -> Outcome:
    try:
        steered = _chat(model, mode, lambda mask, cached: _steered(model, mode, kind))
        reference = _chat(model, mode, lambda mask, cached: _hand(model, mode, kind, mask, cached))
    except SteerplugError as exc:
        return Outcome(mode.name, kind, "error", str(exc).splitlines()[0])
    if not torch.equal(steered[0], reference[0]):
        return Outcome(mode.name, kind, "MISMATCH", "generated tokens differ")
    if any(not torch.equal(a, b) for a, b in zip(steered[1], reference[1], strict=True)):
        return Outcome(mode.name, kind, "MISMATCH", "logits differ")
    return Outcome(mode.name, kind, "ok")


Steering = Callable[[torch.Tensor, int], AbstractContextManager[Any]]


def _chat(model: torch.nn.Module, mode: Mode, steering: Steering) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One generate call (two for a second turn, both steered): final tokens and logits."""
    ids = torch.tensor(PROMPTS)[list(mode.rows)]
    mask = (ids != 0).long()
    with steering(mask, 0):
        out = _generate(model, ids, mask, mode.options)
    if not mode.second_turn:
        return out.sequences, list(out.logits)
    cache = returned_cache(out)
    name = cache_argument(model)
    ids = torch.cat([out.sequences, torch.tensor(NEXT_TURN)[list(mode.rows)]], dim=1)
    mask = torch.cat([mask, torch.ones(mask.shape[0], ids.shape[1] - mask.shape[1], dtype=torch.long)], dim=1)
    with steering(mask, int(cache.get_seq_length())):
        out = _generate(model, ids, mask, {**mode.options, name: cache})
    return out.sequences, list(out.logits)


def _generate(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, options: dict[str, Any]) -> Any:
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                              pad_token_id=0, eos_token_id=None, return_dict_in_generate=True, output_logits=True,
                              **options)  # type: ignore[operator]


def vector_for(model: torch.nn.Module) -> torch.Tensor:
    """A large fixed direction at the checked layer (large, so a misplaced edit changes tokens)."""
    width = int(getattr(model, "config").hidden_size)  # noqa: B009 (a Transformers model)
    v = torch.randn(width, generator=torch.Generator().manual_seed(7))
    return 6.0 * v / v.norm() * width**0.5


def _document(model: torch.nn.Module, kind: str) -> dict[str, Any]:
    item: dict[str, Any] = {"id": "check", "op": "add", "site": "resid_post", "layers": LAYER,
                            "vector": vector_for(model).tolist(), "positions": KINDS[kind][0]}
    if kind == "schedule":
        item["schedule"] = SCHEDULE
    return {"apiVersion": "steerplug/v1", "kind": "Recipe", "metadata": {"name": f"doctor-{kind}"},
            "interventions": [item]}


@contextmanager
def _steered(model: torch.nn.Module, mode: Mode, kind: str) -> Iterator[None]:
    from steerplug.runtime.steer import steer

    document: Any = _document(model, kind)
    recipes: Any = {mode.per_row: document} if mode.per_row is not None else document
    with steer(model, recipes):
        yield


def _hand(model: torch.nn.Module, mode: Mode, kind: str, mask: torch.Tensor, cached: int) -> HandHook:
    from steerplug.sites.adapter import resolve_adapter

    layer = resolve_adapter(model).resolve("resid_post", LAYER).module
    rows = None
    if mode.per_row is not None:
        rows = torch.tensor([row == mode.per_row for row in range(len(mode.rows))])
    return HandHook(layer, vector_for(model), KINDS[kind][1], mask, cached=cached, expand=mode.expand,
                    weight=_linear_decay if kind == "schedule" else None, rows=rows)


def _linear_decay(step: torch.Tensor) -> torch.Tensor:
    start, stop = int(SCHEDULE["start"]), int(SCHEDULE["stop"])
    weight = 1.0 - (step - start).clamp_min(0).float() / (stop - start)
    return weight.where(step >= 0, torch.ones((), dtype=torch.float32))
