"""Losses for learned steering (all means, so values compare across batch sizes).

* ``preference`` (BiPO/RePS-style): ``-log σ(β [(log p_s(y⁺) - log p_0(y⁺)) - (log p_s(y⁻) - log p_0(y⁻))])``
  with ``p_s`` the steered and ``p_0`` the unsteered model, log-probabilities averaged over each
  completion's tokens: the steered model must raise the positive completion over the negative one;
* ``likelihood`` (ReFT-style): the mean negative log-likelihood of positive completions, steered;
* ``distribution`` (LinEAS-style): per layer from the first steered one, the squared 1-D Wasserstein-2
  distance between each coordinate of the steered activations on the negative (source) texts and of the
  unsteered activations on the positive (target) texts, at the steered positions, divided by the target's
  mean variance so layers weigh alike;
* ``fluency``: the mean next-token ``KL(p_s || p_0)`` over neutral text (the guard rail).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

OBJECTIVES = ("preference", "likelihood", "distribution")


def completion_logprob(logits: torch.Tensor, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[B]``: mean log-probability of the tokens scored at ``targets`` (``[B, T]`` positions whose next
    token is a completion token)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, input_ids[:, 1:].to(logp.device).unsqueeze(-1)).squeeze(-1)
    weights = targets[:, :-1].to(device=picked.device, dtype=picked.dtype)
    return (picked * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)


def preference_loss(steered_pos: torch.Tensor, steered_neg: torch.Tensor, reference_pos: torch.Tensor,
                    reference_neg: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO-form loss with the unsteered model as reference (all inputs ``[B]`` mean log-probs)."""
    margin = (steered_pos - reference_pos) - (steered_neg - reference_neg)
    return -F.logsigmoid(beta * margin).mean()


def likelihood_loss(steered_pos: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the positive completions under the steered model."""
    return -steered_pos.mean()


def wasserstein_1d(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over coordinates of the squared W2 distance between ``source [N, W]`` and ``target [M, W]``
    empirical distributions, divided by the target's mean variance (quantiles matched on a common grid)."""
    count = min(int(source.shape[0]), int(target.shape[0]))
    grid_s = torch.linspace(0, source.shape[0] - 1, count, device=source.device).round().long()
    grid_t = torch.linspace(0, target.shape[0] - 1, count, device=target.device).round().long()
    quantiles_s = torch.sort(source.float(), dim=0).values[grid_s]
    quantiles_t = torch.sort(target.float(), dim=0).values[grid_t]
    scale = target.float().var(dim=0).mean().clamp_min(1e-8) if target.shape[0] > 1 else source.new_tensor(1.0)
    return ((quantiles_s - quantiles_t) ** 2).mean() / scale


def distribution_loss(source: list[torch.Tensor], target: list[torch.Tensor]) -> torch.Tensor:
    """Mean of :func:`wasserstein_1d` over layers (activations already gathered at the steered positions)."""
    return torch.stack([wasserstein_1d(s, t) for s, t in zip(source, target, strict=True)]).mean()


def fluency_kl(steered_logits: torch.Tensor, reference_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token ``KL(p_s || p_0)`` over the ``[B, T]`` positions in ``targets``."""
    log_s = torch.log_softmax(steered_logits.float(), dim=-1)
    log_0 = torch.log_softmax(reference_logits.float(), dim=-1)
    kl = (log_s.exp() * (log_s - log_0)).sum(-1)
    weights = targets.to(device=kl.device, dtype=kl.dtype)
    return (kl * weights).sum() / weights.sum().clamp_min(1.0)
