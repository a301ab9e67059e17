"""Regenerate the tiny safetensors files of the recipe catalogue (deterministic: no random numbers).

Run from the repository root: ``python tests/recipes/make_artifacts.py``. The files are committed; recipes
that name them carry their sha256, so rerunning must give the same bytes (the catalogue tests fail if not).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).parent
WIDTH = 32
"""hidden_size of the ``llama-tiny`` model the catalogue attaches to."""


def _ramp(offset: float, rows: int = 0) -> torch.Tensor:
    base = torch.linspace(-1.0, 1.0, WIDTH) + offset
    if not rows:
        return base.contiguous()
    return torch.stack([base.roll(i) for i in range(rows)]).contiguous()


def vectors() -> dict[str, torch.Tensor]:
    """The bundle's tensors: one vector, one per layer (``resid.<layer>``), and two directions."""
    table = {"spanish": _ramp(0.25), "directions": _ramp(0.0, rows=2), "probe": _ramp(-0.5)}
    table.update({f"resid.{layer}": _ramp(0.1 * layer) for layer in range(3)})
    return table


def main() -> None:
    valid = vectors()
    invalid = HERE / "invalid"
    save_file(valid, str(HERE / "valid" / "bundle" / "vectors.safetensors"))
    for folder in ("artifact-sha-mismatch", "attach-artifact-tensor-missing"):
        save_file(valid, str(invalid / folder / "vectors.safetensors"))
    save_file({"spanish": _ramp(0.25)}, str(invalid / "artifact-symlink" / "real.safetensors"))
    save_file({"spanish": _ramp(0.25)}, str(invalid / "artifact-symlink-folder" / "real" / "vectors.safetensors"))
    nan = _ramp(0.0)
    nan[3] = float("nan")
    save_file({"spanish": nan}, str(invalid / "artifact-nan" / "nan.safetensors"))
    save_file({"ids": torch.arange(WIDTH)}, str(invalid / "artifact-integer-tensor" / "ids.safetensors"))
    (invalid / "artifact-not-safetensors" / "fake.safetensors").write_bytes(
        b"this is a text file with a .safetensors name, not tensors\n"
    )
    hardening(invalid)


def _raw_safetensors(path: Path, header: bytes, data: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


def hardening(invalid: Path) -> None:
    """The bundles of the hardening cases (issue 14): empty and float8 tensors, deep JSON in side files."""
    save_file({"basis": torch.zeros(0, WIDTH)}, str(invalid / "artifact-zero-rows" / "empty.safetensors"))
    save_file({"v": _ramp(0.0).to(torch.float8_e4m3fn)}, str(invalid / "artifact-float8" / "f8.safetensors"))
    _raw_safetensors(invalid / "artifact-header-deep" / "deep.safetensors", b"[" * 200 + b"]" * 200)
    save_file({"resid_post.1": torch.zeros(0, WIDTH)}, str(invalid / "patch-recording-empty" / "rec.safetensors"))
    sae = invalid / "artifact-sae-cfg-deep" / "sae"
    sae.mkdir(parents=True, exist_ok=True)
    (sae / "cfg.json").write_text(json.dumps({"d_in": WIDTH, "d_sae": 4, "extra": _nested(100)}))
    save_file({"W_enc": torch.ones(WIDTH, 4), "b_enc": torch.zeros(4), "W_dec": torch.ones(4, WIDTH),
               "b_dec": torch.zeros(WIDTH)}, str(sae / "sae_weights.safetensors"))


def _nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


if __name__ == "__main__":
    main()
