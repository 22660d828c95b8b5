"""Evaluate a model on a task: retrieval (with ITM re-ranking for fusion models), zero-shot classification
or VQA, on any ``--data`` set (``vlprune.data.sources``). Every result also records the model's parameters and
analytic GFLOPs (docs/token-reduction.md), in CLIP_benchmark's file layout."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from tqdm import tqdm

from vlprune.data.pairs import to_pixels
from vlprune.data.sources import (
    ClassificationData,
    DataSpec,
    RetrievalData,
    VQAData,
    open_classification,
    open_retrieval,
    open_vqa,
    parse_data,
)
from vlprune.data.toyworld import ANSWERS, ToyWorld
from vlprune.eval.vqa import vqa_accuracy, vqa_accuracy_by_type, vqa_scores
from vlprune.eval.zeroshot import zeroshot_classifier, zeroshot_metrics
from vlprune.models.fusion import FusionModel
from vlprune.models.io import Model
from vlprune.models.layers import TokenState
from vlprune.reduce.base import apply, reduced_gflops, token_schedule
from vlprune.retrieval import hits_at, rerank_topk, retrieval_metrics
from vlprune.tokenizer import WordTokenizer

TASKS = ("retrieval", "zeroshot", "vqa")
CLIP_BENCHMARK_TASKS = {"retrieval": "zeroshot_retrieval", "zeroshot": "zeroshot_classification", "vqa": "vqa"}
"""Our ``--task`` names -> the ``task`` CLIP_benchmark writes (VQA is not a CLIP_benchmark task; it keeps its name)."""
FLOP_COUNTER = "analytic, GFLOPs = 2 x MACs, matmuls incl. attention"


def _toy_spec(split: str, count: int | None) -> DataSpec:
    """``toyworld:SPLIT[:COUNT]`` as a parsed spec (a count beyond the split is refused there)."""
    return parse_data(f"toyworld:{split}" + (f":{count}" if count is not None else ""))


def _retrieval_data(data: ToyWorld | RetrievalData, count: int | None) -> RetrievalData:
    """A toy-world split (its first ``count`` items; more than it holds is refused, never clamped) or a set."""
    if isinstance(data, RetrievalData):
        return data
    return open_retrieval(_toy_spec(data.split, count), data.image_size)


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
def _image_states(model: Model, data, count: int, batch_size: int, keep_pixels: bool = False) -> _Images:
    """Embeddings and final tokens of the first ``count`` images of ``data`` (anything with ``image(i)``)."""
    pixels, embs, tokens = [], [], []
    for idx in _chunks(count, batch_size, "images"):
        batch = to_pixels([data.image(i) for i in idx], model.config.vision)
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
                     text_image: list[int], truth: torch.Tensor | None, per_item: bool = False) -> dict:
    """Recall after re-ranking each query's top ``rerank_k`` first-stage candidates with ``itm(image_rows,
    text_cols)`` (one score per pair), both directions; ``text_image`` and ``truth`` as ``retrieval_metrics``'s
    ``text_to_image`` and ``text_positives``."""
    i2t = rerank_topk(similarity, rerank_k, itm, batch_size)
    t2i = rerank_topk(similarity.T, rerank_k, lambda r, c: itm(c, r), batch_size)
    text_side = retrieval_metrics(i2t, text_image, text_positives=truth)
    image_side = retrieval_metrics(t2i.T, text_image, text_positives=truth)
    metrics = {k: (text_side if "text_retrieval" in k else image_side)[k] for k in text_side}
    for prefix in ("", "semantic_"):
        keys = [k for k in metrics if k.startswith((prefix + "image_retrieval", prefix + "text_retrieval"))]
        metrics[prefix + "mean_recall"] = float(np.mean([metrics[k] for k in keys]))
    if per_item:
        metrics["per_item"] = {"image_retrieval_hit@1": hits_at(t2i.T, text_image)["image_retrieval_hit@1"],
                               "text_retrieval_hit@1": hits_at(i2t, text_image)["text_retrieval_hit@1"]}
    return metrics


@torch.no_grad()
def evaluate_retrieval(model: Model, tokenizer: WordTokenizer, data: ToyWorld | RetrievalData,
                       count: int | None = None, batch_size: int = 128, rerank_k: int = 16,
                       per_item: bool = False) -> dict:
    """R@1/5/10 both ways (CLIP_benchmark keys) on a retrieval set (or a toy-world split's first ``count``
    items); toy-world sets add semantic recall and the split's ceiling. ``per_item``: also each query's hit@1
    (``metrics["per_item"]``), for paired comparisons (``vlprune.experiments``).

    Fusion models re-rank each query's top ``rerank_k`` ITC candidates with ITM (``rerank_k=0``: ITC only).
    A text-guided method (ELIP λ < 1, TRIPS) cannot embed an image before it knows the text, so retrieval is
    two-stage: the unguided base model ranks everything, then each query's top ``rerank_k`` pairs are
    re-encoded with the pair's text as guide and re-scored (cosine for CLIP, ITM for fusion models).
    """
    data = _retrieval_data(data, count)
    method = model.reduction
    guided = method is not None and method.text_guided
    if guided and not rerank_k:
        raise ValueError(f"{method.method} needs the text to encode an image: retrieval with it re-scores each "
                         "query's top-k, so --rerank-k must be >= 1")
    if guided:
        apply(model, None)  # the first stage is unguided: the base model ranks
    images = _image_states(model, data, len(data), batch_size, keep_pixels=guided)
    texts = _text_states(model, tokenizer, data.captions, batch_size, with_guides=guided)
    if guided:
        apply(model, method)
    similarity = images.emb @ texts.emb.T
    truth = torch.from_numpy(data.described) if data.described is not None else None
    first_stage = retrieval_metrics(similarity, data.text_image, text_positives=truth)
    counts = {"pairs": len(data.captions), "images": len(data), "texts": len(data.captions)}
    score = _pair_scorer(model, images, texts, guided) if rerank_k else None
    if score is None:
        items = {"per_item": hits_at(similarity, data.text_image)} if per_item else {}
        return {**first_stage, **data.ceiling(), **counts, **items}
    result: dict = {"first_stage_" + k: v for k, v in first_stage.items() if not k.startswith("semantic")}
    metrics = reranked_metrics(similarity, rerank_k, score, batch_size, data.text_image, truth, per_item)
    second = "guided re-encoding" + (" + ITM" if isinstance(model, FusionModel) else " + cosine") if guided else "ITM"
    return {**result, **metrics, "rerank_k": rerank_k, "second_stage": second, **data.ceiling(), **counts}


def heldout_retrieval(tokenizer: WordTokenizer, pairs: int) -> Callable[[Model], dict]:
    """``evaluate`` for ``vlprune.train.prune_recipe.run_recipe``: retrieval on the first ``pairs`` pairs of the toy
    world's test split."""
    def heldout(model: Model) -> dict:
        world = ToyWorld("test", image_size=model.config.vision.image_size)
        metrics = evaluate_retrieval(model.eval(), tokenizer, world, pairs)
        return {k: v for k, v in metrics.items() if "recall" in k and not k.startswith("semantic")}

    return heldout


