"""transformers CLIPModel <-> vlprune CLIP: parity of embeddings and logits (with every token method at keep 1.0),
export back, zero-padded export of pruned models, tokenizer and preprocessing parity, refused checkpoints."""

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import vlprune
from helpers.reference import (
    CAPTIONS,
    TOL,
    clip_processor,
    hf_clip,
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
    model, tokenizer = hf_clip()
    directory = save_hf(model, tokenizer, clip_processor(), tmp_path_factory.mktemp("hf_clip"))
    return model, tokenizer, directory


@pytest.fixture(scope="module")
def inputs(reference):
    _, tokenizer, _ = reference
    pixels = clip_processor()(images()[:4], return_tensors="pt")["pixel_values"]
    text = tokenizer(CAPTIONS, padding="max_length", max_length=16, return_tensors="pt")
    return pixels, text["input_ids"], text["attention_mask"]


def _outputs(hf_model, pixels, ids, mask):
    with torch.no_grad():
        out = hf_model(input_ids=ids, pixel_values=pixels, attention_mask=mask)
    return out.image_embeds, out.text_embeds, out.logits_per_image


def _ours(model, pixels, ids, mask):
    with torch.no_grad():
        guide = model.text_guide(ids, mask)
        image = model.encode_image(pixels, normalize=True, guide=guide if model.reduction else None)
        text = model.encode_text(ids, mask, normalize=True)
    return image, text, model.logit_scale.exp() * image @ text.T


def test_embeddings_and_logits_match_transformers(reference, inputs):
    hf_model, _, directory = reference
    ours = vlprune.from_hf(directory)
    for want, got in zip(_outputs(hf_model, *inputs), _ours(ours, *inputs)):
        assert max_diff(want, got) < TOL
    assert ours.config.vision.image_mean == (0.5, 0.4, 0.3)  # read from preprocessor_config.json


@pytest.mark.parametrize("method", sorted(keep_all_configs()))
def test_every_token_method_at_keep_ratio_one_matches(reference, inputs, method):
    hf_model, _, directory = reference
    pixels, ids, mask = inputs
    ours = vlprune.apply(vlprune.from_hf(directory), keep_all_configs()[method])
    _, _, want = _outputs(hf_model, pixels[:len(ids)], ids, mask)
    image, text, _ = _ours(ours, pixels[:len(ids)], ids, mask)
    assert max_diff(hf_model.logit_scale.exp() * image @ text.T, want) < TOL


def test_export_reloads_in_transformers(reference, inputs, tmp_path):
    hf_model, _, directory = reference
    vlprune.to_hf(vlprune.from_hf(directory), tmp_path / "back")
    reloaded = transformers.CLIPModel.from_pretrained(str(tmp_path / "back")).eval()
    for want, got in zip(_outputs(hf_model, *inputs), _outputs(reloaded, *inputs)):
        assert max_diff(want, got) < TOL


def test_mean_pooled_model_is_refused_by_the_clip_export(reference):
    _, _, directory = reference
    config = vlprune.from_hf(directory).config
    mean_pooled = vlprune.build_model(replace(config, vision=replace(config.vision, pool="mean")))
    with pytest.raises(ConversionError, match=r"\[CLS\] pooling"):
        vlprune.to_hf(mean_pooled)


def test_pruned_model_exports_zero_padded_to_stock_shapes(reference, inputs):
    _, _, directory = reference
    full = vlprune.from_hf(directory).config
    vision = {"num_layers": 1, "num_heads": (2,), "intermediate_size": (24,), "layer_map": (1,)}
    text = {"num_heads": (3, 0), "intermediate_size": (0, 40)}
    config = replace(full, vision=replace(full.vision, **vision), text=replace(full.text, **text))
    torch.manual_seed(1)
    pruned = vlprune.build_model(config).eval()
    with torch.no_grad():  # non-zero biases everywhere: a 0-head / 0-width sub-layer must not leak its output bias
        for p in pruned.parameters():
            p.normal_(0, 0.2)
    exported = vlprune.to_hf(pruned)
    assert exported.config.vision_config.num_hidden_layers == 2  # removed layer 0 is an identity layer
    assert exported.config.vision_config.num_attention_heads == 4
    assert exported.config.text_config.intermediate_size == 40
    for want, got in zip(_outputs(exported, *inputs), _ours(pruned, *inputs)):
        assert max_diff(want, got) < TOL


def test_tokenizer_and_preprocessing_match_the_reference(reference, tmp_path):
    _, tokenizer, directory = reference
    assert main(["convert", str(directory), "--out", str(tmp_path / "ours"), "--max-length", "16"]) == 0
    ours = vlprune.load_tokenizer(tmp_path / "ours")
    want = tokenizer(CAPTIONS, padding="max_length", max_length=16, return_tensors="pt")
    ids, mask = ours(CAPTIONS)
    assert torch.equal(ids, want["input_ids"]) and torch.equal(mask, want["attention_mask"])
    with pytest.raises(ValueError, match="truncate=True"):
        ours([" ".join(CAPTIONS * 3)])
    assert ours([" ".join(CAPTIONS * 3)], truncate=True)[0].shape == (1, 16)
    preprocess = Preprocess.for_vision(vlprune.load(tmp_path / "ours").config.vision)
    reference_pixels = clip_processor()(images(), return_tensors="pt")["pixel_values"]
    assert max_diff(preprocess.batch(images()), reference_pixels) < 1e-5


def test_converted_directory_runs_eval_and_bench(reference, tmp_path, capsys):
    _, _, directory = reference
    assert main(["convert", str(directory), "--out", str(tmp_path / "ours")]) == 0
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(tmp_path / "ours"), "--methods", "none", "tome:r=2", "--batch-sizes", "2",
                 "--warmup", "0", "--iters", "1", "--out", str(out)]) == 0
    assert [r["method"] for r in json.loads(out.read_text())["rows"]] == ["none", "tome:r=2"]


