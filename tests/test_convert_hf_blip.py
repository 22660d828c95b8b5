"""transformers BlipForImageTextRetrieval <-> vlprune FusionModel: ITC similarities and ITM logits (with every
token method at keep 1.0), export back, pruned export, tokenizer and preprocessing parity, refused models."""

import json
from dataclasses import replace

import pytest
import torch

import vlprune
from helpers.reference import (
    CAPTIONS,
    TOL,
    blip_processor,
    hf_blip,
    images,
    keep_all_configs,
    max_diff,
    save_hf,
    transformers,
)
from vlprune.cli import main
from vlprune.data.images import Preprocess
from vlprune.models.convert import ConversionError


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    model, tokenizer = hf_blip()
    directory = save_hf(model, tokenizer, blip_processor(), tmp_path_factory.mktemp("hf_blip"))
    return model, tokenizer, directory


@pytest.fixture(scope="module")
def inputs(reference):
    _, tokenizer, _ = reference
    pixels = blip_processor()(images()[:4], return_tensors="pt")["pixel_values"]
    text = tokenizer(CAPTIONS, padding="max_length", max_length=12, return_tensors="pt")
    return pixels, text["input_ids"], text["attention_mask"]


def _reference(hf_model, pixels, ids, mask):
    """(ITC cosine similarities, ITM logits) of transformers' model."""
    with torch.no_grad():
        sim = hf_model(input_ids=ids, pixel_values=pixels, attention_mask=mask, use_itm_head=False).itm_score
        itm = hf_model(input_ids=ids, pixel_values=pixels, attention_mask=mask).itm_score
    return sim, itm


def _ours(model, pixels, ids, mask):
    with torch.no_grad():
        guide = model.text_guide(ids, mask) if model.reduction else None
        sim = model.encode_image(pixels, normalize=True, guide=guide) @ model.encode_text(ids, mask, normalize=True).T
        return sim, model.itm_logits(pixels, ids, mask)


def test_itc_similarities_and_itm_logits_match_transformers(reference, inputs):
    hf_model, _, directory = reference
    ours = vlprune.from_hf(directory)
    for want, got in zip(_reference(hf_model, *inputs), _ours(ours, *inputs)):
        assert max_diff(want, got) < TOL
    pixels, ids, mask = inputs
    with torch.no_grad():
        want = hf_model.vision_model(pixel_values=pixels).last_hidden_state
    assert max_diff(ours.visual(pixels).x, want) < TOL  # the image tokens the text attends to


@pytest.mark.parametrize("method", sorted(keep_all_configs()))
def test_every_token_method_at_keep_ratio_one_matches(reference, inputs, method):
    hf_model, _, directory = reference
    ours = vlprune.apply(vlprune.from_hf(directory), keep_all_configs()[method])
    for want, got in zip(_reference(hf_model, *inputs), _ours(ours, *inputs)):
        assert max_diff(want, got) < TOL


def test_export_reloads_in_transformers(reference, inputs, tmp_path):
    hf_model, _, directory = reference
    assert main(["convert", str(directory), "--out", str(tmp_path / "ours")]) == 0
    assert main(["convert", str(tmp_path / "ours"), "--out", str(tmp_path / "back"), "--to", "hf"]) == 0
    reloaded = transformers.BlipForImageTextRetrieval.from_pretrained(str(tmp_path / "back")).eval()
    for want, got in zip(_reference(hf_model, *inputs), _reference(reloaded, *inputs)):
        assert max_diff(want, got) < TOL
    processor = transformers.BlipImageProcessorPil.from_pretrained(str(tmp_path / "back"))
    assert max_diff(processor(images(), return_tensors="pt")["pixel_values"],
                    blip_processor()(images(), return_tensors="pt")["pixel_values"]) == 0


def test_pruned_heads_and_widths_export_exactly_but_removed_post_ln_layers_refuse(reference, inputs):
    _, _, directory = reference
    full = vlprune.from_hf(directory).config
    narrow = replace(full, text=replace(full.text, num_heads=(2, 0), intermediate_size=(16, 0)),
                     vision=replace(full.vision, num_heads=(1, 3)))
    torch.manual_seed(2)
    pruned = vlprune.build_model(narrow).eval()
    with torch.no_grad():
        for p in pruned.parameters():
            p.normal_(0, 0.2)
    for want, got in zip(_reference(vlprune.to_hf(pruned), *inputs), _ours(pruned, *inputs)):
        assert max_diff(want, got) < TOL
    shallow = replace(full, text=replace(full.text, num_layers=1, num_heads=4, intermediate_size=64, layer_map=(1,),
                                         cross_attention_layers=(0,)))
    with pytest.raises(ConversionError, match=r"text: original layers \[0\] were removed.*post-LN"):
        vlprune.to_hf(vlprune.build_model(shallow))


def test_tokenizer_and_preprocessing_match_the_reference(reference, tmp_path):
    _, tokenizer, directory = reference
    assert main(["convert", str(directory), "--out", str(tmp_path / "ours"), "--max-length", "12"]) == 0
    ids, mask = vlprune.load_tokenizer(tmp_path / "ours")(CAPTIONS)
    want = tokenizer(CAPTIONS, padding="max_length", max_length=12, return_tensors="pt")
    assert torch.equal(ids, want["input_ids"]) and torch.equal(mask, want["attention_mask"])
    vision = vlprune.load(tmp_path / "ours").config.vision
    assert vision.resize == "squash"
    reference_pixels = blip_processor()(images(), return_tensors="pt")["pixel_values"]
    assert max_diff(Preprocess.for_vision(vision).batch(images()), reference_pixels) < 1e-5


def test_other_blip_heads_are_refused_by_name(reference):
    hf_model, _, _ = reference
    with pytest.raises(ConversionError, match="BlipForQuestionAnswering.*not supported"):
        vlprune.from_hf(transformers.BlipForQuestionAnswering(hf_model.config))
    with pytest.raises(ConversionError, match="BLIP's retrieval layout"):
        vlprune.to_hf(vlprune.build_model(replace(vlprune.from_hf(hf_model).config, num_answers=3)))


def test_converted_blip_evaluates_with_itm_reranking(reference, tmp_path):
    _, _, directory = reference
    assert main(["convert", str(directory), "--out", str(tmp_path / "ours")]) == 0
    out = tmp_path / "r.json"
    assert main(["eval", "--model", str(tmp_path / "ours"), "--data", "toyworld:val:8", "--rerank-k", "4",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["metrics"]["rerank_k"] == 4 and "first_stage_image_retrieval_recall@1" in result["metrics"]
