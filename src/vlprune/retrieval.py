"""Image-text retrieval recall (CLIP_benchmark key names) and ITM-style top-k re-ranking.

Tie rule (pessimistic, rank based): a query's rank is the number of *negative* candidates whose score is
``>=`` the best positive's score; recall@K counts a hit iff that rank is ``< K``. A negative tied with the
positive therefore ranks above it, so a constant similarity matrix scores (almost) zero, never perfect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

_CHUNK_ELEMENTS = 1 << 24  # ~64 MiB of float32 scores per chunk


def _negative_rank(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Per row: how many negatives score >= the best positive (rows are queries, columns candidates)."""
    best = scores.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)
    return ((scores >= best) & ~positive).sum(dim=1)


def _ranks(scores: torch.Tensor, positive_fn: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """Negative ranks of every row of ``scores``, computed in row chunks; ``positive_fn(start, stop)`` -> mask."""
    rows, cols = scores.shape
    step = max(1, _CHUNK_ELEMENTS // max(cols, 1))
    return torch.cat([_negative_rank(scores[start:start + step], positive_fn(start, min(start + step, rows)))
                      for start in range(0, rows, step)])


def _recalls(ranks: torch.Tensor, ks: Sequence[int]) -> dict[int, float]:
    return {k: (ranks < k).double().mean().item() for k in ks}


def retrieval_metrics(similarity: torch.Tensor, text_to_image: Sequence[int] | torch.Tensor,
                      ks: Sequence[int] = (1, 5, 10),
                      text_positives: torch.Tensor | None = None) -> dict[str, float]:
    """Recall@K in both directions for an (n_images, n_texts) similarity matrix.

    ``text_to_image[j]`` is the image caption j belongs to. ``image_retrieval_recall@K`` (text -> image) is the
    fraction of texts whose image is in the top K; ``text_retrieval_recall@K`` (image -> text) the fraction of
    images with any of their texts in the top K; ``mean_recall`` averages those. With ``text_positives``
    (bool, n_texts x n_images: text j truly describes image i), ``semantic_*`` keys also count any truly
    described image / describing text as a hit, and ``semantic_mean_recall`` averages them. Every image needs
    at least one text. Ties count against the model (see the module docstring).
    """
    if similarity.dim() != 2:
        raise ValueError(f"similarity must be 2-D (n_images, n_texts), got shape {tuple(similarity.shape)}")
    if torch.isnan(similarity).any():
        raise ValueError("similarity contains NaN")
    n_images, n_texts = similarity.shape
    owner = torch.as_tensor(text_to_image, dtype=torch.long, device=similarity.device).flatten()
    if owner.numel() != n_texts:
        raise ValueError(f"text_to_image has {owner.numel()} entries but similarity has {n_texts} texts (columns)")
    if n_texts == 0 or n_images == 0:
        raise ValueError(f"similarity is empty: {n_images} images x {n_texts} texts")
    if owner.min() < 0 or owner.max() >= n_images:
        raise ValueError(f"text_to_image values must lie in [0, {n_images}), got [{owner.min()}, {owner.max()}]")
    without_text = n_images - int(torch.unique(owner).numel())
    if without_text:
        raise ValueError(f"{without_text} of {n_images} images have no text in text_to_image")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be non-empty positive integers, got {ks}")
    if text_positives is not None and tuple(text_positives.shape) != (n_texts, n_images):
        raise ValueError(f"text_positives must be (n_texts, n_images) = ({n_texts}, {n_images}), "
                         f"got {tuple(text_positives.shape)}")

    image_ids = torch.arange(n_images, device=similarity.device)

    def own_t2i(start: int, stop: int) -> torch.Tensor:
        return owner[start:stop, None] == image_ids[None, :]

    def own_i2t(start: int, stop: int) -> torch.Tensor:
        return image_ids[start:stop, None] == owner[None, :]

    directions = {"": (own_t2i, own_i2t)}
    if text_positives is not None:
        extra = text_positives.to(device=similarity.device, dtype=torch.bool)
        directions["semantic_"] = (lambda a, b: own_t2i(a, b) | extra[a:b],
                                   lambda a, b: own_i2t(a, b) | extra[:, a:b].T)

    metrics: dict[str, float] = {}
    for prefix, (t2i_positive, i2t_positive) in directions.items():
        image_recall = _recalls(_ranks(similarity.T, t2i_positive), ks)
        text_recall = _recalls(_ranks(similarity, i2t_positive), ks)
        for k in ks:
            metrics[f"{prefix}image_retrieval_recall@{k}"] = image_recall[k]
            metrics[f"{prefix}text_retrieval_recall@{k}"] = text_recall[k]
        values = [*image_recall.values(), *text_recall.values()]
        metrics[f"{prefix}mean_recall"] = sum(values) / len(values)
    return metrics


def hits_at(similarity: torch.Tensor, text_to_image: Sequence[int] | torch.Tensor, k: int = 1
            ) -> dict[str, list[int]]:
    """Per query, 1 if a positive is in its top ``k`` (the tie rule above), else 0: ``image_retrieval_hit@k`` one
    per text, ``text_retrieval_hit@k`` one per image — the items whose means are the recalls, for paired
    comparisons of two models on the same queries."""
    owner = torch.as_tensor(text_to_image, dtype=torch.long, device=similarity.device).flatten()
    image_ids = torch.arange(similarity.shape[0], device=similarity.device)
    image_hits = _ranks(similarity.T, lambda a, b: owner[a:b, None] == image_ids[None, :]) < k
    text_hits = _ranks(similarity, lambda a, b: image_ids[a:b, None] == owner[None, :]) < k
    return {f"image_retrieval_hit@{k}": image_hits.int().tolist(), f"text_retrieval_hit@{k}": text_hits.int().tolist()}


def rerank_topk(first_stage: torch.Tensor, k: int,
                score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                batch_size: int | None = None) -> torch.Tensor:
    """Re-score each row's top-k columns with ``score_fn`` (ALBEF/BLIP ITM re-ranking).

    ``score_fn(rows, cols)`` receives equal-length 1-D index tensors and returns one score per pair; it is
    called on chunks of ``batch_size`` pairs (all at once if None). The returned matrix holds the new scores
    shifted by an offset that puts every re-ranked entry above every other entry of the matrix, while the
    other entries keep their first-stage values (and order). ``first_stage`` may use -inf to mask entries.
    """
    if first_stage.dim() != 2:
        raise ValueError(f"first_stage must be 2-D, got shape {tuple(first_stage.shape)}")
    if torch.isnan(first_stage).any() or torch.isposinf(first_stage).any():
        raise ValueError("first_stage contains NaN or +inf")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if first_stage.numel() == 0:
        return first_stage.clone()
    n_rows, n_cols = first_stage.shape
    k = min(k, n_cols)
    cols = first_stage.topk(k, dim=1).indices.flatten()
    rows = torch.arange(n_rows, device=first_stage.device).repeat_interleave(k)
    step = batch_size or max(rows.numel(), 1)
    scores = torch.cat([torch.as_tensor(score_fn(rows[i:i + step], cols[i:i + step])).flatten()
                        for i in range(0, rows.numel(), step)]).to(first_stage)
    if scores.numel() != rows.numel():
        raise ValueError(f"score_fn returned {scores.numel()} scores for {rows.numel()} pairs")
    if not torch.isfinite(scores).all():
        raise ValueError("score_fn returned NaN or inf")
    finite = first_stage[torch.isfinite(first_stage)]
    ceiling = finite.max() if finite.numel() else first_stage.new_zeros(())
    out = first_stage.clone()
    out[rows, cols] = scores + (ceiling - scores.min() + 1.0)
    return out
