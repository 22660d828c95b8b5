"""MoPE-CLIP distillation (section 3.3): ``L = L_itc + α·L_sim + β·L_feat + γ·L_hidn`` (eq. 7), (α, β, γ) =
(1, 10³, 1), from a frozen teacher (the unpruned model) into the pruned student.

* ``L_sim`` (eq. 2): soft cross-entropy between the student's and the teacher's image-text logit matrices
  ``S = exp(t)·I·Tᵀ`` (each model with its own temperature), averaged over the image→text rows and text→image
  columns: ``SCE(S, Ŝ) = mean_rows −Σ softmax(Ŝ)·log softmax(S)``.
* ``L_feat`` (eq. 3): ``½·MSE(F_v, F̂_v) + ½·MSE(F_l, F̂_l)`` of the L2-normalised final embeddings.
* ``L_hidn`` (eqs. 4–6): ``½·(Σ_m MSE(H_v^m, Ĥ_v^{map(m)}) + Σ_k MSE(H_l^k, Ĥ_l^{map(k)}))`` over every
  block output of the student, matched to the teacher layer it came from through the ``layer_map``s.

Terms of a tower that is frozen and unpruned in the student are exactly zero and are skipped (``towers``).
``vlprune.train.distill.distil`` trains a student with this objective.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vlprune.models.contrastive import itc_loss
from vlprune.models.io import Model
from vlprune.structured.plan import TOWERS, tower_config
from vlprune.structured.towers import Batch, begin, finish, run

DEFAULT_WEIGHTS = (1.0, 1e3, 1.0)


def similarity_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 2: soft cross-entropy of the student's logits against the teacher's softmax, both directions."""
    def sce(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -(t.softmax(dim=-1) * s.log_softmax(dim=-1)).sum(dim=-1).mean()

    return (sce(student_logits, teacher_logits) + sce(student_logits.T, teacher_logits.T)) / 2


def feature_loss(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> torch.Tensor:
    """Eq. 3: ½·Σ over the towers given of the MSE between student and teacher embeddings."""
    return sum(F.mse_loss(student[t], teacher[t]) for t in student) / 2


def hidden_loss(student: dict[str, list[torch.Tensor]], teacher: dict[str, list[torch.Tensor]],
                layer_maps: dict[str, Sequence[int]]) -> torch.Tensor:
    """Eqs. 4–6: ½·Σ_towers Σ_m MSE(student block m, teacher block ``layer_maps[tower][m]``)."""
    total = torch.zeros(())
    for tower, states in student.items():
        for m, state in enumerate(states):
            total = total + F.mse_loss(state, teacher[tower][layer_maps[tower][m]])
    return total / 2


def _teacher_index(student: Model, teacher: Model, tower: str) -> list[int]:
    """For each student block, the teacher block with the same original layer (``layer_map``)."""
    teacher_map = list(tower_config(teacher.config, tower).layer_map)
    student_map = tower_config(student.config, tower).layer_map
    missing = [i for i in student_map if i not in teacher_map]
    if missing:
        raise ValueError(f"student {tower} layers {missing} (layer_map) are not in the teacher's layer_map "
                         f"{teacher_map}: distil from the model the student was pruned from")
    return [teacher_map.index(i) for i in student_map]


def _forward(model: Model, tower: str, batch: Batch, hidden: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    states: list[torch.Tensor] = []
    part = run(model, tower, begin(model, tower, batch), hidden=states if hidden else None)
    return finish(model, tower, part, batch), states


@dataclass
class DistillObjective:
    """The Trainer objective of eq. 7. ``towers``: the towers that differ from the teacher (pruned/trained)."""

    teacher: Model
    towers: tuple[str, ...] = TOWERS
    alpha: float = DEFAULT_WEIGHTS[0]
    beta: float = DEFAULT_WEIGHTS[1]
    gamma: float = DEFAULT_WEIGHTS[2]

    def __post_init__(self) -> None:
        unknown = sorted(set(self.towers) - set(TOWERS))
        if unknown or not self.towers:
            raise ValueError(f"towers={self.towers}: expected a non-empty subset of {TOWERS}")
        for name in ("alpha", "beta", "gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: expected a weight >= 0")
        self.teacher.eval().requires_grad_(False)

    def __call__(self, model: Model, batch: Batch, ctx: object) -> dict[str, torch.Tensor]:
        emb, hid, t_emb, t_hid = {}, {}, {}, {}
        for tower in TOWERS:
            distilled = tower in self.towers
            emb[tower], hid[tower] = _forward(model, tower, batch, hidden=distilled and self.gamma > 0)
            with torch.no_grad():
                t_emb[tower], t_hid[tower] = _forward(self.teacher, tower, batch, hidden=distilled and self.gamma > 0)
        out = {"itc": itc_loss(emb["vision"], emb["text"], model.logit_scale)}
        student_logits = model.logit_scale.exp() * emb["vision"] @ emb["text"].T
        teacher_logits = self.teacher.logit_scale.exp() * t_emb["vision"] @ t_emb["text"].T
        out["sim"] = similarity_loss(student_logits, teacher_logits)
        out["feat"] = feature_loss({t: emb[t] for t in self.towers}, {t: t_emb[t] for t in self.towers})
        maps = {t: _teacher_index(model, self.teacher, t) for t in self.towers}
        out["hidn"] = hidden_loss({t: hid[t] for t in self.towers}, {t: t_hid[t] for t in self.towers}, maps)
        out["loss"] = out["itc"] + self.alpha * out["sim"] + self.beta * out["feat"] + self.gamma * out["hidn"]
        return out
