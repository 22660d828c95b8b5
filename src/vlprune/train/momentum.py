"""Momentum encoder + feature queue for ITC (MoCo; ALBEF section 3): the queue holds momentum-encoder
embeddings of earlier batches, giving each step many more negatives than the batch holds.

``MomentumQueue`` wraps the trained model so the trainer checkpoints the momentum weights and the queue with
it (a resumed run continues exactly); ``vlprune.save`` is called on ``wrapper.model``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from vlprune.distributed import all_gather_with_grad
from vlprune.models.contrastive import info_nce


class MomentumQueue(nn.Module):
    def __init__(self, model: nn.Module, queue_size: int = 4096, momentum: float = 0.995):
        super().__init__()
        if queue_size < 1:
            raise ValueError(f"queue_size={queue_size}: expected a positive number of queued embeddings")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum={momentum}: expected a value in [0, 1)")
        self.model = model
        self.momentum_model = copy.deepcopy(model).requires_grad_(False)
        self.momentum = momentum
        dim = model.config.embed_dim
        self.register_buffer("image_queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("text_queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def momentum_embeddings(self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """EMA-update the momentum encoder, then embed the batch with it (normalised, gathered over ranks)."""
        for online, ema in zip(self.model.parameters(), self.momentum_model.parameters()):
            ema.mul_(self.momentum).add_(online.detach(), alpha=1.0 - self.momentum)
        m = self.momentum_model
        image = m.image_embedding(m.visual(pixels), normalize=True)
        text = m.text_embedding(m.text(ids, mask), ids, mask, normalize=True)
        return all_gather_with_grad(image), all_gather_with_grad(text)

    @torch.no_grad()
    def enqueue(self, image: torch.Tensor, text: torch.Tensor) -> None:
        size, n = self.image_queue.shape[0], image.shape[0]
        if size % n:
            raise ValueError(f"queue_size={size} must be a multiple of the global batch size {n}")
        ptr = int(self.queue_ptr)
        self.image_queue[ptr:ptr + n] = image
        self.text_queue[ptr:ptr + n] = text
        self.queue_ptr.fill_((ptr + n) % size)


def queued_itc_loss(wrapper: MomentumQueue, image_emb: torch.Tensor, text_emb: torch.Tensor,
                    logit_scale: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """InfoNCE of online embeddings against [momentum embeddings of the global batch; queue]."""
    image_m, text_m = wrapper.momentum_embeddings(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    loss = info_nce(image_emb, text_emb, torch.cat([image_m, wrapper.image_queue]),
                    torch.cat([text_m, wrapper.text_queue]), logit_scale)
    wrapper.enqueue(image_m, text_m)
    return loss
