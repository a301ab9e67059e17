"""Artifacts: safetensors files confined to the bundle, sha256-verified, finite; never pickle."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file

from steerplug.errors import Problem, RecipeError, shown
from steerplug.recipe.limits import MAX_PATH_CHARS, MAX_PATH_COMPONENT_BYTES
from steerplug.recipe.parse import NotRegularFile, irregular_kind, open_regular, parse_document, read_capped
from steerplug.recipe.safetensors_header import read_header

if TYPE_CHECKING:
    from steerplug.recipe.document import Artifact, RecipeBase

MAX_ARTIFACT_BYTES = 4 << 30
"""Default cap on one artifact file (4 GiB)."""
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz", ".joblib"})
_CHUNK = 1 << 20
_SUPPORTED = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

TensorTable = dict[str, dict[str, torch.Tensor]]
ConfigTable = dict[str, dict[str, Any]]
"""``artifact name → validated config`` (sparse autoencoders: see :mod:`steerplug.sae`)."""


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a regular file, streamed (a FIFO or device is refused, never read)."""
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def confined_path(root: Path, relative: str) -> Path:
    """``root/relative`` if it stays inside ``root`` and passes through no symlink; else ValueError."""
    if Path(relative).is_absolute() or "\\" in relative:
        raise ValueError("artifact paths must be relative to the recipe folder")
    check_path_lengths(relative)
    root = root.resolve()
    current = root
    for part in Path(relative).parts:
        if part in ("..", ""):
            raise ValueError("artifact paths may not contain '..'")
        current = current / part
        if current.is_symlink():
            raise ValueError(f"artifact path goes through a symlink ({current.name})")
    if not current.resolve().is_relative_to(root):
        raise ValueError("artifact path escapes the recipe folder")
    return current


def check_path_lengths(relative: str) -> None:
    """Refuse a path longer than :data:`MAX_PATH_CHARS` or with a component over
    :data:`MAX_PATH_COMPONENT_BYTES` UTF-8 bytes (ValueError), before the file system is asked."""
    if len(relative) > MAX_PATH_CHARS:
        raise ValueError(f"artifact path is longer than {MAX_PATH_CHARS} characters")
    for part in relative.split("/"):
        if len(part.encode("utf-8", "surrogatepass")) > MAX_PATH_COMPONENT_BYTES:
            raise ValueError(f"artifact path component {shown(part)} is longer than {MAX_PATH_COMPONENT_BYTES} bytes")


def load_artifact_tables(spec: RecipeBase, root: Path | None, source: str,
                         max_bytes: int = MAX_ARTIFACT_BYTES) -> tuple[TensorTable, ConfigTable]:
    """Load every artifact of ``spec`` from the bundle folder ``root`` (tensors, plus the validated config of
    every ``format: sae`` artifact); all problems are reported at once."""
    tables: TensorTable = {}
    configs: ConfigTable = {}
    problems: list[Problem] = []
    for name, artifact in spec.artifacts.items():
        try:
            if artifact.format == "sae":
                tables[name], configs[name] = _load_sae(artifact, root, max_bytes)
            else:
                tables[name] = _load_one(artifact, root, max_bytes)
        except ValueError as exc:
            hint = exc.args[1] if len(exc.args) > 1 else None
            problems.append(Problem(source, f"/artifacts/{name}/{_field_of(exc)}", str(exc.args[0]), hint))
        except NotRegularFile as exc:
            problems.append(Problem(source, f"/artifacts/{name}/path", f"artifact {exc}",
                                    "artifacts are regular files"))  # swapped in after the check above
        except OSError as exc:
            problems.append(Problem(source, f"/artifacts/{name}/path", f"cannot read artifact: {exc.strerror or exc}"))
    if problems:
        raise RecipeError(problems)
    return tables, configs


class _ShaError(ValueError):
    pass


def _field_of(exc: ValueError) -> str:
    return "sha256" if isinstance(exc, _ShaError) else "path"


