"""Zero-shot classification: prompt-ensembled text classifiers and accuracy metrics.

Ties count against the model: a sample's rank is the number of *other* classes whose logit is ``>=`` the true
class's logit, and top-k is a hit iff that rank is ``< k`` (so constant logits never score as correct).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def zeroshot_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``acc1``, ``acc5`` (top-min(5, C)) and ``mean_per_class_recall`` (top-1 recall averaged over the classes
    present in ``labels``) for (N, C) logits and (N,) integer labels."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be 2-D (N, C), got shape {tuple(logits.shape)}")
    labels = torch.as_tensor(labels, device=logits.device).flatten().long()
    n, n_classes = logits.shape
    if labels.numel() != n:
        raise ValueError(f"logits have {n} rows but labels have {labels.numel()} entries")
    if n == 0 or n_classes == 0:
        raise ValueError(f"logits are empty: {n} samples x {n_classes} classes")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{labels.min()}, {labels.max()}]")
    if torch.isnan(logits).any():
        raise ValueError("logits contain NaN")
    true_logit = logits.gather(1, labels[:, None])
    rank = (logits >= true_logit).sum(dim=1) - 1
    top1 = (rank < 1).double()
    counts = torch.bincount(labels, minlength=n_classes)
    hits = torch.bincount(labels, weights=top1, minlength=n_classes)
    present = counts > 0
    per_class = hits[present] / counts[present]
    return {
        "acc1": top1.mean().item(),
        "acc5": (rank < min(5, n_classes)).double().mean().item(),
        "mean_per_class_recall": per_class.mean().item(),
    }


@torch.no_grad()
def zeroshot_classifier(encode_text: Callable[[list[str]], torch.Tensor], classnames: Sequence[str],
                        templates: Sequence[str]) -> torch.Tensor:
    """(C, D) classifier: per class, the re-normalised mean of the L2-normalised embeddings of
    ``template.format(classname)`` over all templates."""
    if not classnames or not templates:
        raise ValueError(f"need at least one class and one template, got {len(classnames)} and {len(templates)}")
    weights = []
    for name in classnames:
        embeddings = encode_text([template.format(name) for template in templates])
        if embeddings.dim() != 2 or embeddings.shape[0] != len(templates):
            raise ValueError(f"encode_text must return ({len(templates)}, D) for {len(templates)} prompts, "
                             f"got shape {tuple(embeddings.shape)}")
        weights.append(F.normalize(F.normalize(embeddings.float(), dim=-1).mean(dim=0), dim=-1))
    return torch.stack(weights)
