"""Evaluate a model on a task: retrieval (with ITM re-ranking for fusion models), zero-shot classification
or VQA. Every result also records the model's parameters and analytic GFLOPs (DESIGN section 8)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from vlprune.data.pairs import to_pixels
from vlprune.data.toyworld import ANSWERS, SPLIT_SIZES, ZEROSHOT_TEMPLATES, ToyWorld, ceiling_of, class_names, positives
from vlprune.eval.retrieval import rerank_topk, retrieval_metrics
from vlprune.eval.vqa import vqa_accuracy, vqa_accuracy_by_type
from vlprune.eval.zeroshot import zeroshot_classifier, zeroshot_metrics
from vlprune.models.fusion import FusionModel
from vlprune.models.io import Model
from vlprune.models.layers import TokenState
from vlprune.reduce.base import apply, reduced_gflops, token_schedule
from vlprune.tokenizer import WordTokenizer

TASKS = ("retrieval", "zeroshot", "vqa")
FLOP_COUNTER = "analytic, GFLOPs = 2 x MACs, matmuls incl. attention"


def parse_data(spec: str, task: str) -> tuple[str, int | None]:
    """``toyworld:SPLIT[:COUNT]`` -> (split, count). The zero-shot task always uses the zeroshot split."""
    parts = spec.split(":")
    if parts[0] != "toyworld" or len(parts) not in (2, 3):
        raise ValueError(f"--data {spec!r}: expected toyworld:SPLIT or toyworld:SPLIT:COUNT "
                         "(e.g. toyworld:val); real datasets arrive with the dataset loaders")
    split = "zeroshot" if task == "zeroshot" else parts[1]
    if split not in SPLIT_SIZES:
        raise ValueError(f"--data {spec!r}: unknown split {parts[1]!r}; expected one of {sorted(SPLIT_SIZES)}")
    if len(parts) == 2:
        return split, None
    available = SPLIT_SIZES[split]
    if not parts[2].strip().isdigit() or not 1 <= int(parts[2]) <= available:
        raise ValueError(f"--data {spec!r}: COUNT must be a whole number from 1 to {available} (the size of the "
                         f"toy world's {split!r} split), got {parts[2]!r}")
    return split, int(parts[2])


def items_to_use(world: ToyWorld, count: int | None) -> int:
    """``count`` items of ``world`` (all of them for None); more than the split holds is refused, never clamped."""
    if count is None:
        return len(world)
    if not 1 <= count <= len(world):
        raise ValueError(f"count={count}: the toy world's {world.split!r} split has {len(world)} items; ask for 1 to "
                         f"{len(world)}")
    return count


def _chunks(n: int, size: int, desc: str) -> Iterator[range]:
    for start in tqdm(range(0, n, size), desc=desc, leave=False, unit="batch"):
        yield range(start, min(n, start + size))


@dataclass
class _Images:
    pixels: torch.Tensor | None  # (count, 3, H, W), kept only for guided re-encoding
    emb: torch.Tensor     # normalised embeddings
    tokens: torch.Tensor  # final image tokens


@dataclass
class _Texts:
    emb: torch.Tensor
    tokens: torch.Tensor
    masks: torch.Tensor
    guides: torch.Tensor | None  # text guide of each text (models that can be guided)


@torch.no_grad()
def _image_states(model: Model, world: ToyWorld, count: int, batch_size: int, keep_pixels: bool = False) -> _Images:
    pixels, embs, tokens = [], [], []
    for idx in _chunks(count, batch_size, "images"):
        batch = to_pixels([world.image(i) for i in idx], model.config.vision)
        if keep_pixels:
            pixels.append(batch)
        state = model.visual(batch)
        embs.append(model.image_embedding(state, normalize=True))
        tokens.append(state.x)
    return _Images(torch.cat(pixels) if keep_pixels else None, torch.cat(embs), torch.cat(tokens))


@torch.no_grad()
def _text_states(model: Model, tokenizer: WordTokenizer, texts: list[str], batch_size: int,
                 with_guides: bool = False) -> _Texts:
    """Normalised text embeddings, the text tokens fusion layers start from (fusion models; else the unimodal
    output), attention masks and (``with_guides``) each text's guide for text-guided token reduction."""
    embs, tokens, masks, guides = [], [], [], []
    for idx in _chunks(len(texts), batch_size, "texts"):
        ids, mask = tokenizer([texts[i] for i in idx])
        state = model.text(ids, mask)
        embs.append(model.text_embedding(state, ids, mask, normalize=True))
        fusion_in = model.fusion_input(ids, mask, state) if isinstance(model, FusionModel) else state
        tokens.append(fusion_in.x)
        masks.append(mask if fusion_in.mask is None else fusion_in.mask.long())
        if with_guides:
            guides.append(model.guide_from_text(state, ids, mask))
    return _Texts(torch.cat(embs), _pad_cat(tokens), _pad_cat(masks), torch.cat(guides) if guides else None)


