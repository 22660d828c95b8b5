"""One evaluation run as data, computed once: a run is keyed by a hash of its spec and the SHA-256 of the weights it
reads, and its JSON (metrics plus each item's score) is kept under that key, so re-running is incremental and a
finished run is never recomputed. New weights give new keys; the old runs are not reused for them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from vlprune.data.sources import open_retrieval, open_vqa, parse_data
from vlprune.eval.evaluate import evaluate_retrieval, evaluate_vqa
from vlprune.method_registry import parse_method
from vlprune.models.io import load, load_tokenizer, weights_sha256
from vlprune.reduce import apply
from vlprune.reduce.base import vision_gflops

RUN_TASKS = ("retrieval", "vqa")


@dataclass(frozen=True)
class EvalSpec:
    """Evaluate bundled model (or checkpoint) ``model`` with token method ``method`` (a ``NAME:k=v,...`` spec)
    on ``data`` for ``task``; ``rerank_k`` as ``vlprune eval``'s."""

    model: str
    task: str
    data: str
    method: str = "none"
    rerank_k: int = 16

    def __post_init__(self) -> None:
        if self.task not in RUN_TASKS:
            raise ValueError(f"EvalSpec.task={self.task!r}: expected one of {RUN_TASKS}")
        parse_data(self.data), parse_method(self.method)

    def key(self, weights: str) -> str:
        """16 hex digits of SHA-256(spec JSON + weights SHA-256)."""
        text = json.dumps(asdict(self), sort_keys=True) + weights
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_eval(spec: EvalSpec, store: str | Path) -> dict:
    """The run's record, ``store/<key>.json``: computed (and written) only when absent."""
    weights = weights_sha256(spec.model)
    path = Path(store) / f"{spec.key(weights)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    model, tokenizer = load(spec.model), load_tokenizer(spec.model)
    apply(model, parse_method(spec.method)[1])
    size = model.config.vision.image_size
    if spec.task == "retrieval":
        metrics = evaluate_retrieval(model, tokenizer, open_retrieval(parse_data(spec.data), size),
                                     rerank_k=spec.rerank_k, per_item=True)
    else:
        metrics = evaluate_vqa(model, tokenizer, open_vqa(parse_data(spec.data), size), per_item=True)
    record = {"spec": asdict(spec), "weights_sha256": weights, "vision_gflops": vision_gflops(model),
              "metrics": metrics}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(path)
    return record
