"""Loading a causal LM by name: the embedded demo model, a local checkpoint folder, or a hub id.

:func:`load_model` is what every model-loading command calls (through the shared options of
:mod:`steerplug.cli.models`) and what Python users call with the same options as keyword arguments::

    model, tok = steerplug.load_model("org/model", revision="<sha>", dtype="bfloat16", device_map="auto")

Every failure is one :class:`~steerplug.errors.SteerplugError` line naming the model and the fix.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from steerplug.demo import DEMO_MODEL_NAMES
from steerplug.errors import SteerplugError, first_line

DTYPES: dict[str, torch.dtype | str] = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
                                        "float16": torch.float16}
"""``--dtype`` choices: ``auto`` keeps the checkpoint's stored dtype (Transformers' ``dtype="auto"``)."""


class RemoteCodeWarning(UserWarning):
    """Issued when a model is loaded with ``trust_remote_code=True``: it runs Python code from the checkpoint."""


@dataclass(frozen=True)
class ModelOptions:
    """How to load a model: the same fields as ``--model``, ``--revision``, ``--device``, ``--dtype``,
    ``--device-map`` and ``--trust-remote-code`` on the command line."""

    model: str
    revision: str | None = None
    device: str | None = None
    """``cpu``, ``cuda``, ``cuda:1``, ``mps``...; None: ``cuda`` when available, else ``cpu``."""
    dtype: str = "auto"
    device_map: str | None = None
    """Passed to ``from_pretrained`` (e.g. ``auto``); needs ``accelerate``; excludes ``device``."""
    trust_remote_code: bool = False

    def load(self) -> tuple[Any, Any]:
        """``(model, tokenizer)``; see :func:`load_model`."""
        return load_model(self.model, revision=self.revision, device=self.device, dtype=self.dtype,
                          device_map=self.device_map, trust_remote_code=self.trust_remote_code)


def load_model(model: str, *, revision: str | None = None, device: str | None = None, dtype: str | torch.dtype = "auto",
               device_map: str | dict[str, Any] | None = None, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for ``model``: ``demo``, a local folder saved with ``save_pretrained``, or a
    Hugging Face hub id (read from the local cache when ``HF_HUB_OFFLINE`` is set), in eval mode.

    ``revision`` pins a hub branch, tag or commit; ``dtype`` is ``auto`` (the checkpoint's), ``float32``,
    ``bfloat16`` or ``float16``; ``device`` defaults to ``cuda`` when available, else ``cpu``; ``device_map``
    (e.g. ``"auto"``) spreads the model with ``accelerate`` instead; ``trust_remote_code`` runs the
    checkpoint's own Python code and issues a :class:`RemoteCodeWarning`.
    """
    torch_dtype = resolve_dtype(dtype)
    if device_map is not None and device is not None:
        raise SteerplugError("give either a device or a device map, not both (a device map places every layer)")
    if device_map is not None and importlib.util.find_spec("accelerate") is None:
        raise SteerplugError("a device map needs the accelerate package: pip install accelerate")
    target = resolve_device(device) if device_map is None else None
    if model in DEMO_MODEL_NAMES:
        if revision is not None:
            raise SteerplugError("the embedded demo model has no revisions (drop --revision)")
        from steerplug.demo import load_demo_model

        return load_demo_model(device=str(target or "cpu"), dtype=torch_dtype, device_map=device_map)
    source = _source(model, revision)
    if trust_remote_code:
        warnings.warn(remote_code_warning(model), RemoteCodeWarning, stacklevel=2)
    return _from_pretrained(model, source, revision, torch_dtype, target, device_map, trust_remote_code)


def remote_code_warning(model: str) -> str:
    """The warning shown before loading ``model`` with remote code trusted."""
    return (f"--trust-remote-code runs Python code shipped with '{model}' on this machine; use it only for "
            "checkpoints you trust, pinned with --revision")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    """``auto`` or a floating torch dtype; anything else is a one-line error listing the choices."""
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise SteerplugError(f"dtype {dtype} is not a floating-point type")
        return dtype
    if dtype not in DTYPES:
        from steerplug.errors import did_you_mean

        raise SteerplugError(f"unknown dtype '{dtype}' ({did_you_mean(dtype, DTYPES)})")
    return DTYPES[dtype]


def resolve_device(device: str | None) -> torch.device:
    """The device to load on: ``device``, or ``cuda`` when available, else ``cpu``; one that does not exist
    here is a one-line error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError):
        raise SteerplugError(f"unknown device '{device}' (e.g. cpu, cuda, cuda:1, mps)") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise SteerplugError(f"device '{device}': CUDA is not available on this machine (use --device cpu)")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise SteerplugError(f"device '{device}': this machine has {torch.cuda.device_count()} CUDA device(s)")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise SteerplugError(f"device '{device}': MPS is not available on this machine")
    return chosen


def _source(model: str, revision: str | None) -> str:
    local = Path(model).expanduser()
    if local.exists():
        if not local.is_dir():
            raise SteerplugError(f"model '{model}' is a file; give the folder a checkpoint was saved to")
        if revision is not None:
            raise SteerplugError(f"--revision pins hub ids, not the local folder '{model}'")
        if not (local / "config.json").is_file():
            raise SteerplugError(f"model folder '{model}' has no config.json (save it with save_pretrained)")
        return str(local)
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or not model.strip():
        raise SteerplugError(f"model folder '{model}' not found")
    return model


def _from_pretrained(name: str, source: str, revision: str | None, dtype: torch.dtype | str,
                     device: torch.device | None, device_map: Any, trust_remote_code: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    common: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # commands print their own output; no loader bars on stderr
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
        extra = {"device_map": device_map} if device_map is not None else {}
        model: Any = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **common, **extra)
    except (OSError, ValueError, ImportError, KeyError) as exc:
        raise SteerplugError(f"cannot load model '{name}': {_reason(exc, name, revision)}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


def _reason(exc: BaseException, name: str, revision: str | None) -> str:
    """Why loading failed: the Hub's own error when one caused it (offline, unreachable, not found, gated),
    described as :mod:`steerplug.hub.hf` describes it for recipes, else the first line and a hint."""
    from steerplug.hub.hf import describe_hub_error
    from steerplug.hub.hfref import HubRef

    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if type(cause).__module__.startswith("huggingface_hub"):
            message, hint = describe_hub_error(cause, HubRef(name, revision, ""))
            if message is not None:
                return message + (f" ({hint})" if hint else "")
        cause = cause.__cause__ or cause.__context__
    return first_line(exc) + _hint(exc)


def _hint(exc: BaseException) -> str:
    return " (pass --trust-remote-code / trust_remote_code=True if you trust it)" if "trust_remote_code" in str(exc) \
        else ""
