"""VQA accuracy: exact match for single-answer questions, VQA-v2 soft accuracy for multi-annotator ones.

A question with one reference answer scores 1 on an exact match, else 0. A question with several annotator
answers scores ``min(#annotators who gave the prediction / 3, 1)`` (the common simplification of the official
metric, which also averages over the 10 leave-one-annotator-out subsets and so gives e.g. 0.3 instead of 1/3
for a single matching annotator). String answers are compared after lower-casing and collapsing whitespace;
tensor inputs hold answer ids, and 2-D answer tensors use negative ids as padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Answer = str | int


def _normalise(answer: Answer) -> Answer:
    return " ".join(answer.lower().split()) if isinstance(answer, str) else answer


def _as_lists(predictions: Sequence[str] | torch.Tensor,
              answers: Sequence[Sequence[str]] | Sequence[str] | torch.Tensor
              ) -> tuple[list[Answer], list[list[Answer]]]:
    if isinstance(predictions, torch.Tensor) != isinstance(answers, torch.Tensor):
        raise ValueError("predictions and answers must both be tensors of answer ids or both hold strings")
    if isinstance(predictions, torch.Tensor):
        if predictions.dim() != 1:
            raise ValueError(f"prediction tensor must be 1-D answer ids, got shape {tuple(predictions.shape)}")
        if answers.dim() not in (1, 2):
            raise ValueError(f"answer tensor must be (N,) or (N, annotators), got shape {tuple(answers.shape)}")
        preds: list[Answer] = predictions.tolist()
        rows = answers[:, None] if answers.dim() == 1 else answers
        refs = [[a for a in row if a >= 0] for row in rows.tolist()]
    else:
        preds = [_normalise(p) for p in predictions]
        refs = [[_normalise(answer)] if isinstance(answer, str) else [_normalise(a) for a in answer]
                for answer in answers]
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} answer sets")
    if not preds:
        raise ValueError("no predictions to score")
    if any(not ref for ref in refs):
        raise ValueError(f"{sum(not ref for ref in refs)} questions have no reference answer")
    return preds, refs


def vqa_scores(predictions: Sequence[str] | torch.Tensor,
               answers: Sequence[Sequence[str]] | Sequence[str] | torch.Tensor) -> list[float]:
    """Each question's accuracy (exact match or VQA soft score): the items a paired comparison resamples."""
    preds, refs = _as_lists(predictions, answers)
    return [float(pred == ref[0]) if len(ref) == 1 else min(ref.count(pred) / 3.0, 1.0)
            for pred, ref in zip(preds, refs)]


def vqa_accuracy(predictions: Sequence[str] | torch.Tensor,
                 answers: Sequence[Sequence[str]] | Sequence[str] | torch.Tensor) -> float:
    """Mean per-question accuracy (exact match or VQA soft score, see the module docstring)."""
    scores = vqa_scores(predictions, answers)
    return sum(scores) / len(scores)


def vqa_accuracy_by_type(predictions: Sequence[str] | torch.Tensor,
                         answers: Sequence[Sequence[str]] | Sequence[str] | torch.Tensor,
                         types: Sequence[str]) -> dict[str, float]:
    """Mean accuracy per question type (e.g. ``yes/no``, ``number``, ``other``)."""
    scores = vqa_scores(predictions, answers)
    if len(types) != len(scores):
        raise ValueError(f"{len(types)} question types for {len(scores)} questions")
    totals: dict[str, list[float]] = {}
    for kind, score in zip(types, scores):
        totals.setdefault(kind, []).append(score)
    return {kind: sum(values) / len(values) for kind, values in totals.items()}