def _pad_cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate batches along dim 0, zero-padding dim 1 to the longest (pruned text is shorter per batch;
    the zero mask entries keep the padding out of attention)."""
    length = max(p.shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, [0, 0] * (p.ndim - 2) + [0, length - p.shape[1]]) for p in parts])


def _costs(model: Model, text_length: int) -> dict:
    """Params and analytic GFLOPs, following the token schedule of any reduction method on the model."""
    schedule = token_schedule(model)
    reduction = model.reduction
    text_reduction = model.text_reduction
    return {"params": model.num_params(), "vision_params": model.num_params("vision"),
            "text_params": model.num_params("text"), **reduced_gflops(model, text_length),
            "method": reduction.to_dict() if reduction else {"method": "none"},
            **({"text_method": text_reduction.to_dict()} if text_reduction else {}),
            "token_schedule": [list(pair) for pair in schedule]}


def _pair_scorer(model: Model, images: _Images, texts: _Texts, guided: bool):
    """Second-stage score of (image rows, text cols): ITM for fusion models; for a text-guided method the
    image is re-encoded with that text as its guide (ITM on fusion models, cosine on CLIP). None: no second
    stage (an unguided CLIP model)."""
    def image_state(rows: torch.Tensor, cols: torch.Tensor) -> TokenState:
        if not guided:
            return TokenState(x=images.tokens[rows])
        return model.visual(images.pixels[rows], guide=texts.guides[cols])

    def itm(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        fused = model.fuse(TokenState(x=texts.tokens[cols], mask=texts.masks[cols].bool()), image_state(rows, cols))
        return model.itm_head(fused.x[:, 0]).softmax(-1)[:, 1]

    def cosine(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return (model.image_embedding(image_state(rows, cols), normalize=True) * texts.emb[cols]).sum(-1)

    if isinstance(model, FusionModel):
        return itm
    return cosine if guided else None


def reranked_metrics(similarity: torch.Tensor, rerank_k: int,
                     itm: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], batch_size: int,
                     truth: torch.Tensor) -> dict:
    """Recall after re-ranking each query's top ``rerank_k`` first-stage candidates with ``itm(image_rows,
    text_cols)`` (one score per pair), both directions; ``truth`` as ``retrieval_metrics``'s text_positives."""
    count = similarity.shape[0]
    i2t = rerank_topk(similarity, rerank_k, itm, batch_size)
    t2i = rerank_topk(similarity.T, rerank_k, lambda r, c: itm(c, r), batch_size)
    text_side = retrieval_metrics(i2t, list(range(count)), text_positives=truth)
    image_side = retrieval_metrics(t2i.T, list(range(count)), text_positives=truth)
    metrics = {k: (text_side if "text_retrieval" in k else image_side)[k] for k in text_side}
    for prefix in ("", "semantic_"):
        keys = [k for k in metrics if k.startswith((prefix + "image_retrieval", prefix + "text_retrieval"))]
        metrics[prefix + "mean_recall"] = float(np.mean([metrics[k] for k in keys]))
    return metrics


