"""Loading models named on the command line: the embedded demo model, a local folder, or a hub id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerplug.demo import DEMO_MODEL_NAMES  # re-exported: commands import it from here
from steerplug.errors import SteerplugError


def load_causal_lm(name: str, device: str = "cpu") -> tuple[Any, Any]:
    """``(model, tokenizer)`` for ``name``: ``demo``, a local model folder, or a Hugging Face hub id
    (from the local cache when offline). Failures become a one-line :class:`SteerplugError`."""
    if name in DEMO_MODEL_NAMES:
        from steerplug.demo import load_demo_model

        return load_demo_model(device=device)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the CLI prints its own output; no loader bars on stderr
    local = Path(name).expanduser()
    if not local.exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise SteerplugError(f"model folder '{name}' not found")
    try:
        source = str(local) if local.exists() else name
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SteerplugError(f"cannot load model '{name}': {first}") from None
    return model.to(device).eval(), tokenizer  # type: ignore[arg-type]
