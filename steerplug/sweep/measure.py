"""Generate with (or without) steering and measure the fluency cost exactly.

For each batch the steered next-token logits are taken from ``generate()`` itself (so positions, KV cache
and schedules are those of real use) and compared with one unsteered forward pass over the same tokens:

* perplexity: ``exp`` of the mean negative log-likelihood of the generated tokens under the *unsteered*
  model (pooled over tokens);
* KL: mean over generated tokens of ``KL(p_steered || p_unsteered)`` of the next-token distributions.

Tokens after a row's end-of-sequence token are ignored. With ``evidence`` (a concept probe), the same
unsteered forward pass also reads each text at the probe's site (see :mod:`steerplug.sweep.evidence`).
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from steerplug.generation import encode_left_padded, sampling_kwargs, seeded
from steerplug.sweep.evidence import ProbeEvidence, reading


@dataclass
class Measured:
    """Texts generated in one setting and their fluency totals."""

    texts: list[str] = field(default_factory=list)
    probe: list[float] = field(default_factory=list)
    """Concept-probe probability of each text, read in the unsteered model (empty without evidence)."""
    nll_sum: float = 0.0
    kl_sum: float = 0.0
    tokens: int = 0

    @property
    def perplexity(self) -> float:
        """``exp(mean NLL)`` of generated tokens under the unsteered model."""
        return math.exp(self.nll_sum / self.tokens) if self.tokens else math.nan

    @property
    def kl(self) -> float:
        """Mean next-token ``KL(steered || unsteered)`` in nats."""
        return self.kl_sum / self.tokens if self.tokens else math.nan


@dataclass(frozen=True)
class GenerationSettings:
    """How texts are generated: ``n`` texts cycling through ``prompts``, seeded sampling or greedy."""

    prompts: tuple[str, ...] = ("",)
    n: int = 64
    max_new_tokens: int = 40
    greedy: bool = False
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = 64

    def batches(self) -> Iterator[list[str]]:
        """Prompt batches covering ``n`` generations."""
        for start in range(0, self.n, self.batch_size):
            yield [self.prompts[i % len(self.prompts)] for i in range(start, min(self.n, start + self.batch_size))]


@torch.no_grad()
def generate_and_measure(model: Any, tokenizer: Any, settings: GenerationSettings,
                         unsteered: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
                         on_batch: Callable[[int], None] | None = None,
                         evidence: ProbeEvidence | None = None) -> Measured:
    """Generate under whatever steering is attached; ``unsteered()`` is a context in which the model runs
    without it (None: nothing is attached, KL is 0 by construction but still measured). ``evidence`` (bound
    to the model) also scores every text with the concept probe in that unsteered pass."""
    result = Measured()
    device = next(model.parameters()).device
    off = unsteered or contextlib.nullcontext
    with seeded(settings.seed, device):
        for prompts in settings.batches():
            enc = encode_left_padded(tokenizer, prompts, device)
            out = model.generate(**enc, max_new_tokens=settings.max_new_tokens, output_logits=True,
                                 return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id,
                                 **sampling_kwargs(settings.greedy, settings.temperature))
            steered = torch.stack(out.logits, dim=1).float()
            store: dict[str, Any] = {}
            read = reading(model, evidence, store) if evidence is not None else contextlib.nullcontext()
            with off(), read:
                reference = _unsteered_logits(model, out.sequences, enc["attention_mask"], steered.shape[1])
            if evidence is not None:
                mask = text_mask(enc["attention_mask"], out.sequences[:, -steered.shape[1]:], tokenizer.eos_token_id)
                result.probe += evidence.read(store["x"], mask).tolist()
            _accumulate(result, out.sequences[:, -steered.shape[1]:], steered, reference, tokenizer.eos_token_id)
            result.texts += tokenizer.batch_decode(out.sequences, skip_special_tokens=True)
            if on_batch is not None:
                on_batch(len(prompts))
    return result


def _unsteered_logits(model: Any, sequences: torch.Tensor, prompt_mask: torch.Tensor, steps: int) -> torch.Tensor:
    """Logits predicting the last ``steps`` tokens of ``sequences``, from one forward pass."""
    mask = torch.cat([prompt_mask, prompt_mask.new_ones(sequences.shape[0], sequences.shape[1] - prompt_mask.shape[1])],
                     dim=1)
    inputs: dict[str, Any] = {"input_ids": sequences, "attention_mask": mask, "use_cache": False}
    if "position_ids" in inspect.signature(model.forward).parameters:
        inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate() numbers left-padded rows
    logits = model(**inputs).logits
    return logits[:, -steps - 1:-1].float()


def text_mask(prompt_mask: torch.Tensor, generated: torch.Tensor, eos: int | None) -> torch.Tensor:
    """``[B, T]`` mask of each text's real tokens: the prompt without padding, then the generated tokens
    before the first end-of-sequence token (examples were extracted without one)."""
    kept = torch.ones_like(generated, dtype=torch.bool) if eos is None else (generated == eos).long().cumsum(1) == 0
    return torch.cat([prompt_mask.bool(), kept], dim=1)


def _accumulate(result: Measured, generated: torch.Tensor, steered: torch.Tensor, reference: torch.Tensor,
                eos: int | None) -> None:
    valid = torch.ones_like(generated, dtype=torch.bool)
    if eos is not None:
        ended = (generated == eos).long().cumsum(dim=1)
        valid = (ended - (generated == eos).long()) == 0  # up to and including the first eos
    log_s = torch.log_softmax(steered, dim=-1)
    log_u = torch.log_softmax(reference, dim=-1)
    kl = (log_s.exp() * (log_s - log_u)).sum(-1).clamp(min=0.0)  # >= 0 up to rounding
    nll = -log_u.gather(-1, generated.unsqueeze(-1)).squeeze(-1)
    result.kl_sum += float(kl[valid].sum())
    result.nll_sum += float(nll[valid].sum())
    result.tokens += int(valid.sum())


class switched_off:
    """Context in which every intervention of a handle is switched off in place (hooks stay attached,
    compiled graphs stay valid); the previous enabled states are restored on exit."""

    def __init__(self, handle: Any):
        self.handle = handle
        self.saved: list[torch.Tensor] = []

    def __enter__(self) -> None:
        self.saved = [entry.enabled.clone() for entry in self.handle.entries]
        for entry in self.handle.entries:
            entry.enabled.fill_(False)

    def __exit__(self, *exc: object) -> None:
        for entry, state in zip(self.handle.entries, self.saved, strict=True):
            entry.enabled.copy_(state)
