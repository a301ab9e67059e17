"""Embedded demo model: a tiny Llama trained on a two-language, two-sentiment grammar corpus.

The model, its tokenizer and the grammar let newcomers see steering work offline:
steer the rare Spanish language or the minority negative sentiment and measure the
effect exactly with :func:`steerplug.demo.evaluate.concept_rates`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["DEMO_MODEL_NAMES", "demo_model_path", "load_demo_model"]


DEMO_MODEL_NAMES = ("demo", "steerplug-demo")
"""What commands accept (``--model demo``) to mean the embedded demo model."""


def demo_model_path() -> Path:
    """Folder holding the shipped demo model (``config.json``, ``model.safetensors``, tokenizer)."""
    return Path(__file__).resolve().parent / "assets"


def load_demo_model(device: str = "cpu", path: str | Path | None = None, *, dtype: Any = None,
                    device_map: Any = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` with ``from_pretrained`` from ``path`` (default: the shipped model).

    The model is put on ``device`` (or placed by ``device_map``) in eval mode; ``dtype`` defaults to the
    stored float32.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = str(path or demo_model_path())
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a 1 MB model needs no "Loading weights" bar on stderr
    extra = {"device_map": device_map} if device_map is not None else {}
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or "auto", **extra)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if device_map is None:
        model = model.to(device)
    return model.eval(), AutoTokenizer.from_pretrained(folder)
