"""Attribute binding: does a caption pick its own image over a twin that differs in one attribute?

A compositionality probe in the spirit of ARO / Winoground, built from the toy world's twins
(``ToyWorld.twin``): the twin changes the colour, shape, size or cell of one mentioned object, keeps the
background and noise, and neither caption describes the other image. Chance is 0.5 per attribute; a model
that has learned only colour (feature suppression) scores ~1.0 on colour and ~0.5 on the rest. Ties count
as failures, as in ``vlprune.retrieval``.
"""

from __future__ import annotations

import torch

from vlprune.data.pairs import to_pixels
from vlprune.data.toyworld import Scene, ToyWorld, render
from vlprune.models.io import Model
from vlprune.tokenizer import WordTokenizer

ATTRIBUTES = ("colour", "shape", "size", "cell")


def changed_attribute(scene: Scene, twin: Scene) -> str:
    """Which attribute of which object the twin changed (``ToyWorld.twin`` changes exactly one)."""
    before = set(scene.objects) - set(twin.objects)
    after = set(twin.objects) - set(scene.objects)
    if len(before) != 1 or len(after) != 1:
        raise ValueError("the scenes differ in more than one object; pass a scene and its twin")
    old, new = before.pop(), after.pop()
    changed = [a for a in ATTRIBUTES if getattr(old, a) != getattr(new, a)]
    if len(changed) != 1:
        raise ValueError(f"the twin changed {changed}, expected exactly one attribute")
    return changed[0]


@torch.no_grad()
def binding_accuracy(model: Model, tokenizer: WordTokenizer, world: ToyWorld, count: int | None = None,
                     batch_size: int = 128) -> dict[str, float]:
    """Per attribute (and ``binding_mean`` over the four): the fraction of scenes whose caption scores its own
    image strictly above its twin's image, by the model's image-text embedding similarity."""
    count = len(world) if count is None else count
    if not 0 < count <= len(world):
        raise ValueError(f"count={count}: expected 1..{len(world)} scenes of split {world.split!r}")
    model.eval()
    wins: dict[str, list[bool]] = {a: [] for a in ATTRIBUTES}
    for start in range(0, count, batch_size):
        indices = range(start, min(count, start + batch_size))
        scenes = [world.scene(i) for i in indices]
        twins = [world.twin(i) for i in indices]
        ids, mask = tokenizer([s.caption for s in scenes])
        text = model.encode_text(ids, mask, normalize=True)
        own = model.encode_image(to_pixels([render(s, world.image_size) for s in scenes], model.config.vision),
                                 normalize=True)
        other = model.encode_image(to_pixels([render(t, world.image_size) for t in twins], model.config.vision),
                                   normalize=True)
        won = ((text * own).sum(-1) > (text * other).sum(-1)).tolist()
        for scene, twin, ok in zip(scenes, twins, won):
            wins[changed_attribute(scene, twin)].append(ok)
    out = {f"binding_{a}": sum(w) / len(w) for a, w in wins.items() if w}
    out["binding_mean"] = sum(out.values()) / len(out)
    return out