def _bundle_root(root: Path | None) -> Path:
    if root is None:
        raise ValueError("this recipe has no folder, so it cannot reference files",
                         "load it from a file or pass base_dir=")
    return root


def _load_one(artifact: Artifact, root: Path | None, max_bytes: int) -> dict[str, torch.Tensor]:
    root = _bundle_root(root)
    suffix = Path(artifact.path).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise ValueError(f"'{artifact.path}' is a pickle-based format; steerplug never loads pickle",
                         "convert it to .safetensors")
    if suffix != ".safetensors":
        raise ValueError(f"'{artifact.path}' is not a .safetensors file")
    assert isinstance(artifact.sha256, str)  # the document model pins a single file with one digest
    path = _pinned_file(root, artifact.path, artifact.sha256, max_bytes)
    _check_header(path, artifact.path)
    return _checked_tensors(path, artifact.path)


def _load_sae(artifact: Artifact, root: Path | None, max_bytes: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A SAELens folder: ``cfg.json`` (size-capped, JSON only) and one safetensors file, both sha256-pinned."""
    from steerplug.sae import CFG_FILE, MAX_CFG_BYTES, check_sae

    root = _bundle_root(root)
    folder = confined_path(root, artifact.path)
    if not folder.is_dir():
        raise ValueError(f"sae artifact '{artifact.path}' is not a folder in {root}")
    digests = artifact.sha256 if isinstance(artifact.sha256, dict) else {}
    paths = {name: _pinned_file(root, f"{artifact.path.rstrip('/')}/{name}", digest,
                                MAX_CFG_BYTES if name == CFG_FILE else max_bytes)
             for name, digest in sorted(digests.items())}
    weights = next(path for name, path in paths.items() if name != CFG_FILE)
    _check_header(weights, weights.name)
    tensors = _checked_tensors(weights, weights.name)
    return tensors, check_sae(_json_object(paths[CFG_FILE], MAX_CFG_BYTES), tensors).to_dict()


def _pinned_file(root: Path, relative: str, digest: str, max_bytes: int) -> Path:
    path = confined_path(root, relative)
    if not path.exists():
        raise ValueError(f"artifact file '{relative}' not found in {root}")
    status = path.stat()
    kind = irregular_kind(status.st_mode)
    if kind is not None:
        raise ValueError(f"artifact '{relative}' is {kind}, not a regular file", "artifacts are regular files")
    if status.st_size > max_bytes:
        raise ValueError(f"artifact file '{relative}' is larger than the {max_bytes}-byte cap")
    actual = sha256_file(path)
    if actual != digest:
        raise _ShaError(f"sha256 mismatch for '{relative}': file has {actual}",
                        "the file changed since the recipe was written; re-extract or fix the checksum")
    return path


def _json_object(path: Path, max_bytes: int) -> Any:
    """A JSON config read with the recipe parser's rules (size cap, strict JSON: no NaN, no duplicates)."""
    try:
        return parse_document(read_capped(path, max_bytes), path.name, ".json")
    except RecipeError as exc:
        raise ValueError(f"'{path.name}': {exc.problems[0].message}") from None


def _check_header(path: Path, label: str) -> None:
    read_header(path, label)  # bounded, structure-checked, before safetensors reads the file


def _checked_tensors(path: Path, label: str) -> dict[str, torch.Tensor]:
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"cannot read '{label}': {exc}") from None
    for key, tensor in tensors.items():
        if not tensor.is_floating_point() or tensor.dtype not in _SUPPORTED:
            raise ValueError(f"tensor '{key}' in '{label}' is {tensor.dtype}, expected floating point")
        if tensor.numel() == 0:
            raise ValueError(f"tensor '{key}' in '{label}' is empty (shape {list(tensor.shape)})")
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"tensor '{key}' in '{label}' contains NaN or infinite values")
    return tensors
