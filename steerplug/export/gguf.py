"""llama.cpp's control-vector GGUF layout: the one module that knows it (read and written with ``gguf``).

A control-vector file has ``general.architecture = controlvector``, a ``controlvector.model_hint`` string (the
model type it was made for), ``controlvector.layer_count`` (the number of direction tensors, as repeng writes
it) and one F32 1-D tensor ``direction.N`` per steered layer. llama.cpp adds ``direction.N`` (times the
strength given on its command line) to the output of its layer ``N`` (0-based), and rejects ``direction.0``:
layer 0 is never steered (``common/common.cpp``, ``src/llama-adapter.cpp``; checked against llama.cpp itself
by ``tests/test_llama_cpp.py``). In steerplug's terms ``direction.N`` is an ``add`` at ``resid_post[N]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steerplug.errors import SteerplugError

ARCHITECTURE = "controlvector"
MAX_FILE_BYTES = 1 << 30
"""Control-vector files larger than this are refused before parsing."""


@dataclass(frozen=True)
class ControlVectorFile:
    """The content of a control-vector GGUF: llama.cpp layer index → direction (float32)."""

    model_hint: str
    directions: dict[int, torch.Tensor]

    @property
    def llama_cpp_loads(self) -> bool:
        """False when the file has a ``direction.0``, which llama.cpp rejects (repeng may write one)."""
        return 0 not in self.directions


def _gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise SteerplugError("GGUF needs the 'gguf' package: pip install 'steerplug[gguf]'") from None
    return gguf


def write_control_vector(path: str | Path, vector: ControlVectorFile) -> Path:
    """Write ``vector`` as a llama.cpp control-vector GGUF at ``path`` (directions in layer order)."""
    gguf = _gguf()
    if any(layer < 1 for layer in vector.directions):
        raise SteerplugError("llama.cpp never steers layer 0: a control vector has no direction.0")
    target = Path(path)
    writer = gguf.GGUFWriter(str(target), ARCHITECTURE)
    writer.add_string(f"{ARCHITECTURE}.model_hint", vector.model_hint)
    writer.add_uint32(f"{ARCHITECTURE}.layer_count", len(vector.directions))
    for layer in sorted(vector.directions):
        data = vector.directions[layer].detach().to("cpu", torch.float32).contiguous().numpy()
        writer.add_tensor(f"direction.{layer}", data)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except OSError as exc:
        raise SteerplugError(f"cannot write '{target}': {exc.strerror or exc}") from None
    finally:
        writer.close()
    return target


def read_control_vector(path: str | Path) -> ControlVectorFile:
    """Read a control-vector GGUF (llama.cpp's or repeng's); every problem is a one-line
    :class:`SteerplugError` naming the file."""
    gguf = _gguf()
    source = Path(path)
    if not source.is_file():
        raise SteerplugError(f"{source}: no such file")
    if source.stat().st_size > MAX_FILE_BYTES:
        raise SteerplugError(f"{source}: larger than {MAX_FILE_BYTES >> 20} MiB, not a control vector")
    try:
        reader = gguf.GGUFReader(str(source))
    except Exception as exc:  # gguf raises ValueError/struct errors on malformed files
        raise SteerplugError(f"{source}: not a readable GGUF file ({exc})") from None
    architecture = _string(reader, "general.architecture")
    if architecture != ARCHITECTURE:
        raise SteerplugError(f"{source}: general.architecture is {architecture!r}, not 'controlvector' "
                             "(this is not a control vector)")
    hint = _string(reader, f"{ARCHITECTURE}.model_hint") or ""
    return ControlVectorFile(hint, _directions(reader, source))


def _string(reader: object, key: str) -> str | None:
    field = reader.get_field(key)  # type: ignore[attr-defined]
    if field is None or not len(field.data):
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def _directions(reader: object, source: Path) -> dict[int, torch.Tensor]:
    directions: dict[int, torch.Tensor] = {}
    width = None
    for tensor in reader.tensors:  # type: ignore[attr-defined]
        prefix, _, index = tensor.name.partition(".")
        if prefix != "direction":
            continue
        if not index.isdigit():
            raise SteerplugError(f"{source}: tensor '{tensor.name}' is not named direction.N")
        data = np.asarray(tensor.data)
        if data.dtype != np.float32 or data.ndim != 1:
            raise SteerplugError(f"{source}: {tensor.name} must be a 1-D float32 tensor (llama.cpp rejects it)")
        if width is not None and data.shape[0] != width:
            raise SteerplugError(f"{source}: {tensor.name} has {data.shape[0]} values, other directions {width}")
        if not np.isfinite(data).all():
            raise SteerplugError(f"{source}: {tensor.name} contains NaN or infinite values")
        if int(index) in directions:
            raise SteerplugError(f"{source}: direction.{index} appears twice")
        width = data.shape[0]
        directions[int(index)] = torch.from_numpy(data.copy())
    if not directions:
        raise SteerplugError(f"{source}: no direction.N tensors (an empty control vector)")
    return directions
