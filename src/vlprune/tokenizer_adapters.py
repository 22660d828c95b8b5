"""A converted checkpoint's own tokenizer behind ``WordTokenizer``'s interface.

``tokenizer(texts, truncate=False) -> (input_ids, attention_mask)``, (B, max_length) long tensors padded to
``max_length``; a text that does not fit raises ``ValueError`` unless ``truncate=True`` (then the reference
library's own truncation applies, which keeps the end-of-text / [SEP] token). ``save(path)`` writes vlprune's
``tokenizer.json`` pointer (``{"type": "hf" | "open_clip", ...}``) and, for HF, the tokenizer files beside it;
``load_any(path)`` reads either kind or a word-level tokenizer. transformers / open_clip are imported lazily.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from vlprune.tokenizer import WordTokenizer

HF_SUBDIR = "hf_tokenizer"


def _texts(texts: list[str] | str) -> list[str]:
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("no texts to tokenize")
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"captions must be strings, got {type(bad[0]).__name__}")
    return texts


def _too_long(lengths: list[int], max_length: int) -> None:
    longest = max(lengths)
    if longest > max_length:
        raise ValueError(f"a text has {longest} tokens but at most max_length={max_length} fit; shorten it or pass "
                         "truncate=True")


class HFTokenizer:
    """A transformers tokenizer (CLIP's BPE, BLIP's BERT WordPiece) padded to ``max_length`` as their processors
    do for fixed-length batches."""

    def __init__(self, tokenizer: Any, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_dir(cls, directory: str | Path, max_length: int) -> HFTokenizer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(directory)), max_length)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __call__(self, texts: list[str] | str, truncate: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        texts = _texts(texts)
        if not truncate:
            _too_long([len(ids) for ids in self.tokenizer(texts)["input_ids"]], self.max_length)
        enc = self.tokenizer(texts, padding="max_length", max_length=self.max_length, truncation=True,
                             return_tensors="pt")
        return enc["input_ids"].long(), enc["attention_mask"].long()

    def save(self, path: str | Path) -> None:
        path = Path(path)
        target = path.parent / HF_SUBDIR
        if target.exists():
            shutil.rmtree(target)
        self.tokenizer.save_pretrained(str(target))
        path.write_text(json.dumps({"type": "hf", "dir": HF_SUBDIR, "max_length": self.max_length}) + "\n")


class OpenCLIPTokenizer:
    """open_clip's tokenizer for a registry model name (its ``SimpleTokenizer`` when ``name`` is None); the
    attention mask marks the non-zero ids (open_clip pads with 0)."""

    def __init__(self, name: str | None, context_length: int):
        import open_clip

        self.name = name
        self.max_length = context_length
        self.tokenizer = (open_clip.get_tokenizer(name, context_length=context_length) if name
                          else open_clip.SimpleTokenizer(context_length=context_length))

    def __len__(self) -> int:
        return self.tokenizer.vocab_size

    def __call__(self, texts: list[str] | str, truncate: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        texts = _texts(texts)
        if not truncate and hasattr(self.tokenizer, "encode"):
            _too_long([len(self.tokenizer.encode(t)) + 2 for t in texts], self.max_length)
        ids = self.tokenizer(texts).long()
        return ids, (ids != 0).long()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"type": "open_clip", "name": self.name,
                                          "context_length": self.max_length}) + "\n")


Tokenizer = WordTokenizer | HFTokenizer | OpenCLIPTokenizer


def load_any(path: str | Path) -> Tokenizer:
    """The tokenizer a ``tokenizer.json`` describes: word-level, or a pointer to an HF / open_clip one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read tokenizer {path}: {err}") from None
    kind = data.get("type", "word") if isinstance(data, dict) else None
    if kind == "hf":
        return HFTokenizer.from_dir(path.parent / data["dir"], int(data["max_length"]))
    if kind == "open_clip":
        return OpenCLIPTokenizer(data.get("name"), int(data["context_length"]))
    if kind == "word":
        return WordTokenizer.load(path)
    raise ValueError(f"{path}: unknown tokenizer type {kind!r}; expected word, hf or open_clip")
