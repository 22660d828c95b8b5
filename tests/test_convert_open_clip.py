"""open_clip CLIP <-> vlprune CLIP: parity from a model, a local-dir checkpoint and a registry name + safetensors;
every token method at keep 1.0; export back; tokenizer and preprocessing settings; refused options and keys."""

import json

import pytest
import torch
from safetensors.torch import save_file

import vlprune
from helpers.open_clip_env import import_open_clip
from helpers.reference import CAPTIONS, TOL, keep_all_configs, max_diff
from vlprune.cli import main
from vlprune.models.convert import ConversionError

open_clip = import_open_clip()
MODEL_CFG = {"embed_dim": 16, "quick_gelu": True,
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 8, "patch_size": 8,
                            "mlp_ratio": 2.0},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2}}


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return open_clip.CLIP(**MODEL_CFG).eval()


@pytest.fixture(scope="module")
def inputs():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)), open_clip.tokenize(CAPTIONS, 16)


def _reference(model, pixels, ids):
    with torch.no_grad():
        image, text = model.encode_image(pixels, normalize=True), model.encode_text(ids, normalize=True)
        return image, text, model.get_logits(pixels, ids)[0]


def _ours(model, pixels, ids):
    mask = (ids != 0).long()
    with torch.no_grad():
        guide = model.text_guide(ids[:len(pixels)], mask[:len(pixels)]) if model.reduction else None
        image = model.encode_image(pixels, normalize=True, guide=guide)
        text = model.encode_text(ids, mask, normalize=True)
    return image, text, model.logit_scale.exp() * image @ text.T


def test_embeddings_and_logits_match_open_clip(reference, inputs, tmp_path):
    local_dir = vlprune.to_open_clip(vlprune.from_open_clip(reference), tmp_path / "local")
    open_clip.add_model_config(_registry_entry(tmp_path))
    save_file(reference.state_dict(), str(tmp_path / "weights.safetensors"))
    sources = {"model": vlprune.from_open_clip(reference), "local-dir": vlprune.from_open_clip(local_dir),
               "name": vlprune.from_open_clip("vlprune-tiny-test", tmp_path / "weights.safetensors")}
    for source, ours in sources.items():
        for want, got in zip(_reference(reference, *inputs), _ours(ours, *inputs)):
            assert max_diff(want, got) < TOL, source


def _registry_entry(tmp_path):
    path = tmp_path / "vlprune-tiny-test.json"
    path.write_text(json.dumps(MODEL_CFG))
    return path


@pytest.mark.parametrize("method", sorted(keep_all_configs()))
def test_every_token_method_at_keep_ratio_one_matches(reference, inputs, method):
    pixels, ids = inputs
    ours = vlprune.apply(vlprune.from_open_clip(reference), keep_all_configs()[method])
    for want, got in zip(_reference(reference, pixels, ids[:3]), _ours(ours, pixels, ids[:3])):
        assert max_diff(want, got) < TOL


def test_argmax_text_pooling_matches_open_clip_without_an_end_of_text_token(reference):
    """open_clip's ``pool_type='argmax'`` pools at the highest id, end-of-text (49407) present or not."""
    ids = torch.zeros(3, 16, dtype=torch.long)
    ids[0, :5] = torch.tensor([49406, 320, 9000, 51, 7])        # highest id mid-sentence, no end-of-text
    ids[1, :4] = torch.tensor([49406, 12, 49407, 49407])        # two end-of-text tokens: the first counts
    ids[2, :6] = torch.tensor([49406, 5, 6, 40000, 49000, 3])   # highest id near the end
    ours = vlprune.from_open_clip(reference)
    assert ours.config.text.pool == "argmax"
    with torch.no_grad():
        want = reference.encode_text(ids, normalize=True)
        assert max_diff(want, ours.encode_text(ids, (ids != 0).long(), normalize=True)) < TOL


