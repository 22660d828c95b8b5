"""SmartTrim's extra losses: the cost loss (eqs. 9-10) and self-distillation (eq. 11)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def keep_ratio(keep: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """β of one module (eq. 10): mean keep mask over its tokens or heads, ``valid`` (bool, same shape)
    selecting which entries count (e.g. not padding, not [CLS])."""
    if valid is None:
        return keep.mean()
    valid = valid.to(keep.dtype)
    return (keep * valid).sum() / valid.sum().clamp_min(1.0)


def cost_loss(ratios: dict[str, torch.Tensor], targets: dict[str, float]) -> torch.Tensor:
    """``L_cost = mean_p (β_p − γ_p)²`` over the trimmed modules ``p`` (eq. 9); ``ratios`` and ``targets`` are
    keyed alike."""
    if set(ratios) != set(targets):
        raise ValueError(f"cost_loss: modules {sorted(ratios)} have targets for {sorted(targets)}")
    if not ratios:
        raise ValueError("cost_loss: no trimmed modules")
    return torch.stack([(ratios[p] - targets[p]) ** 2 for p in sorted(ratios)]).mean()


def self_distillation(trimmed_logits: torch.Tensor, full_logits: torch.Tensor,
                      full_task_loss: torch.Tensor) -> torch.Tensor:
    """``L_SD = L_task(f(x, ∅), y) + KL(f(x, P) ‖ f(x, ∅))`` (eq. 11), the KL taken over the predicted class
    distributions, written as in the paper (trimmed first); the full network's prediction is the target and is
    not pushed towards the trimmed one (detached)."""
    log_p = trimmed_logits.log_softmax(dim=-1)
    log_q = full_logits.detach().log_softmax(dim=-1)
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")
    return full_task_loss + kl
