"""The vLLM engine adapter: the only module that knows how vLLM's processes call into a model.

Four places, each wrapped once per process when vLLM imports its module (:data:`PATCHES`, applied by the
plugin entry point :mod:`steerplug.engines.vllm_plugin`):

- ``EngineArgs.create_engine_config`` (the process that starts the engine): resolves the allowlist, refuses
  what steering does not support yet, and records the folders and the allowlist's fingerprint in
  ``additional_config["steerplug_resolved"]``. That key is part of vLLM's config hash, so compiled graphs
  cached on disk are never reused across different recipe sets.
- ``InputProcessor.process_inputs`` (API server / ``LLM``): validates a request's ``steerplug`` argument
  (unknown name, bad strength: ``VLLMValidationError``, HTTP 400 for that request only) and normalises it.
- ``EngineCore.preprocess_add_request`` (engine core): validates again (a request-scoped error if another
  frontend skipped the check) and sets the request's cache salt (see :meth:`Allowlist.cache_salt`).
- the V1 model runner's ``load_model`` (compile the allowlist onto the loaded model, install the stream
  hooks) and ``_prepare_inputs`` (write the per-token slot, prompt-end and strength buffers in place).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steerplug.errors import RecipeError, SteerplugError

from .allowlist import (
    ENV_VAR,
    REQUEST_KEY,
    RESOLVED_KEY,
    SETTING_KEY,
    Allowlist,
    RequestError,
    normalised,
    recipe_dirs,
    requested,
)
from .slots import placement_problems
from .vllm_sites import VERIFIED_ARCHITECTURES, model_info

V2_RUNNER_ENV = "VLLM_USE_V2_MODEL_RUNNER"
_ALLOWLISTS: dict[str, Allowlist] = {}


def _wrap(owner: type, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    original = getattr(owner, name)
    if getattr(original, "__steerplug__", False):
        return  # plugins may be loaded more than once per process
    wrapped = functools.wraps(original)(make(original))
    wrapped.__steerplug__ = True  # type: ignore[attr-defined]
    setattr(owner, name, wrapped)


def _runners(module: Any) -> None:
    from .vllm_runner import patch_runners

    patch_runners(_wrap, allowlist_of, module)


PATCHES: dict[str, Callable[[Any], None]] = {
    "vllm.engine.arg_utils": lambda m: _wrap(m.EngineArgs, "create_engine_config", _create_engine_config),
    "vllm.v1.engine.input_processor": lambda m: _wrap(m.InputProcessor, "process_inputs", _process_inputs),
    "vllm.v1.engine.core": lambda m: _wrap(m.EngineCore, "preprocess_add_request", _preprocess_add_request),
    "vllm.v1.worker.gpu_model_runner": _runners,
    "vllm.v1.worker.cpu_model_runner": _runners,
    "vllm.v1.worker.gpu.model_runner": _runners,
}
"""vLLM module -> what to wrap in it, applied when the module is imported (nothing is imported early)."""


# ---- the process that starts the engine ------------------------------------------------------------------

def _create_engine_config(original: Callable[..., Any]) -> Callable[..., Any]:
    def create_engine_config(self: Any, *args: Any, **kwargs: Any) -> Any:
        extra = self.additional_config if isinstance(self.additional_config, dict) else {}
        dirs = recipe_dirs(os.environ.get(ENV_VAR), extra.get(SETTING_KEY))
        if dirs and os.environ.get(V2_RUNNER_ENV) is None:
            os.environ[V2_RUNNER_ENV] = "0"  # steering is built on the V1 model runner (see refuse_unsupported)
        config = original(self, *args, **kwargs)
        if dirs:
            resolve(config, dirs)
        return config

    return create_engine_config


def resolve(config: Any, dirs: list[Path]) -> Allowlist:
    """Load and check the allowlist for this engine; record it in the config every process receives."""
    refuse_unsupported(config)
    allowlist = Allowlist.load(dirs)
    problems = placement_problems(allowlist.slots(), model_info(config))
    if problems:
        raise RecipeError(problems)
    if not isinstance(config.additional_config, dict):
        raise SteerplugError("steerplug: vLLM's additional_config must be a dict to record the served recipes")
    config.additional_config[RESOLVED_KEY] = {
        "dirs": [str(d.resolve()) for d in dirs], "fingerprint": allowlist.fingerprint}
    _ALLOWLISTS[allowlist.fingerprint] = allowlist
    return allowlist


def refuse_unsupported(config: Any) -> None:
    """Features steering is not built or tested for: a clear error at start, never a silent wrong answer."""
    architecture = (config.model_config.architectures or ["?"])[0]
    reasons = {
        f"architecture {architecture} (verified: {', '.join(sorted(VERIFIED_ARCHITECTURES))})":
            architecture not in VERIFIED_ARCHITECTURES,
        "pipeline parallelism": config.parallel_config.pipeline_parallel_size > 1,
        "speculative decoding": config.speculative_config is not None,
        "the V2 model runner (unset VLLM_USE_V2_MODEL_RUNNER or set it to 0)": config.use_v2_model_runner,
        "multimodal models": config.model_config.is_multimodal_model,
        "pooling models": config.model_config.runner_type != "generate",
    }
    refused = [name for name, hit in reasons.items() if hit]
    if refused:
        raise SteerplugError(f"steerplug: {' and '.join(refused)} with steering recipes is not supported on "
                             "the vLLM engine yet")


def allowlist_of(config: Any) -> Allowlist | None:
    """This engine's allowlist (loaded once per process and checked against the starting process's
    fingerprint), or None when it serves no recipes."""
    resolved = (config.additional_config or {}).get(RESOLVED_KEY) if isinstance(
        config.additional_config, dict) else None
    if resolved is None:
        return None
    fingerprint = resolved["fingerprint"]
    if fingerprint not in _ALLOWLISTS:
        allowlist = Allowlist.load([Path(d) for d in resolved["dirs"]])
        if allowlist.fingerprint != fingerprint:
            raise SteerplugError("steerplug: the recipe bundles changed while the engine was starting "
                                 f"({', '.join(resolved['dirs'])}); restart it")
        _ALLOWLISTS[fingerprint] = allowlist
    return _ALLOWLISTS[fingerprint]


# ---- requests --------------------------------------------------------------------------------------------

def _process_inputs(original: Callable[..., Any]) -> Callable[..., Any]:
    def process_inputs(self: Any, request_id: str, prompt: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
        extra = getattr(params, "extra_args", None)
        try:
            steering = requested(allowlist_of(self.vllm_config), extra)
            if steering is not None and kwargs.get("resumable"):
                raise RequestError("steerplug: resumable (streaming-input) requests cannot be steered yet")
        except RequestError as exc:
            from vllm.exceptions import VLLMValidationError

            raise VLLMValidationError(str(exc), parameter=REQUEST_KEY) from None
        request = original(self, request_id, prompt, params, *args, **kwargs)
        if steering is not None and request.sampling_params is not None:
            request.sampling_params.extra_args = normalised(request.sampling_params.extra_args, steering)
        return request

    return process_inputs


def _preprocess_add_request(original: Callable[..., Any]) -> Callable[..., Any]:
    def preprocess_add_request(self: Any, request: Any) -> Any:
        allowlist = allowlist_of(self.vllm_config)
        params = request.sampling_params
        steering = requested(allowlist, getattr(params, "extra_args", None))
        if steering is not None:
            params.extra_args = normalised(params.extra_args, steering)
        if allowlist is not None:
            request.cache_salt = allowlist.cache_salt(steering, request.cache_salt, prompt_length(request))
        return original(self, request)

    return preprocess_add_request


def prompt_length(request: Any) -> int:
    """Tokens in an engine request's prompt (token ids or embeddings)."""
    if request.prompt_token_ids is not None:
        return len(request.prompt_token_ids)
    return int(request.prompt_embeds.shape[0])
