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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vlprune.config import read_json_object, show
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
        """The tokenizer saved in ``directory``, read from local files only (never the Hub); a missing folder or
        files transformers cannot read are one ``ValueError`` naming the folder."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ValueError(f"transformers tokenizer folder {directory} is missing")
        from transformers import AutoTokenizer

        try:
            return cls(AutoTokenizer.from_pretrained(str(directory), local_files_only=True), max_length)
        except Exception as err:  # transformers raises OSError, ValueError, JSONDecodeError, KeyError, ...
            problem = (str(err).strip().splitlines() or [""])[0]
            raise ValueError(f"transformers tokenizer folder {directory} cannot be read "
                             f"({type(err).__name__}: {show(problem)})") from None

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


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _field(data: dict[str, Any], path: Path, name: str, ok: Callable[[Any], bool], expected: str,
           required: bool = True) -> Any:
    """``data[name]`` if it passes ``ok``; else one ``ValueError`` naming the file, the field and ``expected``."""
    if name not in data:
        if not required:
            return None
        raise ValueError(f"tokenizer {path}: field {name!r} is missing; expected {expected}")
    if not ok(data[name]):
        raise ValueError(f"tokenizer {path}: field {name!r}={show(data[name])} is invalid; expected {expected}")
    return data[name]


def load_any(path: str | Path) -> Tokenizer:
    """The tokenizer a ``tokenizer.json`` describes: word-level, or a pointer to an HF / open_clip one. A missing
    or wrong-typed field is one ``ValueError`` naming the file and the field."""
    path = Path(path)
    data = read_json_object(path, "tokenizer")
    kind = data.get("type", "word")
    if kind == "hf":
        subdir = _field(data, path, "dir", lambda v: isinstance(v, str) and v != "",
                        "the name of the folder beside it holding the transformers tokenizer files")
        max_length = _field(data, path, "max_length", _positive_int, "a positive int")
        try:
            return HFTokenizer.from_dir(path.parent / subdir, max_length)
        except ValueError as err:
            raise ValueError(f"tokenizer {path}: field 'dir'={show(subdir)}: {err}; convert the checkpoint again "
                             "(vlprune convert) or copy the transformers tokenizer files there") from None
    if kind == "open_clip":
        name = _field(data, path, "name", lambda v: v is None or isinstance(v, str),
                      "an open_clip model name or null", required=False)
        return OpenCLIPTokenizer(name, _field(data, path, "context_length", _positive_int, "a positive int"))
    if kind == "word":
        words = _field(data, path, "words", lambda v: isinstance(v, list) and all(isinstance(w, str) for w in v),
                       "a list of word strings")
        max_length = _field(data, path, "max_length", lambda v: _positive_int(v) and v >= 3,
                            "an int >= 3 ([CLS], one word, [EOS])")
        try:
            return WordTokenizer(words, max_length)
        except ValueError as err:
            raise ValueError(f"tokenizer {path}: {err}") from None
    raise ValueError(f"tokenizer {path}: unknown tokenizer type {show(kind)}; expected word, hf or open_clip")
