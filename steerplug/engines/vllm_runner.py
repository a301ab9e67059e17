"""vLLM's V1 model runner, as steering sees it: where the model is loaded and where each step's tokens are laid out.

- ``load_model``: once the model is loaded, compile the allowlist onto its decoder layers
  (:func:`steerplug.engines.slots.compile_points`) and hook the stream points (:mod:`.vllm_sites`).
- ``_prepare_inputs``: the runner has just laid this step's tokens out request by request, in the order of
  its persistent batch (``input_batch.req_ids``, ``num_scheduled_tokens`` each); write each token's slot,
  its request's prompt end (``input_batch.num_prompt_tokens``) and strength factor into the persistent
  buffers. This runs inside the runner's ``synchronize_input_prep`` window, like the runner's own
  host-to-device copies, so with async scheduling a pinned host buffer is never rewritten while a copy
  from it is pending.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

from steerplug.errors import SteerplugError

from .allowlist import RESOLVED_KEY, Allowlist, slot_and_strength
from .slots import TokenFeed, compile_points
from .vllm_sites import decoder_layers, install, model_info

AllowlistOf = Callable[[Any], "Allowlist | None"]
_MODELS = itertools.count()


class RunnerSteering:
    """One worker's steering: the allowlist, the per-token buffers, the hooks, each request's values."""

    def __init__(self, allowlist: Allowlist, feed: TokenFeed, handles: list[Any]):
        self.allowlist = allowlist
        self.feed = feed
        self.handles = handles
        self._values: dict[str, tuple[int, float]] = {}

    def request_values(self, req_ids: list[str], requests: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """``(slots, strengths)`` of the requests in batch order (cached per request id)."""
        if len(self._values) > 2 * len(requests) + 256:  # forget finished requests now and then
            self._values = {k: v for k, v in self._values.items() if k in requests}
        values = []
        for req_id in req_ids:
            found = self._values.get(req_id)
            if found is None:
                params = requests[req_id].sampling_params
                found = self._values[req_id] = slot_and_strength(self.allowlist, getattr(params, "extra_args", None))
            values.append(found)
        slots = np.fromiter((v[0] for v in values), dtype=np.int32, count=len(values))
        gains = np.fromiter((v[1] for v in values), dtype=np.float32, count=len(values))
        return slots, gains


def install_on_runner(runner: Any, allowlist: Allowlist) -> RunnerSteering:
    """Compile the allowlist onto the runner's loaded model and hook it."""
    from steerplug.plugins import get_plugins

    config = runner.vllm_config
    info = model_info(config)
    layers = decoder_layers(runner.get_model(), info.architectures[0])
    if len(layers) != info.num_layers:
        raise SteerplugError(f"steerplug: the model has {len(layers)} decoder layers, its config says "
                             f"{info.num_layers}")
    weight = next(p for p in layers[0].parameters() if p.is_floating_point())
    device, dtype = weight.device, config.model_config.dtype
    points = compile_points(allowlist.slots(), layers, info, device, dtype, get_plugins())
    feed = TokenFeed(int(runner.max_num_tokens), device, dtype)
    index = next(_MODELS)
    # Part of vLLM's config hash (compiled graphs name this model's points), so a second engine in the same
    # process never reuses a first engine's compiled graph and, with it, that engine's stream points.
    config.additional_config[RESOLVED_KEY]["model_index"] = index
    prefix = f"{allowlist.fingerprint[:16]}.{index}"
    return RunnerSteering(allowlist, feed, install(layers, points, feed, prefix))


def patch_runners(wrap: Callable[..., None], allowlist_of: AllowlistOf, module: Any) -> None:
    """Wrap the runner classes defined in ``module`` (called when vLLM imports it)."""
    name = module.__name__
    if name.endswith("worker.gpu.model_runner"):
        wrap(module.GPUModelRunner, "load_model", _refuse_v2(allowlist_of))
        return
    runner = getattr(module, "CPUModelRunner", None) or module.GPUModelRunner
    wrap(runner, "load_model", _load_model(allowlist_of))
    if "_prepare_inputs" in vars(runner):
        wrap(runner, "_prepare_inputs", _prepare_inputs)


def _load_model(allowlist_of: AllowlistOf) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def load_model(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(self, *args, **kwargs)
            allowlist = allowlist_of(self.vllm_config)
            if allowlist is not None:
                self._steerplug = install_on_runner(self, allowlist)
            return result

        return load_model

    return make


def _prepare_inputs(original: Callable[..., Any]) -> Callable[..., Any]:
    def prepare_inputs(self: Any, scheduler_output: Any, num_scheduled_tokens: np.ndarray, *args: Any,
                       **kwargs: Any) -> Any:
        result = original(self, scheduler_output, num_scheduled_tokens, *args, **kwargs)
        steering: RunnerSteering | None = getattr(self, "_steerplug", None)
        if steering is not None:
            batch = self.input_batch
            count = batch.num_reqs
            slots, gains = steering.request_values(batch.req_ids[:count], self.requests)
            steering.feed.write(slots, batch.num_prompt_tokens[:count], gains, num_scheduled_tokens[:count])
        return result

    return prepare_inputs


def _refuse_v2(allowlist_of: AllowlistOf) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def load_model(self: Any, *args: Any, **kwargs: Any) -> Any:
            if allowlist_of(self.vllm_config) is not None:
                raise SteerplugError("steerplug: steering recipes need vLLM's V1 model runner; set "
                                     "VLLM_USE_V2_MODEL_RUNNER=0")
            return original(self, *args, **kwargs)

        return load_model

    return make

