"""Measure trimmed models beside untrimmed and statically reduced ones, with one accounting: VQA accuracy and
ITM-re-ranked retrieval, per-instance GFLOPs of each scored pair, batch-1 latency, and how the kept tokens
follow the input (adaptivity)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from vlprune.config import VisionConfig
from vlprune.data.pairs import to_pixels
from vlprune.data.sources import parse_data, toy_count
from vlprune.data.toyworld import ANSWERS, ToyWorld, positives
from vlprune.eval.evaluate import CLIP_BENCHMARK_TASKS, FLOP_COUNTER, reranked_metrics
from vlprune.eval.vqa import vqa_accuracy, vqa_accuracy_by_type
from vlprune.models.fusion import FusionModel
from vlprune.reduce.base import apply, token_schedule
from vlprune.tokenizer import WordTokenizer
from vlprune.trim.flops import distribution, record_gflops, static_gflops
from vlprune.trim.model import SmartTrim, TrimRecord

# (pixels, ids, mask) -> (logits, GFLOPs per pair, record or None)
Scorer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, np.ndarray, TrimRecord | None]]


def trim_scorer(trim: SmartTrim, task: str, mode: str = "masked", vision_only: bool = False) -> Scorer:
    """Scores pairs with ``trim`` (``task`` ``vqa`` or ``itm``); ``masked`` takes the hard decisions batched.
    ``vision_only``: the GFLOPs are the image tower's (``record_gflops``), not the whole pair's."""
    head = trim.model.vqa_head if task == "vqa" else trim.model.itm_head

    def score(pixels, ids, mask):
        out = trim(pixels, ids, mask, mode)
        return head(out.cls), record_gflops(trim, out.record, vision_only), out.record

    return score


def static_scorer(model: FusionModel, task: str) -> Scorer:
    """Scores pairs with ``model`` as it is (a static token-reduction method applied, or none)."""
    logits_fn = model.vqa_logits if task == "vqa" else model.itm_logits
    schedule = token_schedule(model)

    def score(pixels, ids, mask):
        return logits_fn(pixels, ids, mask), static_gflops(model.config, schedule, mask.sum(dim=1)), None

    return score


def vision_tokens(record: TrimRecord) -> np.ndarray:
    """(B,) image tokens per layer, averaged over the vision layers ([CLS] included)."""
    names = [n for n in record.keep if n.startswith("tokens:vision.")]
    return torch.stack([record.counts(n) for n in names]).mean(dim=0).numpy()


@torch.no_grad()
def vqa_run(score: Scorer, vision: VisionConfig, tokenizer: WordTokenizer, world: ToyWorld, count: int,
            batch_size: int = 64) -> dict:
    """Accuracy (overall, per question type), the GFLOPs distribution, and per-instance values for adaptivity."""
    scenes = [world.scene(i) for i in range(count)]
    predictions, flops, tokens = [], [], []
    for start in range(0, count, batch_size):
        idx = range(start, min(count, start + batch_size))
        ids, mask = tokenizer([scenes[i].question for i in idx])
        logits, gflops, record = score(to_pixels([world.image(i) for i in idx], vision), ids, mask)
        predictions += [ANSWERS[a] for a in logits.argmax(-1).tolist()]
        flops.append(gflops)
        if record is not None:
            tokens.append(vision_tokens(record))
    answers, types = [s.answer for s in scenes], [s.question_type for s in scenes]
    per_instance = {"gflops": np.concatenate(flops).tolist(), "objects": [len(s.objects) for s in scenes],
                    "question_type": types, "correct": [float(p == a) for p, a in zip(predictions, answers)]}
    if tokens:
        per_instance["vision_tokens"] = np.concatenate(tokens).tolist()
    return {"vqa_accuracy": vqa_accuracy(predictions, answers),
            "vqa_accuracy_by_type": vqa_accuracy_by_type(predictions, answers, types),
            "gflops": distribution(np.concatenate(flops)), "questions": count, "per_instance": per_instance}


@torch.no_grad()
def retrieval_run(score: Scorer, model: FusionModel, tokenizer: WordTokenizer, world: ToyWorld, count: int,
                  rerank_k: int = 8, batch_size: int = 64) -> dict:
    """Retrieval recall: the untrimmed ITC similarity ranks all pairs (the same first stage for every method),
    then each query's top ``rerank_k`` are re-scored by ``score``'s ITM; GFLOPs are per re-scored pair."""
    pixels = to_pixels([world.image(i) for i in range(count)], model.config.vision)
    ids, mask = tokenizer([world.scene(i).caption for i in range(count)])
    reduction = model.reduction
    apply(model, None)
    similarity = model.encode_image(pixels, normalize=True) @ model.encode_text(ids, mask, normalize=True).T
    apply(model, reduction)
    flops: list[np.ndarray] = []

    def itm(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        logits, gflops, _ = score(pixels[rows], ids[cols], mask[cols])
        flops.append(gflops)
        return logits.softmax(-1)[:, 1]

    truth = torch.from_numpy(positives(world, count))
    metrics = reranked_metrics(similarity, rerank_k, itm, batch_size, list(range(count)), truth)
    return {**metrics, "gflops": distribution(np.concatenate(flops)), "pairs": count, "rerank_k": rerank_k}


TRIM_TASKS = ("vqa", "retrieval")
STATS = ("mean", "p10", "p50", "p90")


def evaluate_trimmed(trim: SmartTrim, tokenizer: WordTokenizer, task: str, data: str = "toyworld:val",
                     batch_size: int = 128, rerank_k: int = 16, model_name: str | None = None) -> dict:
    """``vlprune eval`` of a SmartTrim checkpoint, trimmers on (hard 0/1 decisions, batched as ``trim_scorer``'s
    ``masked``): the task's usual metrics, params with the trimmers', and the per-instance GFLOPs (per question,
    or per ITM-re-scored pair; trimmers included) as mean and p10 / p50 / p90."""
    if task not in TRIM_TASKS:
        raise ValueError(f"--task {task!r}: a SmartTrim checkpoint trims a fusion model's image-text forward; "
                         f"expected one of {TRIM_TASKS}")
    if task == "retrieval" and rerank_k < 1:
        raise ValueError(f"--rerank-k {rerank_k}: SmartTrim retrieval re-scores each query's top-k with its trimmed "
                         "ITM; expected >= 1")
    spec = parse_data(data)
    if spec.kind != "toyworld":
        raise ValueError(f"--data {data!r}: SmartTrim checkpoints are evaluated on toyworld data only (its trimmed "
                         "forward scores toy-world batches)")
    model = trim.eval().model
    world = ToyWorld(spec.fields[0], image_size=model.config.vision.image_size)
    count = toy_count(spec) or len(world)
    start = time.perf_counter()
    if task == "vqa":
        metrics = vqa_run(trim_scorer(trim, "vqa"), model.config.vision, tokenizer, world, count, batch_size)
    else:
        metrics = retrieval_run(trim_scorer(trim, "itm"), model, tokenizer, world, count, rerank_k, batch_size)
    gflops = metrics.pop("gflops")
    metrics.pop("per_instance", None)
    costs = {"params": model.num_params() + trim.trimmer_params(), "trimmer_params": trim.trimmer_params(),
             "vision_params": model.num_params("vision"), "text_params": model.num_params("text")}
    smarttrim = {"enabled": True, "config": trim.config.to_dict(), "decisions": "hard (0/1 masks)",
                 "gflops_per": "question" if task == "vqa" else "ITM-re-scored pair",
                 "gflops": {k: gflops[k] for k in STATS}}
    name = model_name or model.config.name
    return {"dataset": spec.name, "model": name, "pretrained": name, "task": CLIP_BENCHMARK_TASKS[task],
            "metrics": metrics, "language": "en", "data": spec.text, "costs": costs, "smarttrim": smarttrim,
            "flop_counter": FLOP_COUNTER,
            "seconds": time.perf_counter() - start}


def batch1_inputs(tokenizer: WordTokenizer, world: ToyWorld, vision: VisionConfig, count: int
                  ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The first ``count`` (pixels, question ids, mask) of ``world`` one by one, the text unpadded."""
    inputs = []
    for i in range(count):
        ids, mask = tokenizer([world.scene(i).question])
        n = int(mask.sum())
        inputs.append((to_pixels([world.image(i)], vision), ids[:, :n], mask[:, :n]))
    return inputs


