"""SmartTrim's training objective (eq. 12): ``L = L_task + λ_SD·L_SD + λ_cost·L_cost`` on VQA or ITM.

The trimmed network ``f(x, P)`` runs with soft Gumbel-sigmoid masks; self-distillation runs the same weights
untrimmed, ``f(x, ∅)`` (skipped when ``λ_SD = 0``); the cost loss pulls each module's kept fraction β towards the
curriculum's target γ at this step (only when some trimmer is learnable).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vlprune.models.contrastive import itc_loss, sample_hard_negatives
from vlprune.trim.losses import cost_loss, self_distillation
from vlprune.trim.model import SmartTrim

TASKS = ("vqa", "itm")


@dataclass
class TaskBatch:
    """The pairs a task scores, their labels, and any loss computed on the way (ITC for ITM)."""

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    extra_loss: torch.Tensor | None = None


def task_batch(trim: SmartTrim, task: str, batch: dict[str, torch.Tensor], generator: torch.Generator) -> TaskBatch:
    """VQA: (image, question) -> answer. ITM: positives plus one ITC-hard negative text per image and one negative
    image per text (ALBEF), labels 1/0; the untrimmed unimodal encoders also get the ITC loss, so the ITC first
    stage of retrieval stays trained."""
    if task not in TASKS:
        raise ValueError(f"task={task!r}: SmartTrim trains on one of {TASKS}")
    pixels = batch["pixel_values"]
    if task == "vqa":
        return TaskBatch(pixels, batch["question_ids"], batch["question_mask"], batch["answer"])
    model, ids, mask = trim.model, batch["input_ids"], batch["attention_mask"]
    image_emb = model.encode_image(pixels, normalize=True)
    text_emb = model.encode_text(ids, mask, normalize=True)
    similarity = (image_emb @ text_emb.T).detach()
    neg_text, neg_image = sample_hard_negatives(similarity, generator), sample_hard_negatives(similarity.T, generator)
    b = len(pixels)
    labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).long().to(pixels.device)
    return TaskBatch(torch.cat([pixels, pixels, pixels[neg_image]]), torch.cat([ids, ids[neg_text], ids]),
                     torch.cat([mask, mask[neg_text], mask]), labels, itc_loss(image_emb, text_emb, model.logit_scale))


def task_head(trim: SmartTrim, task: str):
    return trim.model.vqa_head if task == "vqa" else trim.model.itm_head


@dataclass
class SmartTrimObjective:
    """The ``Trainer`` objective; ``total_steps`` sets the curriculum's length."""

    task: str
    total_steps: int

    def __call__(self, trim: SmartTrim, batch: dict[str, torch.Tensor], ctx) -> dict[str, torch.Tensor]:
        cfg, head = trim.config, task_head(trim, self.task)
        pairs = task_batch(trim, self.task, batch, ctx.generator)
        inputs = (pairs.pixel_values, pairs.input_ids, pairs.attention_mask)
        trimmed = trim(*inputs, mode="soft")
        logits = head(trimmed.cls)
        out = {"task": F.cross_entropy(logits, pairs.labels),
               "acc": (logits.argmax(-1) == pairs.labels).float().mean().detach()}
        loss = out["task"] if pairs.extra_loss is None else out["task"] + pairs.extra_loss
        if pairs.extra_loss is not None:
            out["itc"] = pairs.extra_loss
        if cfg.lambda_sd > 0:
            full_logits = head(trim(*inputs, mode="full").cls)
            out["sd"] = self_distillation(logits, full_logits, F.cross_entropy(full_logits, pairs.labels))
            loss = loss + cfg.lambda_sd * out["sd"]
        if cfg.trains_trimmers:
            ratios = trim.cost_ratios(trimmed.record)
            targets = trim.targets(ctx.step, self.total_steps)
            out["cost"] = cost_loss(ratios, targets)
            loss = loss + cfg.lambda_cost * out["cost"]
            out.update({f"beta/{k}": v.detach() for k, v in ratios.items()})
            out.update({f"gamma/{k}": torch.tensor(v) for k, v in targets.items()})
        out["loss"] = loss
        return out
