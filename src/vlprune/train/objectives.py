"""Training objectives: ITC, ITM with hard negatives, MLM and VQA classification (ALBEF's recipe), and the
toy world's auxiliary scene supervision (``vlprune.train.scene``).

Each objective takes ``(model, batch, ctx)`` and returns a dict of scalar tensors with the total under
``"loss"`` — the interface of ``vlprune.train.trainer.Trainer``. Randomness comes only from
``ctx.generator`` so a resumed run repeats it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vlprune.data.cells import cell_patch_grid, target_cell_attention
from vlprune.models.contrastive import itc_loss, sample_hard_negatives
from vlprune.models.fusion import FusionModel
from vlprune.models.layers import TokenState
from vlprune.tokenizer import MASK_ID, SPECIAL_TOKENS
from vlprune.train.momentum import MomentumQueue, queued_itc_loss
from vlprune.train.scene import SceneProbes, grounding_loss

TASKS = ("itc", "itm", "mlm", "vqa", "scene", "ground", "ground_object")
"""Grounded VQA on the toy world (with ``vqa``): ``ground`` tells the fusion layers where the object of each question
is (``grounding_loss`` on their [CLS] cross-attention), ``ground_object`` (with ``scene``) what it is
(``SceneProbes.object_loss`` on the fused [CLS])."""


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab_size: int, generator: torch.Generator,
                prob: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: choose ``prob`` of the word tokens; 80% -> [MASK], 10% random word, 10% unchanged.
    Returns the masked ids and labels (-100 where not chosen)."""
    shape = input_ids.shape
    words = attention_mask.bool() & (input_ids >= len(SPECIAL_TOKENS))
    chosen = (torch.rand(shape, generator=generator) < prob).to(input_ids.device) & words
    action = torch.rand(shape, generator=generator).to(input_ids.device)
    random_words = torch.randint(len(SPECIAL_TOKENS), vocab_size, shape, generator=generator).to(input_ids.device)
    masked = input_ids.clone()
    masked[chosen & (action < 0.8)] = MASK_ID
    swap = chosen & (action >= 0.8) & (action < 0.9)
    masked[swap] = random_words[swap]
    labels = input_ids.masked_fill(~chosen, -100)
    return masked, labels