@torch.no_grad()
def evaluate_retrieval(model: Model, tokenizer: WordTokenizer, world: ToyWorld, count: int | None = None,
                       batch_size: int = 128, rerank_k: int = 16) -> dict:
    """R@1/5/10 both ways (CLIP_benchmark keys) plus semantic recall and the split's ceiling.

    Fusion models re-rank each query's top ``rerank_k`` ITC candidates with ITM (``rerank_k=0``: ITC only).
    A text-guided method (ELIP λ < 1, TRIPS) cannot embed an image before it knows the text, so retrieval is
    two-stage: the unguided base model ranks everything, then each query's top ``rerank_k`` pairs are
    re-encoded with the pair's text as guide and re-scored (cosine for CLIP, ITM for fusion models).
    """
    count = items_to_use(world, count)
    captions = [world.scene(i).caption for i in range(count)]
    method = model.reduction
    guided = method is not None and method.text_guided
    if guided and not rerank_k:
        raise ValueError(f"{method.method} needs the text to encode an image: retrieval with it re-scores each "
                         "query's top-k, so --rerank-k must be >= 1")
    if guided:
        apply(model, None)  # the first stage is unguided: the base model ranks
    images = _image_states(model, world, count, batch_size, keep_pixels=guided)
    texts = _text_states(model, tokenizer, captions, batch_size, with_guides=guided)
    if guided:
        apply(model, method)
    similarity = images.emb @ texts.emb.T
    described = positives(world, count)
    truth = torch.from_numpy(described)
    first_stage = retrieval_metrics(similarity, list(range(count)), text_positives=truth)
    score = _pair_scorer(model, images, texts, guided) if rerank_k else None
    if score is None:
        return {**first_stage, **ceiling_of(described), "pairs": count}
    result: dict = {"first_stage_" + k: v for k, v in first_stage.items() if not k.startswith("semantic")}
    metrics = reranked_metrics(similarity, rerank_k, score, batch_size, truth)
    second = "guided re-encoding" + (" + ITM" if isinstance(model, FusionModel) else " + cosine") if guided else "ITM"
    return {**result, **metrics, "rerank_k": rerank_k, "second_stage": second, **ceiling_of(described),
            "pairs": count}


@torch.no_grad()
def evaluate_zeroshot(model: Model, tokenizer: WordTokenizer, world: ToyWorld, count: int | None = None,
                      batch_size: int = 128) -> dict:
    """Single-object images classified by colour x shape with prompt ensembles: acc1, acc5, mean per-class recall."""
    count = items_to_use(world, count)

    def encode(texts: list[str]) -> torch.Tensor:
        return model.encode_text(*tokenizer(texts), normalize=True)

    classifier = zeroshot_classifier(encode, class_names(), ZEROSHOT_TEMPLATES)
    image_emb = _image_states(model, world, count, batch_size).emb
    labels = torch.tensor([world.classification(i)[1] for i in range(count)])
    return {**zeroshot_metrics(image_emb @ classifier.T, labels), "images": count, "classes": len(class_names())}


@torch.no_grad()
def evaluate_vqa(model: Model, tokenizer: WordTokenizer, world: ToyWorld, count: int | None = None,
                 batch_size: int = 128) -> dict:
    """Accuracy of the answer classifier, overall and per question type."""
    if not isinstance(model, FusionModel):
        raise ValueError("VQA needs a fusion model (kind='fusion' with a VQA head), e.g. --model toy-fusion")
    count = items_to_use(world, count)
    scenes = [world.scene(i) for i in range(count)]
    predictions: list[str] = []
    for idx in _chunks(count, batch_size, "questions"):
        ids, mask = tokenizer([scenes[i].question for i in idx])
        pixels = to_pixels([world.image(i) for i in idx], model.config.vision)
        predictions += [ANSWERS[a] for a in model.vqa_logits(pixels, ids, mask).argmax(-1).tolist()]
    answers = [s.answer for s in scenes]
    return {"vqa_accuracy": vqa_accuracy(predictions, answers),
            "vqa_accuracy_by_type": vqa_accuracy_by_type(predictions, answers, [s.question_type for s in scenes]),
            "questions": count}


def evaluate(model: Model, tokenizer: WordTokenizer, task: str, data: str = "toyworld:val",
             batch_size: int = 128, rerank_k: int = 16) -> dict:
    """Run one task and return its metrics with the model's params, GFLOPs and the wall time."""
    if task not in TASKS:
        raise ValueError(f"--task {task!r}: expected one of {TASKS}")
    if rerank_k < 0:
        raise ValueError(f"--rerank-k {rerank_k}: expected 0 (no re-ranking) or a positive number")
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: expected a positive number of items per forward pass")
    split, count = parse_data(data, task)
    world = ToyWorld(split, image_size=model.config.vision.image_size)
    model.eval()
    start = time.perf_counter()
    if task == "retrieval":
        metrics = evaluate_retrieval(model, tokenizer, world, count, batch_size, rerank_k)
    elif task == "zeroshot":
        metrics = evaluate_zeroshot(model, tokenizer, world, count, batch_size)
    else:
        metrics = evaluate_vqa(model, tokenizer, world, count, batch_size)
    return {"task": task, "data": f"toyworld:{split}", "model": model.config.name, "metrics": metrics,
            "costs": _costs(model, tokenizer.max_length), "flop_counter": FLOP_COUNTER,
            "seconds": time.perf_counter() - start}