def test_export_reloads_in_open_clip(reference, inputs, tmp_path):
    vlprune.save(vlprune.from_open_clip(reference), tmp_path / "ours")
    assert main(["convert", str(tmp_path / "ours"), "--out", str(tmp_path / "back"), "--to", "open_clip"]) == 0
    reloaded = open_clip.create_model("local-dir:" + str(tmp_path / "back")).eval()
    for want, got in zip(_reference(reference, *inputs), _reference(reloaded, *inputs)):
        assert max_diff(want, got) < TOL
    preprocess = json.loads((tmp_path / "back" / "open_clip_config.json").read_text())["preprocess_cfg"]
    assert preprocess["size"] == 32 and preprocess["interpolation"] == "bicubic"


def test_tokenizer_and_preprocessing_settings_match_open_clip(reference, tmp_path):
    local_dir = vlprune.to_open_clip(vlprune.from_open_clip(reference), tmp_path / "local")
    assert main(["convert", str(local_dir), "--out", str(tmp_path / "ours")]) == 0
    ids, mask = vlprune.load_tokenizer(tmp_path / "ours")(CAPTIONS)
    assert torch.equal(ids, open_clip.tokenize(CAPTIONS, 16)) and torch.equal(mask, (ids != 0).long())
    vision = vlprune.load(tmp_path / "ours").config.vision
    cfg = open_clip.create_model("local-dir:" + str(local_dir)).visual.preprocess_cfg
    assert (vision.image_mean, vision.image_std) == (tuple(cfg["mean"]), tuple(cfg["std"]))
    assert (vision.resize, vision.crop_offset) == ("shortest", "round")  # torchvision Resize + CenterCrop


def test_average_pooled_vision_tower_matches_and_exports(inputs, tmp_path):
    """open_clip's ``pool_type='avg'`` (mean of the patch tokens after ln_post) is ``VisionConfig.pool='mean'``."""
    torch.manual_seed(0)
    avg = open_clip.CLIP(**{**MODEL_CFG, "vision_cfg": {**MODEL_CFG["vision_cfg"], "pool_type": "avg"}}).eval()
    ours = vlprune.from_open_clip(avg)
    assert ours.config.vision.pool == "mean"
    for want, got in zip(_reference(avg, *inputs), _ours(ours, *inputs)):
        assert max_diff(want, got) < TOL
    reloaded = open_clip.create_model("local-dir:" + str(vlprune.to_open_clip(ours, tmp_path / "back"))).eval()
    assert reloaded.visual.pool_type == "avg"
    for want, got in zip(_reference(avg, *inputs), _reference(reloaded, *inputs)):
        assert max_diff(want, got) < TOL


@pytest.mark.parametrize("part,option,value", [("vision_cfg", "ls_init_value", 0.1),
                                               ("vision_cfg", "attentional_pool", True),
                                               ("vision_cfg", "pool_type", "none"),
                                               ("vision_cfg", "final_ln_after_pool", True),
                                               ("text_cfg", "pool_type", "last")])
def test_unsupported_options_are_refused_by_name(tmp_path, part, option, value):
    cfg = {**MODEL_CFG, part: {**MODEL_CFG[part], option: value}}
    if option == "final_ln_after_pool":
        cfg["vision_cfg"]["pool_type"] = "avg"  # with [CLS] pooling the order of norm and pool does not matter
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "open_clip_model.safetensors"))
    with pytest.raises(ConversionError, match=f"{part}.{option}"):
        vlprune.from_open_clip(tmp_path)


def test_missing_and_extra_keys_are_named(reference, tmp_path):
    state = dict(reference.state_dict())
    del state["ln_final.bias"]
    state["logit_bias"] = torch.zeros(1)
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": MODEL_CFG}))
    save_file(state, str(tmp_path / "open_clip_model.safetensors"))
    with pytest.raises(ConversionError, match=r"missing keys \[ln_final.bias\].*unexpected keys \[logit_bias\]"):
        vlprune.from_open_clip(tmp_path)
