"""Image-text contrastive (ITC) losses: in-batch over all ranks, and the shared InfoNCE core; ITC-hard negatives
for image-text matching (ALBEF)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlprune.distributed import all_gather_with_grad, rank


def info_nce(image_emb: torch.Tensor, text_emb: torch.Tensor, image_keys: torch.Tensor, text_keys: torch.Tensor,
             logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP eq.): this rank's images against ``text_keys`` and texts against ``image_keys``;
    the positive of local row i is key row ``rank * local_batch + i``."""
    offset = rank() * image_emb.shape[0]
    labels = torch.arange(offset, offset + image_emb.shape[0], device=image_emb.device)
    scale = logit_scale.exp().clamp(max=100.0)
    per_image = F.cross_entropy(scale * image_emb @ text_keys.T, labels)
    per_text = F.cross_entropy(scale * text_emb @ image_keys.T, labels)
    return (per_image + per_text) / 2


def itc_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """InfoNCE over the global batch. Embeddings are gathered from every rank (with gradient), so the loss
    equals the single-process loss on the same global batch."""
    return info_nce(image_emb, text_emb, all_gather_with_grad(image_emb), all_gather_with_grad(text_emb),
                    logit_scale)


def sample_hard_negatives(similarity: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For each row, one column index != the row's own, drawn with probability softmax(similarity)."""
    if similarity.shape[0] < 2 or similarity.shape[1] < 2:
        raise ValueError(f"hard negatives need at least 2 pairs per micro-batch, got a similarity of shape "
                         f"{tuple(similarity.shape)}; raise batch_size or lower grad_accum / the number of ranks")
    weights = similarity.detach().float().softmax(dim=1)
    weights.fill_diagonal_(0.0)
    weights = weights + 1e-9 * (1 - torch.eye(len(weights), device=weights.device))
    return torch.multinomial(weights.cpu(), 1, generator=generator).squeeze(1).to(similarity.device)
