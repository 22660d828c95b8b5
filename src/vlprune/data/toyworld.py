"""The toy world: a seeded, procedural world of captioned scenes and targeted questions.

A scene is a 4x4 grid of cells on a noisy background; 2-4 cells hold an object (colour x shape x size).
Captions mention a *subset* of the objects (as real captions do) and questions target one object, so
text guidance has something to find. Everything is a pure function of (split seed, index): no files,
no state, identical on every machine and every rank.

Ambiguity is measured, not assumed: ``ceiling`` computes, for a set of pairs, the best R@1 any model
could reach (a caption can truly describe several images).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np

from vlprune.tokenizer import WordTokenizer

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (235, 220, 50),
    "purple": (150, 60, 200), "orange": (245, 140, 30), "white": (240, 240, 240), "cyan": (50, 210, 220),
}
SHAPES = ("square", "circle", "triangle", "cross", "diamond")
SIZES = ("small", "big")
ROWS = ("top", "upper", "lower", "bottom")
COLS = ("left", "midleft", "midright", "right")
GRID = 4
BLINDABLE = ("colour", "shape", "size", "cell")  # what ``ceiling(..., blind=...)`` can pretend a model cannot see
SPLIT_SEEDS = {"train": 1, "val": 2, "test": 3, "zeroshot": 4}
SPLIT_SIZES = {"train": 200_000, "val": 10_000, "test": 10_000, "zeroshot": 1_000}
"""Scenes per split; every scene is a pure function of (split, index), so a larger split keeps its first items."""

QUESTION_TYPES = ("colour", "shape", "size", "count", "exists", "where")
ANSWERS: tuple[str, ...] = (tuple(COLOURS) + SHAPES + SIZES + ("0", "1", "2", "3", "4", "yes", "no")
                            + tuple(f"{r}-{c}" for r in ROWS for c in COLS))


@dataclass(frozen=True)
class ToyObject:
    colour: str
    shape: str
    size: str
    cell: int  # row * GRID + col

    @property
    def where(self) -> str:
        return f"{ROWS[self.cell // GRID]} {COLS[self.cell % GRID]}"

    def phrase(self, with_position: bool = True) -> str:
        text = f"a {self.size} {self.colour} {self.shape}"
        return f"{text} at {self.where}" if with_position else text


@dataclass(frozen=True)
class Mention:
    """What a caption says about one object: position may be left out."""

    obj: ToyObject
    with_position: bool

    def matches(self, other: ToyObject, blind: tuple[str, ...] = ()) -> bool:
        """``other`` is the object this mention describes; attributes in ``blind`` (``BLINDABLE``) are not compared,
        as by a model that cannot see them."""
        same = all(getattr(self.obj, a) == getattr(other, a) for a in ("colour", "shape", "size") if a not in blind)
        return same and (not self.with_position or "cell" in blind or self.obj.cell == other.cell)


@dataclass(frozen=True)
class Scene:
    objects: tuple[ToyObject, ...]
    mentions: tuple[Mention, ...]
    question: str
    answer: str
    question_type: str
    question_cell: int  # the cell of the object the question is about; -1 for count / exists questions
    background: tuple[int, int, int]
    seed: int

    @property
    def caption(self) -> str:
        return " and ".join(m.obj.phrase(m.with_position) for m in self.mentions)

    def described_by(self, mentions: tuple[Mention, ...], blind: tuple[str, ...] = ()) -> bool:
        """True if every mentioned object matches a distinct object of this scene (``blind``: see
        ``Mention.matches``)."""
        return _assign(list(mentions), list(self.objects), blind)


def _assign(mentions: list[Mention], objects: list[ToyObject], blind: tuple[str, ...]) -> bool:
    if not mentions:
        return True
    first, rest = mentions[0], mentions[1:]
    return any(first.matches(o, blind) and _assign(rest, objects[:i] + objects[i + 1:], blind)
               for i, o in enumerate(objects))


def _rng(split_seed: int, index: int, world_seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{world_seed}/{split_seed}/{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class ToyWorld:
    """Deterministic generator of one split. ``len`` is the split size; ``scene(i)`` and ``image(i)`` are pure."""

    def __init__(self, split: str = "train", image_size: int = 64, seed: int = 0, size: int | None = None,
                 min_objects: int = 2, max_objects: int = 4, omit_position_rate: float = 0.2):
        if split not in SPLIT_SEEDS:
            raise ValueError(f"split={split!r}: expected one of {sorted(SPLIT_SEEDS)}")
        if image_size < 32 or image_size % GRID:
            raise ValueError(f"image_size={image_size}: expected a multiple of {GRID} that is >= 32")
        if not 1 <= min_objects <= max_objects <= GRID * GRID:
            raise ValueError(f"min_objects={min_objects}, max_objects={max_objects}: need 1 <= min <= max <= 16")
        if not 0.0 <= omit_position_rate <= 1.0:
            raise ValueError(f"omit_position_rate={omit_position_rate}: expected a value in [0, 1]")
        self.split, self.image_size, self.seed = split, image_size, seed
        self.size = SPLIT_SIZES[split] if size is None else size
        if self.size <= 0:
            raise ValueError(f"size={self.size}: expected a positive number of scenes")
        self.min_objects, self.max_objects = (1, 1) if split == "zeroshot" else (min_objects, max_objects)
        self.omit_position_rate = omit_position_rate

    def __len__(self) -> int:
        return self.size

    def scene(self, index: int) -> Scene:
        if not 0 <= index < self.size:
            raise IndexError(f"scene {index} is outside split {self.split!r} of size {self.size}")
        rng = _rng(SPLIT_SEEDS[self.split], index, self.seed)
        n = int(rng.integers(self.min_objects, self.max_objects + 1))
        cells = rng.choice(GRID * GRID, size=n, replace=False)
        objects = tuple(
            ToyObject(str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), str(rng.choice(SIZES)), int(c))
            for c in cells
        )
        n_mention = n if n <= 2 else int(rng.integers(2, n + 1))
        mentioned = rng.choice(n, size=n_mention, replace=False)
        mentions = tuple(Mention(objects[i], bool(rng.random() >= self.omit_position_rate)) for i in mentioned)
        if n_mention >= 2 and not any(m.with_position for m in mentions):
            mentions = (Mention(mentions[0].obj, True),) + mentions[1:]
        qtype, question, answer, cell = _question(objects, rng)
        background = tuple(int(v) for v in rng.integers(20, 90, size=3))
        return Scene(objects, mentions, question, answer, qtype, cell, background, int(rng.integers(2**31)))

    def image(self, index: int) -> np.ndarray:
        """The scene rendered as (H, W, 3) uint8."""
        return render(self.scene(index), self.image_size)

    def twin(self, index: int, variant: int = 0) -> Scene:
        """A hard negative of ``scene(index)``: one mentioned object differs in one attribute (colour, shape,
        size or cell), the caption says so, the background and noise are the same, and neither caption
        describes the other scene. ``variant`` draws another one. Training on a scene with its twins teaches
        what in-batch negatives rarely test (NegCLIP-style hard negatives, built from the generator's
        knowledge instead of text edits)."""
        scene = self.scene(index)
        rng = _rng(SPLIT_SEEDS[self.split], index, self.seed + 7919 * (variant + 1))
        for _ in range(32):
            k = int(rng.integers(len(scene.mentions)))
            changed = _alter(scene.mentions[k].obj, scene.objects, rng)
            objects = tuple(changed if o == scene.mentions[k].obj else o for o in scene.objects)
            mentions = tuple(Mention(changed if i == k else m.obj, m.with_position)
                             for i, m in enumerate(scene.mentions))
            qtype, question, answer, cell = _question(objects, rng)
            twin = Scene(objects, mentions, question, answer, qtype, cell, scene.background, scene.seed)
            if not twin.described_by(scene.mentions) and not scene.described_by(mentions):
                return twin
        raise RuntimeError(f"no twin found for scene {index} of split {self.split!r}")  # pragma: no cover

    def family(self, index: int, twins: int) -> list[Scene]:
        """``scene(index)`` and ``twins`` of its twins with pairwise different captions: a group of hard
        negatives for one batch (colour alone cannot tell most of them apart, which stops the easy feature
        from suppressing the others — feature suppression in contrastive learning)."""
        family, captions, variant = [self.scene(index)], {self.scene(index).caption}, 0
        while len(family) <= twins:
            twin = self.twin(index, variant)
            variant += 1
            if twin.caption not in captions:
                family.append(twin)
                captions.add(twin.caption)
            if variant > 64 * (twins + 1):
                raise RuntimeError(f"scene {index} has fewer than {twins} distinct twins")  # pragma: no cover
        return family

    def classification(self, index: int) -> tuple[np.ndarray, int]:
        """Zero-shot split: a single-object image and its class index into ``class_names()``."""
        obj = self.scene(index).objects[0]
        return self.image(index), class_names().index(f"{obj.colour} {obj.shape}")


def _alter(obj: ToyObject, objects: tuple[ToyObject, ...], rng: np.random.Generator) -> ToyObject:
    """``obj`` with one attribute changed to another value (a cell: to an empty one)."""
    attribute = str(rng.choice(("colour", "shape", "size", "cell")))
    if attribute == "colour":
        return replace(obj, colour=str(rng.choice([c for c in COLOURS if c != obj.colour])))
    if attribute == "shape":
        return replace(obj, shape=str(rng.choice([s for s in SHAPES if s != obj.shape])))
    if attribute == "size":
        return replace(obj, size=SIZES[1 - SIZES.index(obj.size)])
    taken = {o.cell for o in objects}
    return replace(obj, cell=int(rng.choice([c for c in range(GRID * GRID) if c not in taken])))


# class 0 of each attribute is "no object" (image) or "nothing said" (caption)
# colour, shape, size codes of an object in a cell; 0 is reserved for "none"
ATTRIBUTE_CLASSES = {"colour": len(COLOURS) + 1, "shape": len(SHAPES) + 1, "size": len(SIZES) + 1}
# entries per colour of ``colour_targets``: rows, columns, shapes, sizes
COLOUR_TARGET_WIDTH = 2 * GRID + len(SHAPES) + len(SIZES)


def _codes(colour: str, shape: str, size: str) -> tuple[int, int, int]:
    return list(COLOURS).index(colour) + 1, SHAPES.index(shape) + 1, SIZES.index(size) + 1


def cell_targets(scene: Scene) -> np.ndarray:
    """Per-cell targets for scene supervision (``vlprune.train.scene``), int64 (3 attributes, cells): what each
    cell of the image holds. Class 0 is "no object"."""
    image = np.zeros((3, GRID * GRID), dtype=np.int64)
    for obj in scene.objects:
        image[:, obj.cell] = _codes(obj.colour, obj.shape, obj.size)
    return image


def colour_targets(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colour-bound targets for scene supervision, each (colours, rows + columns + shapes + sizes): multi-hot of
    where the objects of each colour are and what they are (image), what the caption says of each colour
    (caption), and which caption entries are decided (False: row and column of a colour mentioned without a
    position — the caption leaves them open)."""
    shape_at, size_at = 2 * GRID, 2 * GRID + len(SHAPES)
    image = np.zeros((len(COLOURS), COLOUR_TARGET_WIDTH), dtype=np.float32)
    caption, known = np.zeros_like(image), np.ones_like(image, dtype=bool)
    for target, obj, placed in ([(image, o, True) for o in scene.objects]
                                + [(caption, m.obj, m.with_position) for m in scene.mentions]):
        c = list(COLOURS).index(obj.colour)
        target[c, [shape_at + SHAPES.index(obj.shape), size_at + SIZES.index(obj.size)]] = 1.0
        if placed:
            target[c, [obj.cell // GRID, GRID + obj.cell % GRID]] = 1.0
        else:
            known[c, :shape_at] = False
    return image, caption, known


def class_names() -> list[str]:
    """Zero-shot classes: colour x shape."""
    return [f"{c} {s}" for c in COLOURS for s in SHAPES]


ZEROSHOT_TEMPLATES = ("a {}", "a small {}", "a big {}")


def _question(objects: tuple[ToyObject, ...], rng: np.random.Generator) -> tuple[str, str, str, int]:
    """A question about one object (or the scene, for counts and existence) with an answer from ``ANSWERS``:
    (type, question, answer, the object's cell or -1)."""
    qtype = str(rng.choice(QUESTION_TYPES))
    target = objects[int(rng.integers(len(objects)))]
    if qtype == "colour":
        return qtype, f"what colour is the object at {target.where}", target.colour, target.cell
    if qtype == "shape":
        return qtype, f"what shape is the object at {target.where}", target.shape, target.cell
    if qtype == "size":
        return qtype, f"what size is the object at {target.where}", target.size, target.cell
    if qtype == "count":
        colour = str(rng.choice(list(COLOURS))) if rng.random() < 0.5 else target.colour
        return qtype, f"how many {colour} objects are there", str(sum(o.colour == colour for o in objects)), -1
    if qtype == "exists":
        if rng.random() < 0.5:
            colour, shape = target.colour, target.shape
        else:
            colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
        found = any(o.colour == colour and o.shape == shape for o in objects)
        return qtype, f"is there a {colour} {shape}", "yes" if found else "no", -1
    same_kind = [o for o in objects if (o.colour, o.shape) == (target.colour, target.shape)]
    if len(same_kind) > 1:  # "where" needs a unique referent; fall back to its colour
        return "colour", f"what colour is the object at {target.where}", target.colour, target.cell
    row, col = target.where.split()
    return qtype, f"where is the {target.colour} {target.shape}", f"{row}-{col}", target.cell


def _shape_mask(shape: str, extent: int) -> np.ndarray:
    """Boolean mask (extent, extent) of a shape filling its box."""
    yy, xx = np.mgrid[0:extent, 0:extent].astype(np.float32) + 0.5
    c = extent / 2.0
    dy, dx = yy - c, xx - c
    if shape == "square":
        return np.ones((extent, extent), dtype=bool)
    if shape == "circle":
        return dy**2 + dx**2 <= c**2
    if shape == "diamond":
        return np.abs(dy) + np.abs(dx) <= c
    if shape == "cross":
        arm = max(extent / 6.0, 1.0)
        return (np.abs(dy) <= arm) | (np.abs(dx) <= arm)
    if shape == "triangle":  # apex up
        return (yy >= 0) & (np.abs(dx) <= yy / 2.0 + 0.5)
    raise ValueError(f"unknown shape {shape!r}")


def object_extent(size: str, image_size: int) -> int:
    """Side in pixels of the box an object of ``size`` fills (its cell is ``image_size / GRID``)."""
    return int(round(image_size // GRID * (0.9 if size == "big" else 0.55)))


def render(scene: Scene, image_size: int) -> np.ndarray:
    rng = np.random.default_rng(scene.seed)
    img = np.empty((image_size, image_size, 3), dtype=np.float32)
    img[:] = scene.background
    img += rng.normal(0.0, 8.0, size=img.shape)
    cell = image_size // GRID
    for obj in scene.objects:
        extent = object_extent(obj.size, image_size)
        slack = cell - extent
        top = (obj.cell // GRID) * cell + int(rng.integers(0, slack + 1))
        left = (obj.cell % GRID) * cell + int(rng.integers(0, slack + 1))
        colour = np.clip(np.array(COLOURS[obj.colour]) + rng.integers(-20, 21, size=3), 0, 255)
        mask = _shape_mask(obj.shape, extent)
        patch = img[top:top + extent, left:left + extent]
        patch[mask] = colour
    return np.clip(img, 0, 255).astype(np.uint8)


def ceiling(world: ToyWorld, count: int | None = None, blind: tuple[str, ...] = ()) -> dict[str, float]:
    """Best achievable R@1 on the first ``count`` pairs of ``world``; with ``blind`` attributes (``BLINDABLE``),
    the best a model that cannot see them could reach (it cannot tell apart images that differ only there)."""
    return ceiling_of(positives(world, count, blind))


def ceiling_of(described: np.ndarray) -> dict[str, float]:
    """Best achievable R@1 given which captions truly describe which images ([caption, image] bools): mean of
    1/#images each caption describes (text->image) and 1/#captions describing each image (image->text)."""
    return {"image_retrieval_ceiling@1": float(np.mean(1.0 / described.sum(axis=1))),
            "text_retrieval_ceiling@1": float(np.mean(1.0 / described.sum(axis=0)))}


def positives(world: ToyWorld, count: int | None = None, blind: tuple[str, ...] = ()) -> np.ndarray:
    """Bool matrix [caption, image]: caption j truly describes image i (for semantic recall); ``blind``: see
    ``Mention.matches``."""
    unknown = sorted(set(blind) - set(BLINDABLE))
    if unknown:
        raise ValueError(f"blind={blind!r}: {unknown} are not attributes; expected some of {BLINDABLE}")
    count = len(world) if count is None else count
    scenes = [world.scene(i) for i in range(count)]
    codes = _object_codes(scenes)  # (images, objects, 4): colour, shape, size, cell; -1 pads
    compared = [k for k, a in enumerate(BLINDABLE) if a not in blind]
    described = np.zeros((count, count), dtype=bool)
    for j, caption in enumerate(scenes):
        # each mention alone must match some object (vectorised over images); with two or more mentions the
        # exact check (distinct objects, ``Scene.described_by``) runs on the images that pass
        hit = np.ones(count, dtype=bool)
        for mention in caption.mentions:
            wanted = np.array(_object_code(mention.obj))
            keys = [k for k in compared if k < 3 or mention.with_position]
            hit &= (codes[:, :, keys] == wanted[keys]).all(axis=2).any(axis=1)
        candidates = np.flatnonzero(hit)
        if len(caption.mentions) > 1:
            candidates = [i for i in candidates if scenes[i].described_by(caption.mentions, blind)]
        described[j, candidates] = True
    return described


def _object_code(obj: ToyObject) -> tuple[int, int, int, int]:
    return list(COLOURS).index(obj.colour), SHAPES.index(obj.shape), SIZES.index(obj.size), obj.cell


def _object_codes(scenes: list[Scene]) -> np.ndarray:
    most = max(len(s.objects) for s in scenes)
    codes = np.full((len(scenes), most, 4), -1, dtype=np.int64)
    for i, scene in enumerate(scenes):
        codes[i, :len(scene.objects)] = [_object_code(o) for o in scene.objects]
    return codes


def vocabulary() -> list[str]:
    """Every word captions, questions and prompts of the toy world use."""
    words = {"a", "at", "and", "what", "colour", "is", "the", "object", "shape", "size", "how", "many",
             "objects", "are", "there", "where"}
    words |= set(COLOURS) | set(SHAPES) | set(SIZES) | set(ROWS) | set(COLS)
    return sorted(words)


def toy_tokenizer(max_length: int = 40) -> WordTokenizer:
    """The tokenizer of the toy world's captions, questions and prompts: a ``WordTokenizer`` over ``vocabulary()``."""
    return WordTokenizer(vocabulary(), max_length)
