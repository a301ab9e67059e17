"""The Transformers engine adapter: the only module that knows how Transformers calls its models.

It turns what Transformers hands the model into the sequence model's evidence
(:mod:`steerplug.runtime.sequence`), strongest first:

1. the ``generate()`` call itself: its input ids or embeddings and attention mask (or the mask generate
   infers from the pad token), and an existing cache meaning the call continues a conversation;
2. the forward's ``position_ids`` or ``cache_position``, whichever the installed version passes;
3. the cache, under any of its names (``past_key_values``; ``cache`` since transformers 5.24);
4. the 2-D attention mask.

It also finds where a module executes under accelerate's device maps and offloading.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch

from steerplug.runtime.evidence import CacheLength, CallInput, Evidence
from steerplug.runtime.sequence import SequenceTracker

CACHE_ARGUMENTS = ("cache", "past_key_values", "cache_params")
"""Names under which Transformers versions pass the KV cache to a model's forward and to ``generate``."""
INPUT_ARGUMENTS = ("input_ids", "inputs_embeds")


class TransformersEngine:
    """Feeds a :class:`SequenceTracker` from a Transformers model: a forward pre-hook and hook on the
    top-level model, and a wrapper around its ``generate`` (restored by :meth:`uninstall`)."""

    def __init__(self, model: torch.nn.Module, tracker: SequenceTracker):
        self.model = model
        self.tracker = tracker
        self._hooks: list[Any] = []
        self._generate: Callable[..., Any] | None = None
        self._had_own_generate = False
        self._previous_generate: Any = None

    @property
    def installed(self) -> bool:
        """Whether the hooks are on the model."""
        return bool(self._hooks)

    def install(self) -> None:
        """Register the top-level hooks and wrap ``generate`` (idempotent)."""
        if self._hooks:
            return
        # The hooks read and update the tracker's host state once per forward: they run eagerly even where
        # generate() compiles the model's __call__ (tracing them would bake the call number into guards and
        # recompile at every generate call).
        self._hooks = [
            self.model.register_forward_pre_hook(torch.compiler.disable(self._pre_hook), with_kwargs=True),
            self.model.register_forward_hook(torch.compiler.disable(self._post_hook), with_kwargs=True,
                                             always_call=True),
        ]
        self._wrap_generate()

    def uninstall(self) -> None:
        """Remove the hooks and the ``generate`` wrapper; the model's attributes are as before."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        self._unwrap_generate()
        self.tracker.current = None

    def _pre_hook(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        evidence = forward_evidence(args, kwargs)
        if evidence is None:
            self.tracker.current = None
            return
        self.tracker.on_forward(evidence)

    def _post_hook(self, module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        cache = returned_cache(output)
        self.tracker.finish_forward(_identity(cache))

    def _wrap_generate(self) -> None:
        original = getattr(self.model, "generate", None)
        if not callable(original):
            return
        tracker, model = self.tracker, self.model

        @functools.wraps(original)
        def generate(*args: Any, **kwargs: Any) -> Any:
            if self._generate is not generate:  # uninstalled while another wrapper still points here
                return original(*args, **kwargs)
            given = call_input(model, args, kwargs)
            if given is None:
                return original(*args, **kwargs)
            token = tracker.begin_call(given)
            try:
                return original(*args, **kwargs)
            finally:
                tracker.end_call(token)

        self._had_own_generate = "generate" in vars(self.model)
        self._previous_generate = vars(self.model).get("generate")
        self._generate = generate
        setattr(self.model, "generate", generate)  # noqa: B010 (an instance attribute, removed at uninstall)

    def _unwrap_generate(self) -> None:
        wrapper, self._generate = self._generate, None
        if wrapper is None or vars(self.model).get("generate") is not wrapper:
            return  # someone wrapped it again since: our wrapper now passes calls straight through
        if self._had_own_generate:
            setattr(self.model, "generate", self._previous_generate)  # noqa: B010
        else:
            del self.model.generate


def forward_evidence(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Evidence | None:
    """What a forward of a Transformers causal LM was given (None: no token tensor to place)."""
    tokens = _tokens(args, kwargs)
    if tokens is None:
        return None
    batch, length = int(tokens.shape[0]), int(tokens.shape[1])
    cache = _first_present(kwargs, CACHE_ARGUMENTS)
    position_ids = kwargs.get("position_ids")
    cache_position = kwargs.get("cache_position")
    cache_position = cache_position if isinstance(cache_position, torch.Tensor) and cache_position.dim() == 1 \
        and int(cache_position.shape[0]) == length else None
    mask = kwargs.get("attention_mask")
    mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 and int(mask.shape[0]) == batch else None
    return Evidence(
        batch=batch, length=length, device=tokens.device,
        position_ids=position_ids if isinstance(position_ids, torch.Tensor) else None,
        cache_position=cache_position, has_cache=cache is not None,
        cache_key=_identity(cache),
        cache_length=cache_length(cache, cache_position), mask=mask,
    )


def _identity(cache: Any) -> int | None:
    """The cache's identity, to recognise it in the next plain forward; None in a traced forward (compiled
    generation runs inside ``generate()``, which never needs it, and ``id()`` there would make every new
    cache recompile the graph)."""
    return None if cache is None or torch.compiler.is_compiling() else id(cache)


def call_input(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CallInput | None:
    """What a ``generate()`` call was given (None when it has no input tensor: the plain-forward rules
    then apply). Reads the host once per call: whether the mask holds padding, and a static cache's
    length when one is continued."""
    inputs = kwargs.get("inputs_embeds")
    if not isinstance(inputs, torch.Tensor):
        inputs = kwargs.get("input_ids", kwargs.get("inputs", args[0] if args else None))
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2:
        return None
    batch, length = int(inputs.shape[0]), int(inputs.shape[1])
    mask = kwargs.get("attention_mask")
    if not (isinstance(mask, torch.Tensor) and mask.dim() == 2):
        mask = _inferred_mask(model, inputs, kwargs)
    cached = cache_length(_first_present(kwargs, CACHE_ARGUMENTS), None)
    padded = mask is not None and not bool(mask.bool().all())
    right = None
    if padded and not bool(mask[:, -1].bool().all()):  # type: ignore[index]
        assert mask is not None
        right = int((~mask[:, -1].bool()).nonzero()[0, 0])
    return CallInput(batch=batch, length=length, mask=mask if padded else None,
                     cached=int(cached) if cached is not None else 0, padded=padded, right_padded_row=right)


def cache_length(cache: Any, cache_position: torch.Tensor | None) -> CacheLength:
    """Tokens already in ``cache``: a host int for dynamic caches, a device counter for static ones (where
    the forward's ``cache_position`` is the better counter on versions that pass it)."""
    if cache is None:
        return None
    if hasattr(cache, "get_seq_length"):
        length = cache.get_seq_length()
        if isinstance(length, torch.Tensor):
            return cache_position[0] if cache_position is not None else length
        return int(length)
    if isinstance(cache, (tuple, list)) and cache and isinstance(cache[0], (tuple, list)) and cache[0]:
        return int(cache[0][0].shape[-2])  # legacy tuple of (key, value) per layer
    return None


def execution_device(module: torch.nn.Module, model: torch.nn.Module) -> torch.device | None:
    """Where ``module`` computes under accelerate (device maps, cpu/disk offload): the execution device of
    the nearest accelerate hook on it or an ancestor, else on its first hooked descendant (offloading hooks
    sit on the modules that own weights); None when no hook says."""
    chain = [*_ancestors(module, model), *module.modules()]
    for candidate in chain:
        device = _hook_device(getattr(candidate, "_hf_hook", None))
        if device is not None:
            return device
    return None


def _ancestors(module: torch.nn.Module, model: torch.nn.Module) -> list[torch.nn.Module]:
    parents = {id(child): parent for parent in model.modules() for child in parent.children()}
    chain = [module]
    while id(chain[-1]) in parents:
        chain.append(parents[id(chain[-1])])
    return chain


def _hook_device(hook: Any) -> torch.device | None:
    if hook is None:
        return None
    for inner in getattr(hook, "hooks", ()):  # accelerate's SequentialHook
        found = _hook_device(inner)
        if found is not None:
            return found
    device = getattr(hook, "execution_device", None)
    if device is None:
        return None
    return torch.device(f"cuda:{device}" if isinstance(device, int) else device)


def _tokens(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    for value in (*(kwargs.get(name) for name in INPUT_ARGUMENTS), args[0] if args else None):
        if isinstance(value, torch.Tensor) and value.dim() >= 2:
            return value
    return None


def _first_present(kwargs: dict[str, Any], names: tuple[str, ...]) -> Any:
    return next((kwargs[name] for name in names if kwargs.get(name) is not None), None)


def cache_argument(model: torch.nn.Module) -> str:
    """The keyword ``generate()`` takes a cache to continue under: ``cache`` since transformers 5.24, else
    ``past_key_values``."""
    prepare = getattr(type(model), "prepare_inputs_for_generation", None)
    parameters = inspect.signature(prepare).parameters if prepare is not None else {}
    return "cache" if "cache" in parameters else "past_key_values"


def returned_cache(output: Any) -> Any:
    """The cache a forward or ``generate(..., return_dict_in_generate=True)`` returned, under any name."""
    if isinstance(output, tuple) or not dataclasses.is_dataclass(output):
        return None
    fields = {field.name for field in dataclasses.fields(output)}
    name = next((name for name in CACHE_ARGUMENTS if name in fields), None)  # never a deprecated alias
    return getattr(output, name) if name is not None else None


def _inferred_mask(model: torch.nn.Module, inputs: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The mask ``generate`` infers when none is given: ``inputs != pad`` when the pad token occurs in integer
    inputs and is not an end-of-sequence token."""
    if inputs.dtype not in (torch.int32, torch.int64):
        return None
    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)

    def setting(name: str) -> Any:
        value = kwargs.get(name)
        return value if value is not None else getattr(config, name, None)

    pad, eos = setting("pad_token_id"), setting("eos_token_id")
    if pad is None:
        return None
    eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
    if int(pad) in {int(e) for e in eos_ids} or not bool((inputs == int(pad)).any()):
        return None
    return (inputs != int(pad)).to(torch.long)