@torch.no_grad()
def evaluate_zeroshot(model: Model, tokenizer: WordTokenizer, data: ToyWorld | ClassificationData,
                      count: int | None = None, batch_size: int = 128) -> dict:
    """Images classified with prompt ensembles: acc1, acc5, mean per-class recall (the toy world: single-object
    images by colour x shape)."""
    if not isinstance(data, ClassificationData):
        data = open_classification(_toy_spec("zeroshot", count), image_size=data.image_size)

    def encode(texts: list[str]) -> torch.Tensor:
        return model.encode_text(*tokenizer(texts), normalize=True)

    templates = [t.replace("{c}", "{}") for t in data.templates]
    classifier = zeroshot_classifier(encode, data.classnames, templates)
    image_emb = _image_states(model, data, len(data), batch_size).emb
    labels = torch.tensor(data.labels)
    return {**zeroshot_metrics(image_emb @ classifier.T, labels), "images": len(data),
            "classes": len(data.classnames)}


@torch.no_grad()
def evaluate_vqa(model: Model, tokenizer: WordTokenizer, data: ToyWorld | VQAData, count: int | None = None,
                 batch_size: int = 128, answers: list[str] | None = None, per_item: bool = False) -> dict:
    """Accuracy of the answer classifier over ``answers`` (the model's answer vocabulary; the toy world's by
    default), overall and per question type; multi-annotator answers score as VQA v2 does. Questions whose
    reference answers are all outside the vocabulary are counted (``out_of_vocabulary``): the model cannot get
    them right, as in the VQA evaluation."""
    if not isinstance(model, FusionModel) or model.vqa_head is None:
        raise ValueError("VQA needs a fusion model with a VQA head (kind='fusion', num_answers > 0), e.g. --model "
                         "toy-fusion")
    vocabulary = list(ANSWERS if answers is None else answers)
    if len(vocabulary) != model.config.num_answers:
        raise ValueError(f"the model has {model.config.num_answers} answers but the answer vocabulary has "
                         f"{len(vocabulary)}; save the model's answer list beside it")
    if not isinstance(data, VQAData):
        data = open_vqa(_toy_spec(data.split, count), data.image_size)
    predictions: list[str] = []
    for idx in _chunks(len(data), batch_size, "questions"):
        ids, mask = tokenizer([data.questions[i] for i in idx])
        pixels = to_pixels([data.image(i) for i in idx], model.config.vision)
        predictions += [vocabulary[a] for a in model.vqa_logits(pixels, ids, mask).argmax(-1).tolist()]
    references = [r[0] if len(r) == 1 else r for r in data.answers]
    known = set(vocabulary)
    items = {"per_item": {"vqa_score": vqa_scores(predictions, references)}} if per_item else {}
    return {**items, "vqa_accuracy": vqa_accuracy(predictions, references),
            "vqa_accuracy_by_type": vqa_accuracy_by_type(predictions, references, data.question_types),
            "out_of_vocabulary": sum(not known & set(r) for r in data.answers), "questions": len(data)}