@dataclass
class Objective:
    """Weighted sum of the chosen tasks. ``tasks`` maps a task name in ``TASKS`` to its weight."""

    tasks: dict[str, float] = field(default_factory=lambda: {"itc": 1.0})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown or not self.tasks:
            raise ValueError(f"tasks={sorted(self.tasks)}: choose from {TASKS}")
        for name, weight in self.tasks.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf:
                raise ValueError(f"task {name!r} has weight {weight!r}: a task's weight must be a finite number > 0 "
                                 "(drop the task instead of giving it weight 0)")

    def needs_negatives(self) -> bool:
        """Whether a task contrasts each pair with the batch's other pairs (ITC in-batch, ITM's hard negatives)."""
        return bool({"itc", "itm"} & set(self.tasks))

    def __call__(self, model, batch: dict[str, torch.Tensor], ctx) -> dict[str, torch.Tensor]:
        probes = model if isinstance(model, SceneProbes) else None
        model = probes.model if probes is not None else model
        wrapper = model if isinstance(model, MomentumQueue) else None
        model = wrapper.model if wrapper is not None else model
        if ("scene" in self.tasks) != (probes is not None):
            raise ValueError("task 'scene' and SceneProbes go together: wrap the model in SceneProbes for it, "
                             "and only for it")
        if {"ground", "ground_object"} & set(self.tasks) and "vqa" not in self.tasks:
            raise ValueError("tasks 'ground' and 'ground_object' supervise the VQA pass: use them with 'vqa'")
        if "ground_object" in self.tasks and "scene" not in self.tasks:
            raise ValueError("task 'ground_object' trains a scene probe: use it with 'scene'")
        needs_fusion = set(self.tasks) - {"itc", "scene"}
        if needs_fusion and not isinstance(model, FusionModel):
            raise ValueError(f"tasks {sorted(needs_fusion)} need a fusion model (kind='fusion')")
        out: dict[str, torch.Tensor] = {}
        pixels, ids, mask = batch["pixel_values"], batch["input_ids"], batch["attention_mask"]
        text_state = model.text(ids, mask) if {"itc", "itm", "scene"} & set(self.tasks) else None
        question = model.text(batch["question_ids"], batch["question_mask"]) if "vqa" in self.tasks else None
        image_state = model.visual(pixels, guide=self._guide(model, text_state, question, batch))
        image_emb = model.image_embedding(image_state, normalize=True)
        if "vqa" in self.tasks:
            if model.vqa_head is None:
                raise ValueError("task 'vqa' needs a model with a VQA head (config num_answers > 0)")
            fusion_question = model.fusion_input(batch["question_ids"], batch["question_mask"], question)
            cross_cls_attn: dict[str, torch.Tensor] | None = {} if "ground" in self.tasks else None
            fused_cls = model.fuse(fusion_question, image_state, cross_cls_attn).x[:, 0]
            logits = model.vqa_head(fused_cls)
            out["vqa"] = F.cross_entropy(logits, batch["answer"])
            out["vqa_acc"] = (logits.argmax(-1) == batch["answer"]).float().mean().detach()
            if {"ground", "ground_object"} & set(self.tasks) and "question_cell" not in batch:
                raise ValueError("tasks 'ground' and 'ground_object' need the cell each question is about "
                                 "(batch['question_cell'], given by the toy world); drop them for other VQA data")
            if cross_cls_attn is not None:
                share = target_cell_attention(list(cross_cls_attn.values()), batch["question_cell"],
                                              cell_patch_grid(model.config.vision, "task 'ground'"))
                out["ground"] = grounding_loss(share, batch["question_cell"])
                out["ground_share"] = (share.sum() / (batch["question_cell"] >= 0).sum().clamp(min=1)).detach()
            if "ground_object" in self.tasks:
                out["ground_object"] = probes.object_loss(fused_cls, batch["image_cells"], batch["question_cell"])
        if {"itc", "itm", "scene"} & set(self.tasks):
            text_emb = model.text_embedding(text_state, ids, mask, normalize=True)
        if {"itc", "itm"} & set(self.tasks):
            out["itc"] = (queued_itc_loss(wrapper, image_emb, text_emb, model.logit_scale, batch) if wrapper
                          else itc_loss(image_emb, text_emb, model.logit_scale))
            out["temperature"] = (1.0 / model.logit_scale.exp()).detach()
        if "itm" in self.tasks:
            fusion_text = model.fusion_input(ids, mask, text_state)
            out["itm"] = self._itm(model, image_state, fusion_text, image_emb, text_emb, mask, ctx.generator)
        if "mlm" in self.tasks:
            masked, labels = mask_tokens(ids, mask, model.config.text.vocab_size, ctx.generator)
            fused = model.fuse(model.fusion_input(masked, mask), image_state)
            logits = model.mlm_head(fused.x)
            # sum / count (not the mean): a micro-batch where no token was chosen gives 0, not NaN
            chosen = (labels != -100).sum().clamp(min=1)
            out["mlm"] = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100,
                                         reduction="sum") / chosen
        if probes is not None:
            scene = probes.losses(image_state.x, image_emb, text_emb, batch)
            out.update(scene)
            out["scene"] = sum(scene.values()) / len(scene)
        out["loss"] = sum(w * out[name] for name, w in self.tasks.items())
        return out

    @staticmethod
    def _guide(model, text_state: TokenState | None, question: TokenState | None, batch: dict) -> torch.Tensor | None:
        """The text guide of a token-reduction method on the model (None without one): the question for VQA
        (it is what the answer depends on), else the paired caption — ELIP's pre-training setting."""
        if model.reduction is None:
            return None
        if question is not None:
            return model.guide_from_text(question, batch["question_ids"], batch["question_mask"])
        if text_state is None:
            text_state = model.text(batch["input_ids"], batch["attention_mask"])
        return model.guide_from_text(text_state, batch["input_ids"], batch["attention_mask"])

    @staticmethod
    def _itm(model: FusionModel, image_state, text_state, image_emb, text_emb, mask, generator) -> torch.Tensor:
        """ITM over positives, (image, hard negative text) and (hard negative image, text) pairs; ``text_state``
        is the fusion input (``model.fusion_input``)."""
        sim = image_emb @ text_emb.T
        neg_text = sample_hard_negatives(sim, generator)
        neg_image = sample_hard_negatives(sim.T, generator)
        texts = TokenState(x=torch.cat([text_state.x, text_state.x[neg_text], text_state.x]),
                           mask=torch.cat([mask, mask[neg_text], mask]).bool())
        images = TokenState(x=torch.cat([image_state.x, image_state.x, image_state.x[neg_image]]))
        logits = model.itm_head(model.fuse(texts, images).x[:, 0])
        b = len(image_emb)
        labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).long().to(logits.device)
        return F.cross_entropy(logits, labels)