def test_checkpoints_that_do_not_fit_name_the_keys(reference, tmp_path):
    hf_model, tokenizer, _ = reference
    directory = save_hf(hf_model, tokenizer, clip_processor(), tmp_path / "bad")
    weights = load_file(str(directory / "model.safetensors"))
    dropped = "text_model.final_layer_norm.bias"
    save_file({**{k: v for k, v in weights.items() if k != dropped}, "vision_model.extra.weight": torch.zeros(1)},
              str(directory / "model.safetensors"))
    with pytest.raises(ConversionError, match=rf"missing keys \[{dropped}\].*unexpected keys \[vision_model.extra"):
        vlprune.from_hf(directory)
    with pytest.raises(ConversionError, match="CLIPVisionModel.*not supported"):
        vlprune.from_hf(transformers.CLIPVisionModel(hf_model.config.vision_config))
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "architectures": ["CLIPTextModel"]}))
    with pytest.raises(ConversionError, match="CLIPTextModel"):
        vlprune.from_hf(directory)


def _pooling_inputs(vocab_size: int, eos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hand-made ids (not a tokenizer's) where the highest id is not at end-of-text, with padding after it."""
    top = vocab_size - 1
    ids = torch.tensor([[5, top, 7, eos, 0, 0, 0, 0],        # highest id before end-of-text
                        [9, 30, eos, 11, 12, 0, 0, 0],       # unmasked tokens after end-of-text
                        [4, 6, eos, 0, 0, top, 0, 0],        # highest id under the padding
                        [eos, 8, top, eos, 6, 6, 6, 0]])     # two end-of-text tokens: the first counts
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0],
                         [1, 1, 1, 1, 1, 1, 1, 0]])
    return ids, mask


def _text_features(hf_model, ids, mask):
    with torch.no_grad():
        out = hf_model.get_text_features(input_ids=ids, attention_mask=mask)
    return F.normalize(out.pooler_output if hasattr(out, "pooler_output") else out, dim=-1)


@pytest.mark.parametrize("eos, pool", [(2, "argmax"), (20, "eot")])
def test_text_pooling_matches_transformers_for_legacy_and_current_eos_ids(reference, eos, pool):
    """eos_token_id == 2 (configs before transformers PR #24773) pools at the highest id even with a mask;
    any other id pools at its first occurrence. Both convert, and export back, to the same text embeddings."""
    hf_model, _, _ = reference
    config = hf_model.config.to_dict()
    config["text_config"]["eos_token_id"] = eos
    theirs = transformers.CLIPModel(transformers.CLIPConfig.from_dict(config)).eval()
    theirs.load_state_dict(hf_model.state_dict())
    ids, mask = _pooling_inputs(theirs.config.text_config.vocab_size, eos)
    want = _text_features(theirs, ids, mask)
    ours = vlprune.from_hf(theirs)
    assert ours.config.text.pool == pool and ours.config.text.eot_token_id == (None if eos == 2 else eos)
    with torch.no_grad():
        assert max_diff(want, ours.encode_text(ids, mask, normalize=True)) < TOL
        other = vlprune.build_model(replace(ours.config, text=replace(ours.config.text, eot_token_id=eos,
                                                                      pool="eot" if pool == "argmax" else "argmax")))
        other.load_state_dict(ours.state_dict())
        assert max_diff(want, other.encode_text(ids, mask, normalize=True)) > 0.01  # the inputs tell them apart
    back = vlprune.to_hf(ours)
    assert back.config.text_config.eos_token_id == eos
    assert max_diff(want, _text_features(back, ids, mask)) < TOL


def test_end_of_text_id_two_is_refused_by_the_clip_export(reference):
    """transformers would read eos_token_id 2 as highest-id pooling: the export says so instead of writing it."""
    _, _, directory = reference
    config = vlprune.from_hf(directory).config
    model = vlprune.build_model(replace(config, text=replace(config.text, eot_token_id=2, pool="eot")))
    with pytest.raises(ConversionError, match="end-of-text id 2.*legacy highest-id pooling"):
        vlprune.to_hf(model)
