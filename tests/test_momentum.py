"""Momentum encoder + queue for ITC: EMA update, ring buffer, and the loss on a hand-derived case."""

import math

import pytest
import torch

from vlprune.models.io import build_model
from vlprune.train.momentum import MomentumQueue, queued_itc_loss
from vlprune.train.objectives import itc_loss


def _batch(tokenizer, n=4, size=32):
    torch.manual_seed(1)
    ids, mask = tokenizer([f"a big red circle at top left and a small {c} square" for c in
                           ("red", "blue", "green", "white")][:n])
    return {"pixel_values": torch.randn(n, 3, size, size), "input_ids": ids, "attention_mask": mask}


def test_momentum_update_is_the_ema_of_the_online_weights(clip_config, tokenizer):
    model = build_model(clip_config)
    wrapper = MomentumQueue(model, queue_size=8, momentum=0.9)
    ema = next(wrapper.momentum_model.parameters())
    online = next(model.parameters())
    with torch.no_grad():
        online.add_(1.0)
    expected = 0.9 * ema.detach().clone() + 0.1 * online.detach()
    batch = _batch(tokenizer)
    wrapper.momentum_embeddings(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(ema, expected, atol=1e-7)
    assert not ema.requires_grad


def test_queue_is_a_ring_and_needs_a_multiple_of_the_batch(clip_config):
    wrapper = MomentumQueue(build_model(clip_config), queue_size=6, momentum=0.5)
    dim = clip_config.embed_dim
    for step in range(4):
        wrapper.enqueue(torch.full((2, dim), float(step)), torch.full((2, dim), -float(step)))
    # slots 0-1 hold step 3 (wrapped around), slots 2-3 step 1, slots 4-5 step 2
    assert wrapper.image_queue[:, 0].tolist() == [3.0, 3.0, 1.0, 1.0, 2.0, 2.0]
    assert int(wrapper.queue_ptr) == 2
    with pytest.raises(ValueError, match="multiple of the global batch"):
        wrapper.enqueue(torch.zeros(4, dim), torch.zeros(4, dim))
    with pytest.raises(ValueError, match="queue_size"):
        MomentumQueue(build_model(clip_config), queue_size=0)
    with pytest.raises(ValueError, match="momentum"):
        MomentumQueue(build_model(clip_config), queue_size=4, momentum=1.0)


def test_queued_loss_with_the_batch_queued_twice_adds_log2(clip_config, tokenizer):
    """momentum=0 makes the momentum encoder the online one; with the queue holding this very batch, every
    row's logits list its positive twice and each negative twice: CE = in-batch CE + log 2."""
    model = build_model(clip_config).eval()
    wrapper = MomentumQueue(model, queue_size=4, momentum=0.0)
    batch = _batch(tokenizer)
    with torch.no_grad():
        image = model.encode_image(batch["pixel_values"], normalize=True)
        text = model.encode_text(batch["input_ids"], batch["attention_mask"], normalize=True)
        queued_itc_loss(wrapper, image, text, model.logit_scale, batch)  # fills the queue with this batch
        second = queued_itc_loss(wrapper, image, text, model.logit_scale, batch)
        in_batch = itc_loss(image, text, model.logit_scale)
    assert second.item() == pytest.approx(in_batch.item() + math.log(2), abs=1e-5)
