"""Which tokenizer turns token strings of a recipe into ids for a model (recipes name tokens as data).

A model carries no tokenizer. Strings in a recipe (e.g. ``{source: unembedding, positive: [" yes"]}``)
are encoded with, in order: the tokenizer registered for the model with :func:`use_tokenizer`, else the
tokenizer saved next to the model in the local folder ``model.config._name_or_path`` (local files only,
never a download). Token ids given as integers need no tokenizer.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from torch import nn

_TOKENIZERS: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()


def use_tokenizer(model: nn.Module, tokenizer: Any | None) -> None:
    """Encode recipe token strings for ``model`` with ``tokenizer`` (``None`` forgets it)."""
    if tokenizer is None:
        _TOKENIZERS.pop(model, None)
    else:
        _TOKENIZERS[model] = tokenizer


def tokenizer_for(model: nn.Module) -> Any | None:
    """The registered tokenizer of ``model``, else one loaded from its local folder, else None."""
    registered = _TOKENIZERS.get(model)
    if registered is not None:
        return registered
    folder = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    if not folder or not Path(folder).is_dir():
        return None
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError):
        return None
    _TOKENIZERS[model] = tokenizer
    return tokenizer