@torch.no_grad()
def batch1_latency(runs: dict[str, Callable[[int], object]], count: int, warmup: int = 3) -> dict[str, float]:
    """Mean milliseconds per input at batch size 1, every method timed on the same inputs in turn (so machine
    load affects all alike); each input's time is the best of two calls."""
    for fn in runs.values():
        for i in range(warmup):
            fn(i)
    totals = dict.fromkeys(runs, 0.0)
    for i in range(count):
        for name, fn in runs.items():
            best = float("inf")
            for _ in range(2):
                start = time.perf_counter()
                fn(i)
                best = min(best, time.perf_counter() - start)
            totals[name] += best
    return {name: 1000 * total / count for name, total in totals.items()}


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), for Spearman's correlation."""
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for v in np.unique(values):
        ranks[values == v] = ranks[values == v].mean()
    return ranks


def adaptivity(per_instance: dict) -> dict:
    """How kept image tokens follow the input: Pearson and Spearman correlation with the number of objects,
    the correlation ratio η with the question type, and the means per group."""
    tokens = np.asarray(per_instance["vision_tokens"])
    objects = np.asarray(per_instance["objects"], dtype=float)
    types = np.asarray(per_instance["question_type"])
    by_type = {t: float(tokens[types == t].mean()) for t in sorted(set(types.tolist()))}
    between = sum((types == t).sum() * (m - tokens.mean()) ** 2 for t, m in by_type.items())
    total = ((tokens - tokens.mean()) ** 2).sum()
    constant = tokens.std() == 0
    return {"pearson_objects": float("nan") if constant else float(np.corrcoef(tokens, objects)[0, 1]),
            "spearman_objects": float("nan") if constant else float(np.corrcoef(_ranks(tokens), _ranks(objects))[0, 1]),
            "tokens_by_objects": {int(n): float(tokens[objects == n].mean()) for n in np.unique(objects)},
            "eta_question_type": float("nan") if constant else float(np.sqrt(between / total)),
            "tokens_by_question_type": by_type}
