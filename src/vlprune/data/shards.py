"""Random access into webdataset tar shards, for training: index once, then read sample ``i`` by seeking.

Why a map-style index rather than a stream: the trainer's global batch of step ``s`` is a pure function of
``(seed, s)`` (``vlprune.train.trainer.global_batch_indices``), split over ranks and micro-batches
(``rank_batch_indices``) and built by any DataLoader worker. Giving webdataset shards a ``len`` and
``__getitem__`` makes all of that apply unchanged: within an epoch every sample is read by exactly one rank and
one worker (no duplicates, no drops but the trainer's last incomplete global batch), and a checkpoint's step is
the whole data position, so a killed run resumes to the weights of an uninterrupted one. A streaming reader
would need per-rank, per-worker shard assignment, uneven tails and a saved stream offset for the same promises.

The index holds, per sample, its shard and the byte offset and size of its image and caption members
(``TarInfo.offset_data`` / ``size``), found by reading the tar headers only; no image is kept in memory. Shards
must be uncompressed tars (webdataset's usual ``.tar``), since a compressed one cannot be seeked into.
Samples are numbered in shard order, then in order of first appearance in the shard; evaluation on ``wds:``
data (``vlprune.data.sources``) reads the same index.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlprune.data.images import decode_image
from vlprune.data.real import DatasetError, caption_text

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
IMAGE, CAPTION = range(2)  # member slots of ``ShardIndex.spans``


def split_member_name(name: str) -> tuple[str, str]:
    """webdataset's grouping: ``dir/KEY.EXT`` -> (``dir/KEY``, ``EXT``); the key ends at the first dot of the
    file name (``0001.seg.png`` -> key ``0001``, extension ``seg.png``)."""
    head, _, base = name.rpartition("/")
    key, _, ext = base.partition(".")
    return (f"{head}/{key}" if head else key), ext.lower()


def _index_shard(shard: Path) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """(key, {extension: (offset, size)}) of each sample of one shard, from its headers."""
    groups: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        with tarfile.open(shard, "r:") as tar:
            for member in tar:
                if member.isfile():
                    key, ext = split_member_name(member.name)
                    groups.setdefault(key, {})[ext] = (member.offset_data, member.size)
    except tarfile.TarError as err:
        raise DatasetError(f"{shard}: not a readable uncompressed tar shard ({err}); training seeks into shards, "
                           "so store them as plain .tar") from None
    return list(groups.items())


@dataclass
class ShardIndex:
    """The samples of webdataset shards as a map-style dataset: ``index[i]`` is the trainer's pair item
    ``{"index": i, "image": RGB uint8 array, "caption": str}``, read from disk when asked.

    Each sample needs an image (``jpg``, ``jpeg``, ``png`` or ``webp``) and a ``txt`` caption (other members
    are ignored). A sample missing one, a caption that is empty or not UTF-8 and an image that
    does not decode (or exceeds ``load_image``'s pixel limit) are one ``DatasetError`` / ``ImageLoadError`` naming
    the shard and the sample.
    """

    shards: list[Path]
    keys: list[str] = field(default_factory=list, init=False)
    shard_of: np.ndarray = field(init=False, repr=False)  # int32 [n]
    spans: np.ndarray = field(init=False, repr=False)     # int64 [n, 2 (image, caption), 2 (offset, size)]

    def __post_init__(self) -> None:
        shard_of, spans = [], []
        for number, shard in enumerate(self.shards):
            for key, parts in _index_shard(shard):
                image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
                if image is None or "txt" not in parts:
                    raise DatasetError(f"{shard}: sample {key!r} has {sorted(parts)}; needs an image "
                                       f"({', '.join(IMAGE_EXTENSIONS)}) and txt")
                self.keys.append(key)
                shard_of.append(number)
                spans.append((image, parts["txt"]))
        self.shard_of = np.asarray(shard_of, dtype=np.int32)
        self.spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2, 2)

    def __len__(self) -> int:
        return len(self.keys)

    def where(self, index: int) -> str:
        """``SHARD: sample 'KEY'``, as errors name a sample."""
        return f"{self.shards[self.shard_of[index]]}: sample {self.keys[index]!r}"

    def _read(self, index: int, slots: tuple[int, ...]) -> list[bytes]:
        """The raw bytes of members ``slots`` of sample ``index``, one file open."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} is outside the {len(self)} samples of {len(self.shards)} shard(s)")
        out = []
        with open(self.shards[self.shard_of[index]], "rb") as f:
            for slot in slots:
                offset, size = (int(v) for v in self.spans[index, slot])
                f.seek(offset)
                data = f.read(size)
                if len(data) != size:
                    raise DatasetError(f"{self.where(index)} ends early ({len(data)} of {size} bytes): the shard "
                                       "changed after it was indexed")
                out.append(data)
        return out

    def __getitem__(self, index: int) -> dict:
        image, caption = self._read(index, (IMAGE, CAPTION))
        where = self.where(index)
        return {"index": index, "image": decode_image(image, where), "caption": caption_text(caption, where)}

    def image(self, index: int) -> np.ndarray:
        return decode_image(self._read(index, (IMAGE,))[0], self.where(index))

    def caption(self, index: int) -> str:
        return caption_text(self._read(index, (CAPTION,))[0], self.where(index))
