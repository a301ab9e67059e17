"""Built-in vector sources ``unembedding`` and ``embedding``: vectors read from the model's own weights.

``{source: unembedding, positive: [" yes"]}`` is the unembedding (LM head) row of a token;
``{source: unembedding, positive: [...], negative: [...]}`` is the mean of the positive rows minus the
mean of the negative rows (a difference of token sets). ``embedding`` does the same with the input
embedding matrix (the raw rows: models that rescale embeddings in ``forward``, such as Gemma, are not
rescaled). Both live in the residual-stream space: their width is the hidden size.

Tokens are integers (token ids, always accepted) or strings, which need a tokenizer (see
:mod:`steerplug.tokenizers`) and must encode to exactly one token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import torch
from pydantic import Field

from steerplug.errors import RecipeError
from steerplug.hookspecs import hookimpl
from steerplug.ops.base import OpTarget
from steerplug.recipe.spec import StrictModel
from steerplug.recipe.vectors import VectorSource
from steerplug.tokenizers import tokenizer_for

Token = Annotated[int, Field(ge=0)] | str
TokenList = Annotated[list[Token], Field(min_length=1)]


class TokenRowsSpec(StrictModel):
    """Rows of a token matrix: ``mean(rows(positive)) - mean(rows(negative))``."""

    positive: TokenList
    """Tokens whose rows are averaged: token ids, or single-token strings (need a tokenizer)."""
    negative: TokenList | None = None
    """Tokens whose mean row is subtracted; omitted means nothing is subtracted."""


class UnembeddingSpec(TokenRowsSpec):
    """The unembedding (output embedding) row of a token, or a difference of token sets."""

    source: Literal["unembedding"]


class EmbeddingSpec(TokenRowsSpec):
    """The input embedding row of a token, or a difference of token sets."""

    source: Literal["embedding"]


def _token_ids(tokens: list[int | str], target: OpTarget, name: str) -> list[int]:
    ids: list[int] = []
    tokenizer = None
    for token in tokens:
        if isinstance(token, int):
            ids.append(token)
            continue
        tokenizer = tokenizer or tokenizer_for(target.model)
        if tokenizer is None:
            raise RecipeError.single(target.source, target.pointer, f"vector source '{name}': the token string "
                                     f"{token!r} needs a tokenizer, and none is known for this model",
                                     "give token ids, or call steerplug.use_tokenizer(model, tokenizer)")
        encoded = list(tokenizer.encode(token, add_special_tokens=False))
        if len(encoded) != 1:
            raise RecipeError.single(target.source, target.pointer, f"vector source '{name}': {token!r} encodes "
                                     f"to {len(encoded)} tokens {encoded}, not one",
                                     "give a single-token string or its token id")
        ids.append(int(encoded[0]))
    return ids


def token_rows_vector(spec: TokenRowsSpec, matrix: torch.Tensor, target: OpTarget, name: str) -> torch.Tensor:
    """``mean(matrix[positive]) - mean(matrix[negative])`` in float32, ids checked against the vocabulary."""
    vocabulary = int(matrix.shape[0])
    groups = [spec.positive] + ([spec.negative] if spec.negative is not None else [])
    means = []
    for tokens in groups:
        ids = _token_ids(list(tokens), target, name)
        outside = [i for i in ids if i >= vocabulary]
        if outside:
            raise RecipeError.single(target.source, target.pointer, f"vector source '{name}': token id "
                                     f"{outside[0]} is outside the vocabulary of {vocabulary} tokens")
        means.append(matrix.detach()[torch.tensor(ids, device=matrix.device)].to(torch.float32).mean(dim=0))
    return means[0] if len(means) == 1 else means[0] - means[1]


def _matrix(module: torch.nn.Module | None, target: OpTarget, name: str, what: str) -> torch.Tensor:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise RecipeError.single(target.source, target.pointer, f"vector source '{name}': this "
                                 f"{target.info.model_type} model has no {what} matrix",
                                 "load the model with its language-model head" if name == "unembedding" else None)
    return weight


class TokenMatrixSource:
    """Rows of one of the model's ``[vocab, hidden]`` token matrices, named by ``getter``."""

    def __init__(self, name: str, spec_model: type[TokenRowsSpec], getter: str, what: str):
        self.name = name
        self.spec_model = spec_model
        self._getter = getter
        self._what = what

    def resolve(self, spec: TokenRowsSpec, target: OpTarget) -> torch.Tensor:
        """The mean row of ``spec.positive`` minus the mean row of ``spec.negative``."""
        getter = getattr(target.model, self._getter, None)
        module = getter() if callable(getter) else None
        return token_rows_vector(spec, _matrix(module, target, self.name, self._what), target, self.name)


UNEMBEDDING = TokenMatrixSource("unembedding", UnembeddingSpec, "get_output_embeddings", "unembedding (LM head)")
EMBEDDING = TokenMatrixSource("embedding", EmbeddingSpec, "get_input_embeddings", "input embedding")


@hookimpl(trylast=True)
def steerplug_register_vector_sources(register: Callable[[VectorSource], None]) -> None:
    """Register ``unembedding`` and ``embedding``."""
    register(UNEMBEDDING)
    register(EMBEDDING)
