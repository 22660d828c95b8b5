"""What the scene-loss and pooling pages score a toy-clip checkpoint by: the cell probe (perception), and with
``retrieval`` also R@1 both ways and attribute binding (whether perception reaches the embedding)."""

from __future__ import annotations

from vlprune.data.toyworld import ToyWorld
from vlprune.eval.binding import binding_accuracy
from vlprune.eval.cell_probe import cell_probe_accuracy
from vlprune.eval.evaluate import evaluate
from vlprune.models.io import load, load_tokenizer


def toy_clip_scores(model_dir: str, count: int, probe_count: int, retrieval: bool) -> dict[str, float]:
    """``probe_*`` on ``count`` val scenes (probes fit on ``probe_count`` train scenes); with ``retrieval``,
    ``IR@1`` / ``TR@1`` on ``count`` val pairs and ``binding_*``."""
    model, tokenizer = load(model_dir), load_tokenizer("toy-clip")
    row = cell_probe_accuracy(model, ToyWorld("train"), ToyWorld("val"), probe_count, count)
    if retrieval:
        metrics = evaluate(model, tokenizer, "retrieval", f"toyworld:val:{count}")["metrics"]
        row.update({"IR@1": metrics["image_retrieval_recall@1"], "TR@1": metrics["text_retrieval_recall@1"]})
        row.update(binding_accuracy(model, tokenizer, ToyWorld("val"), count))
    return row
