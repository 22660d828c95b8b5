"""Token-keep maps of SmartTrim: which image patches each vision layer kept, and which question words survived
the last fusion layer, for a few inputs (a PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from vlprune.data.pairs import to_pixels  # noqa: E402
from vlprune.data.toyworld import ToyWorld  # noqa: E402
from vlprune.tokenizer import WordTokenizer  # noqa: E402
from vlprune.trim.model import SmartTrim  # noqa: E402


@torch.no_grad()
def token_maps(trim: SmartTrim, tokenizer: WordTokenizer, world: ToyWorld, indices: Sequence[int], path: str | Path,
               layers: Sequence[int] = (0, 3, 6, 9, 11)) -> Path:
    """One row per input: the image, then the patches kept entering each of ``layers`` (removed ones dimmed)."""
    vision, text = trim.model.config.vision, trim.model.config.text
    grid = vision.image_size // vision.patch_size
    fig, axes = plt.subplots(len(indices), len(layers) + 1, figsize=(2 * (len(layers) + 1), 2.3 * len(indices)),
                             squeeze=False)
    for row, index in enumerate(indices):
        scene, image = world.scene(index), world.image(index)
        ids, mask = tokenizer([scene.question])
        record = trim(to_pixels([image], vision), ids, mask, "masked").record
        words = tokenizer.decode(ids[0]).split()
        last = record.keep[f"tokens:text.{text.num_layers - 1}"][0, :len(words)].tolist()
        kept_words = " ".join(w if k > 0.5 else f"[{w}]" for w, k in zip(words, last))
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(f"{len(scene.objects)} objects\n{kept_words}\n→ {scene.answer}", fontsize=6)
        for col, layer in enumerate(layers, start=1):
            keep = record.keep[f"tokens:vision.{layer}"][0].reshape(grid, grid).numpy()
            shade = np.kron(keep, np.ones((vision.patch_size, vision.patch_size)))[..., None]
            axes[row, col].imshow((image * (0.25 + 0.75 * shade)).astype(np.uint8))
            axes[row, col].set_title(f"layer {layer}: {int(keep.sum())}/{grid * grid}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
