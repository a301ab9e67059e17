"""The JSON header of a safetensors file, read and checked with stated bounds before safetensors sees the file.

A safetensors file is an 8-byte little-endian header length, a JSON header
``{"__metadata__": {str: str}, name: {"dtype": ..., "shape": [...], "data_offsets": [begin, end]}, ...}``
and the tensor bytes. The header is parsed here with the recipe parser's JSON rules (nesting, number literals,
duplicate keys) and its whole structure is checked: at most :data:`MAX_TENSORS_PER_FILE` tensors of a
supported dtype, non-empty, with offsets inside the file that match their shape. Only then is the file handed
to safetensors, so no header can make it recurse, allocate without bound or produce a tensor steerplug cannot
use.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

from steerplug.errors import RecipeError, shown
from steerplug.recipe.limits import (
    MAX_HEADER_BYTES,
    MAX_KEY_CHARS,
    MAX_TENSOR_DIMS,
    MAX_TENSORS_PER_FILE,
    SUPPORTED_DTYPES,
)
from steerplug.recipe.parse import open_regular, parse_json_bounded

ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
              "U64": 8, "U32": 4, "U16": 2, "C64": 8, "F8_E4M3": 1, "F8_E4M3FNUZ": 1, "F8_E5M2": 1,
              "F8_E5M2FNUZ": 1}
"""Bytes per element of every dtype the safetensors format names."""
_KINDS = {"F8": "float8", "I": "integer", "U": "unsigned integer", "BOOL": "boolean", "C": "complex"}
SUPPORTED_TEXT = "F16, BF16, F32 and F64"


def read_header(path: Path, label: str) -> dict[str, dict[str, Any]]:
    """The checked tensor entries of the safetensors file ``path`` (``{name: {dtype, shape, data_offsets}}``);
    ValueError ``(message, hint)`` naming ``label`` on anything out of bounds or unusable."""
    with open_regular(path) as handle:
        head = handle.read(8)
        size = handle.seek(0, 2)
        if len(head) < 8:
            raise ValueError(f"'{label}' is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", head)
        if 8 + length > size:
            raise ValueError(f"'{label}' is not a safetensors file (bad header)")
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"'{label}' has a {length}-byte header, over the {MAX_HEADER_BYTES}-byte limit")
        handle.seek(8)
        raw = handle.read(length)
    header = _parse(raw, label)
    return _tensor_entries(header, label, size - 8 - length)


def _parse(raw: bytes, label: str) -> dict[str, Any]:
    try:
        header = parse_json_bounded(raw.decode("utf-8"), label)
    except UnicodeDecodeError:
        raise ValueError(f"'{label}' is not a safetensors file (bad header)") from None
    except RecipeError as exc:
        raise ValueError(f"'{label}' has a bad header: {exc.problems[0].message}") from None
    if not isinstance(header, dict):
        raise ValueError(f"'{label}' is not a safetensors file (bad header)")
    return header


def _tensor_entries(header: dict[str, Any], label: str, data_bytes: int) -> dict[str, dict[str, Any]]:
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"'{label}' has metadata that is not a mapping of strings")
    if len(header) > MAX_TENSORS_PER_FILE:
        raise ValueError(f"'{label}' holds {len(header)} tensors, over the {MAX_TENSORS_PER_FILE}-tensor limit")
    if not header:
        raise ValueError(f"'{label}' holds no tensor")
    for name, entry in header.items():
        _check_entry(name, entry, label, data_bytes)
    return header


def _check_entry(name: str, entry: Any, label: str, data_bytes: int) -> None:
    where = f"tensor {shown(name)} in '{label}'"
    if len(name) > MAX_KEY_CHARS:
        raise ValueError(f"{where} has a name longer than {MAX_KEY_CHARS} characters")
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise ValueError(f"'{label}' is not a safetensors file (bad entry for {shown(name)})")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in ITEM_BYTES:
        raise ValueError(f"{where} has unknown dtype {shown(dtype)}")
    if dtype not in SUPPORTED_DTYPES:
        kind = next((k for prefix, k in _KINDS.items() if dtype.startswith(prefix)), dtype)
        raise ValueError(f"{where} is {dtype} ({kind}); steerplug reads {SUPPORTED_TEXT} tensors",
                         "convert it to a float dtype before saving")
    if not (isinstance(shape, list) and len(shape) <= MAX_TENSOR_DIMS
            and all(type(d) is int and d >= 0 for d in shape)):
        raise ValueError(f"{where} has an invalid shape {shown(shape)}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_bytes):
        raise ValueError(f"{where} has data offsets outside the file")
    count = math.prod(shape)
    if count == 0:
        raise ValueError(f"{where} is empty (shape {list(shape)})", "a tensor needs at least one value")
    if offsets[1] - offsets[0] != count * ITEM_BYTES[dtype]:
        raise ValueError(f"{where} has {offsets[1] - offsets[0]} bytes for shape {list(shape)} of {dtype}")