def evaluate(model: Model, tokenizer: WordTokenizer, task: str, data: str = "toyworld:val",
             batch_size: int = 128, rerank_k: int = 16, model_name: str | None = None,
             classnames: str | None = None, templates: str | None = None, truncate: bool = False,
             answers: list[str] | None = None, per_item: bool = False) -> dict:
    """Run one task on a ``--data`` set and return CLIP_benchmark's result layout (``dataset``, ``model``,
    ``pretrained``, ``task``, ``metrics``, ``language``) plus the model's params, GFLOPs, method and wall time.
    ``model_name``: what to record as the model (default: its config name). ``truncate``: cut texts longer than
    the model's context as CLIP_benchmark does (default: such a text is an error naming its length). ``answers``:
    the VQA head's answer vocabulary (default: the toy world's). ``per_item``: retrieval and VQA also return each
    item's score (``metrics["per_item"]``)."""
    if task not in TASKS:
        raise ValueError(f"--task {task!r}: expected one of {TASKS}")
    if rerank_k < 0:
        raise ValueError(f"--rerank-k {rerank_k}: expected 0 (no re-ranking) or a positive number")
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: expected a positive number of items per forward pass")
    if (classnames or templates) and task != "zeroshot":
        raise ValueError("--classnames / --templates are for --task zeroshot")
    spec = parse_data(data)
    size = model.config.vision.image_size
    if task == "retrieval":
        dataset = open_retrieval(spec, size)
    elif task == "zeroshot":
        dataset = open_classification(spec, classnames, templates, size)
    else:
        dataset = open_vqa(spec, size)
    model.eval()
    start = time.perf_counter()
    costs = _costs(model, tokenizer.max_length)
    tokenizer = partial(tokenizer, truncate=True) if truncate else tokenizer
    if task == "retrieval":
        metrics = evaluate_retrieval(model, tokenizer, dataset, batch_size=batch_size, rerank_k=rerank_k,
                                     per_item=per_item)
    elif task == "zeroshot":
        metrics = evaluate_zeroshot(model, tokenizer, dataset, batch_size=batch_size)
    else:
        metrics = evaluate_vqa(model, tokenizer, dataset, batch_size=batch_size, answers=answers, per_item=per_item)
    name = model_name or model.config.name
    return {"dataset": dataset.name, "model": name, "pretrained": name, "task": CLIP_BENCHMARK_TASKS[task],
            "metrics": metrics, "language": "en", "data": spec.text, "truncated_texts": truncate, "costs": costs,
            "flop_counter": FLOP_COUNTER, "seconds": time.perf_counter() - start}
