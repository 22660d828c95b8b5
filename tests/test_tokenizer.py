"""The word-level toy tokenizer: layout of ids, unknown words, length limits, save/load."""

from __future__ import annotations

import pytest
import torch

from vlprune.data.toyworld import toy_tokenizer
from vlprune.tokenizer import CLS_ID, EOS_ID, MASK_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID, WordTokenizer


def test_special_ids_come_first(tokenizer):
    assert tokenizer.vocab[:len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert (PAD_ID, UNK_ID, CLS_ID, EOS_ID, MASK_ID) == (0, 1, 2, 3, 4)
    assert tokenizer.ids["[MASK]"] == MASK_ID and len(tokenizer) == len(tokenizer.vocab)


def test_encode_decode_round_trip(tokenizer):
    text = "a big red square at top left and a small cyan circle"
    ids = tokenizer.encode(text)
    assert ids[0] == CLS_ID and ids[-1] == EOS_ID and len(ids) == len(text.split()) + 2
    assert all(i >= len(SPECIAL_TOKENS) for i in ids[1:-1])
    assert [tokenizer.vocab[i] for i in ids[1:-1]] == text.split()
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode("A  Big, RED square!") == tokenizer.encode("a big red square")


def test_batch_call_pads_and_masks(tokenizer):
    ids, mask = tokenizer(["a red square", "a big blue circle at top left"])
    assert ids.shape == mask.shape == (2, 40) and ids.dtype == mask.dtype == torch.long
    assert ids[0, :5].tolist() == tokenizer.encode("a red square")
    assert (ids[0, 5:] == PAD_ID).all()
    assert mask[0].tolist() == [1] * 5 + [0] * 35 and int(mask[1].sum()) == 9
    assert tokenizer.decode(ids[1]) == "a big blue circle at top left"  # padding is dropped
    single, _ = tokenizer("a red square")
    assert torch.equal(single, ids[:1])


def test_unknown_word_maps_to_unk(tokenizer):
    ids = tokenizer.encode("a red zebra")
    assert ids[3] == UNK_ID and ids[1] == tokenizer.ids["a"]
    assert tokenizer.decode(ids) == "a red [UNK]"


@pytest.mark.parametrize("text", ["", "   ", "?!, ."])
def test_empty_caption_raises(tokenizer, text):
    with pytest.raises(ValueError, match="empty"):
        tokenizer.encode(text)
    with pytest.raises(ValueError, match="empty"):
        tokenizer(["a red square", text])


def test_non_string_and_no_texts(tokenizer):
    with pytest.raises(TypeError, match="string"):
        tokenizer.encode(3)
    with pytest.raises(ValueError, match="no texts"):
        tokenizer([])


def test_overlong_caption_raises_unless_truncated():
    tokenizer = toy_tokenizer(max_length=6)  # [CLS] + 4 words + [EOS]
    assert len(tokenizer.encode("a big red square")) == 6
    long = "a big red square at top"
    with pytest.raises(ValueError, match="6 words but at most 4.*truncate=True"):
        tokenizer.encode(long)
    ids = tokenizer.encode(long, truncate=True)
    assert len(ids) == 6 and ids[-1] == EOS_ID and tokenizer.decode(ids) == "a big red square"
    batch, mask = tokenizer([long], truncate=True)
    assert batch[0].tolist() == ids and int(mask.sum()) == 6


def test_bad_construction():
    with pytest.raises(ValueError, match="max_length=2"):
        WordTokenizer(["a"], max_length=2)
    with pytest.raises(ValueError, match="duplicated.*'red'"):
        WordTokenizer(["red", "blue", "red"])


def test_save_load_round_trip(tmp_path):
    tokenizer = toy_tokenizer(max_length=17)
    tokenizer.save(tmp_path / "tokenizer.json")
    again = WordTokenizer.load(tmp_path / "tokenizer.json")
    assert again.vocab == tokenizer.vocab and again.max_length == 17
    text = "is there a purple diamond"
    assert again.encode(text) == tokenizer.encode(text)
    (tmp_path / "broken.json").write_text("{\"words\": [")
    with pytest.raises(ValueError, match="cannot read tokenizer"):
        WordTokenizer.load(tmp_path / "broken.json")
    with pytest.raises(ValueError, match="cannot read tokenizer"):
        WordTokenizer.load(tmp_path / "absent.json")
