"""Sparse autoencoders in the SAELens layout: ``cfg.json`` + ``*.safetensors`` with ``W_enc, b_enc, W_dec, b_dec``.

A recipe references one as an artifact with ``format: sae`` (a folder, every file pinned by sha256). The
loader (:func:`check_sae`) validates the config and the tensor shapes once, at recipe load; operations then
build a :class:`SparseAutoencoder` on the site's device and dtype. Encoding follows SAELens::

    x_in = x - b_dec if apply_b_dec_to_input else x
    pre  = x_in @ W_enc + b_enc
    f    = relu(pre)                          # relu (SAELens "standard")
         | relu(top-k values of pre), 0 else  # topk
         | relu(pre) * (pre > threshold)      # jumprelu (threshold tensor in the weights file)
    x_hat = f @ W_dec + b_dec
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from steerplug.recipe.limits import MAX_SIDE_FILE_BYTES

MAX_CFG_BYTES = MAX_SIDE_FILE_BYTES
"""Cap on ``cfg.json`` (SAELens configs are a few hundred bytes)."""
CFG_FILE = "cfg.json"
ARCHITECTURES = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu"}
NO_NORMALIZATION = (None, "none")

Activation = Literal["relu", "topk", "jumprelu"]


@dataclass(frozen=True)
class SaeConfig:
    """The facts of ``cfg.json`` that encoding and decoding depend on."""

    d_in: int
    d_sae: int
    activation: Activation
    k: int | None
    apply_b_dec_to_input: bool

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-compatible dict (what :attr:`steerplug.recipe.load.Recipe.configs` stores)."""
        return {"d_in": self.d_in, "d_sae": self.d_sae, "activation": self.activation, "k": self.k,
                "apply_b_dec_to_input": self.apply_b_dec_to_input}


def _int(cfg: dict[str, Any], key: str) -> int:
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"cfg.json: '{key}' must be a positive integer, got {value!r}")
    return value


def _activation(cfg: dict[str, Any]) -> Activation:
    name = cfg.get("activation_fn", cfg.get("activation_fn_str"))
    if name is None:
        name = ARCHITECTURES.get(str(cfg.get("architecture", "standard")), cfg.get("architecture"))
    if name not in ("relu", "topk", "jumprelu"):
        raise ValueError(f"cfg.json: unsupported SAE activation {name!r}",
                         "steerplug supports relu (standard), topk and jumprelu SAEs")
    return name  # type: ignore[return-value]


def parse_sae_config(cfg: Any) -> SaeConfig:
    """Validate a SAELens ``cfg.json`` object; ValueError ``(message, hint)`` on anything unsupported."""
    if not isinstance(cfg, dict):
        raise ValueError("cfg.json must hold a JSON object")
    activation = _activation(cfg)
    d_in, d_sae = _int(cfg, "d_in"), _int(cfg, "d_sae")
    k = None
    if activation == "topk":
        kwargs = cfg.get("activation_fn_kwargs") or {}
        k = kwargs.get("k", cfg.get("k")) if isinstance(kwargs, dict) else cfg.get("k")
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= d_sae:
            raise ValueError(f"cfg.json: a topk SAE needs an integer k in 1..{d_sae}, got {k!r}")
    if cfg.get("normalize_activations") not in NO_NORMALIZATION:
        raise ValueError(f"cfg.json: normalize_activations={cfg['normalize_activations']!r} is not supported",
                         "fold the normalisation into W_enc/W_dec and set it to 'none'")
    apply_b_dec = cfg.get("apply_b_dec_to_input", True)
    if not isinstance(apply_b_dec, bool):
        raise ValueError("cfg.json: 'apply_b_dec_to_input' must be true or false")
    return SaeConfig(d_in, d_sae, activation, k, apply_b_dec)


def check_sae(cfg: Any, tensors: dict[str, torch.Tensor]) -> SaeConfig:
    """Validate the config and that the weights have the shapes it announces."""
    config = parse_sae_config(cfg)
    shapes = {"W_enc": (config.d_in, config.d_sae), "b_enc": (config.d_sae,),
              "W_dec": (config.d_sae, config.d_in), "b_dec": (config.d_in,)}
    if config.activation == "jumprelu":
        shapes["threshold"] = (config.d_sae,)
    for name, shape in shapes.items():
        if name not in tensors:
            raise ValueError(f"the SAE weights have no tensor '{name}'", f"SAELens layout: {', '.join(shapes)}")
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"SAE tensor '{name}' has shape {list(tensors[name].shape)}, cfg.json implies "
                             f"{list(shape)}")
    return config


class SparseAutoencoder:
    """An SAE's tensors on one device and dtype, with SAELens encoding and decoding.

    With ``latents``, only those latents are kept: :meth:`encode` returns ``f[..., latents]`` and
    :meth:`decode` reads their decoder rows (a topk SAE still keeps every encoder column, since rank decides
    membership). Built at attach time; ``encode``/``decode`` are hook-safe (no host sync, no ``.to()``).
    """

    def __init__(self, config: SaeConfig, tensors: dict[str, torch.Tensor], device: torch.device,
                 dtype: torch.dtype, latents: list[int] | None = None):
        self.config = config
        rows = torch.arange(config.d_sae) if latents is None else torch.tensor(latents, dtype=torch.long)
        columns = torch.arange(config.d_sae) if config.activation == "topk" else rows
        self.W_enc = tensors["W_enc"][:, columns].to(device=device, dtype=dtype)
        self.b_enc = tensors["b_enc"][columns].to(device=device, dtype=dtype)
        self.W_dec = tensors["W_dec"][rows].to(device=device, dtype=dtype)
        self.b_dec = tensors["b_dec"].to(device=device, dtype=dtype)
        threshold = tensors.get("threshold")
        self.threshold = None if threshold is None else threshold[columns].to(device=device, dtype=dtype)
        self.kept = None if latents is None or config.activation != "topk" else rows.to(device)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - b_dec if apply_b_dec_to_input else x) @ W_enc + b_enc`` over the encoder columns kept."""
        x_in = x - self.b_dec if self.config.apply_b_dec_to_input else x
        return x_in @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations ``f`` of the kept latents."""
        pre = self.pre_activation(x)
        if self.config.activation == "topk":
            top = torch.topk(pre, int(self.config.k or 1), dim=-1)
            f = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
            return f if self.kept is None else f[..., self.kept]
        if self.config.activation == "relu":
            return torch.relu(pre)
        assert self.threshold is not None
        return torch.relu(pre) * (pre > self.threshold)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """``f @ W_dec + b_dec`` over the kept latents."""
        return f @ self.W_dec + self.b_dec


def sae_for(recipe: Any, artifact: str) -> tuple[SaeConfig, dict[str, torch.Tensor]] | None:
    """The config and tensors of the ``format: sae`` artifact ``artifact`` of ``recipe``, or None."""
    raw = getattr(recipe, "configs", {}).get(artifact)
    tensors = getattr(recipe, "tensors", {}).get(artifact)
    if raw is None or tensors is None:
        return None
    return SaeConfig(**raw), tensors
