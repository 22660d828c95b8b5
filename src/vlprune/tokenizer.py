"""Word-level tokenizer with the interface vlprune's training and evaluation use; its vocabulary is data (the toy
world's is ``vlprune.data.toyworld.toy_tokenizer``).

``tokenizer(texts)`` returns ``(input_ids, attention_mask)`` as (B, max_length) long tensors:
``[CLS] w1 ... wn [EOS] [PAD] ...``. CLIP-flavour models pool at [EOS], BERT-flavour at [CLS].
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[EOS]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, EOS_ID, MASK_ID = range(len(SPECIAL_TOKENS))
_WORD = re.compile(r"[a-z0-9\-]+")


class WordTokenizer:
    def __init__(self, words: list[str], max_length: int = 40):
        if max_length < 3:
            raise ValueError(f"max_length={max_length}: expected >= 3 ([CLS], one word, [EOS])")
        duplicated = sorted({w for w in words if words.count(w) > 1})
        if duplicated:
            raise ValueError(f"vocabulary has duplicated words {duplicated[:5]}")
        self.vocab = list(SPECIAL_TOKENS) + [w for w in words if w not in SPECIAL_TOKENS]
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.max_length = max_length
        self.pad_id, self.unk_id, self.cls_id, self.eos_id, self.mask_id = PAD_ID, UNK_ID, CLS_ID, EOS_ID, MASK_ID

    def __len__(self) -> int:
        return len(self.vocab)

    def words(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())

    def encode(self, text: str, truncate: bool = False) -> list[int]:
        """Token ids of one text, with [CLS] and [EOS]. Unknown words map to [UNK]."""
        if not isinstance(text, str):
            raise TypeError(f"caption must be a string, got {type(text).__name__}")
        words = self.words(text)
        if not words:
            raise ValueError(f"caption {text!r} is empty (no words); remove it or give it text")
        limit = self.max_length - 2
        if len(words) > limit:
            if not truncate:
                raise ValueError(f"caption has {len(words)} words but at most {limit} fit (max_length="
                                 f"{self.max_length}); shorten it or pass truncate=True")
            words = words[:limit]
        return [self.cls_id] + [self.ids.get(w, self.unk_id) for w in words] + [self.eos_id]

    def __call__(self, texts: list[str] | str, truncate: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("no texts to tokenize")
        ids = torch.full((len(texts), self.max_length), self.pad_id, dtype=torch.long)
        for row, text in enumerate(texts):
            encoded = self.encode(text, truncate)
            ids[row, :len(encoded)] = torch.tensor(encoded)
        return ids, (ids != self.pad_id).long()

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        return " ".join(self.vocab[i] for i in ids if i not in (self.pad_id, self.cls_id, self.eos_id))

    def save(self, path: str | Path) -> None:
        words = self.vocab[len(SPECIAL_TOKENS):]
        Path(path).write_text(json.dumps({"type": "word", "max_length": self.max_length, "words": words},
                                         indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        try:
            data = json.loads(Path(path).read_text())
            return cls(list(data["words"]), int(data["max_length"]))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"cannot read tokenizer {path}: {err}") from None
