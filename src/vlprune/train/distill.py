"""MoPE-CLIP distillation (section 3.3): train the pruned student from a frozen copy of its teacher with eq. 7
(``vlprune.structured.distill.DistillObjective``) on the ``Trainer``."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

from vlprune.models.io import Model
from vlprune.structured.distill import DEFAULT_WEIGHTS, DistillObjective
from vlprune.structured.plan import TOWERS
from vlprune.train.trainer import TrainConfig, Trainer


def distil(student: Model, teacher: Model, dataset: Sequence, collate, config: TrainConfig, out_dir: str | Path,
           towers: tuple[str, ...] = TOWERS, weights: tuple[float, float, float] = DEFAULT_WEIGHTS,
           progress: bool = True) -> dict:
    """Train ``student`` in place with eq. 7 on ``dataset`` (the existing ``Trainer``). Only the parameters of
    ``towers`` (blocks, embeddings, projection) and the temperature are trained; the other tower stays frozen,
    as in the paper's fine-tuning stage. Returns the last logged metrics."""
    frozen_teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
    parts = {"vision": ("visual", "visual_proj"), "text": ("text", "text_proj")}
    trainable = {name for t in towers for name in parts[t]} | {"logit_scale"}
    for name, param in student.named_parameters():
        param.requires_grad_(name.split(".")[0] in trainable)
    alpha, beta, gamma = weights
    objective = DistillObjective(frozen_teacher, tuple(towers), alpha, beta, gamma)
    trainer = Trainer(student, objective, dataset, collate, config, out_dir, progress=progress)
    frozen_teacher.to(trainer.device)
    metrics = trainer.fit(resume=False)
    student.requires_grad_(True).eval()
    return metrics
