"""The model core: shapes, causal text, pooling, padding invariance, zero-width sub-layers, SDPA == math path,
fusion heads and input validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vlprune
from helpers.tiny import tiny_clip_config, tiny_fusion_config
from vlprune.models import CLIP, FusionModel
from vlprune.models.layers import ForwardContext, TokenState

CAPTION = "a big red square at top left and a small blue circle"
ZERO_INIT_WARNING = "ignore:Initializing zero-element tensors:UserWarning"


def _all_blocks(model):
    return [*model.visual.blocks, *model.text.blocks]


# -- shapes and normalisation ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["clip", "fusion"])
def test_encode_shapes_and_unit_norm(kind, clip_model, fusion_model, pixels, tokenizer):
    model = clip_model if kind == "clip" else fusion_model
    ids, mask = tokenizer([CAPTION, "a red square", "a cyan cross at bottom right"])
    with torch.no_grad():
        image = model.encode_image(pixels)
        text = model.encode_text(ids, mask)
        image_n = model.encode_image(pixels, normalize=True)
        text_n = model.encode_text(ids, mask, normalize=True)
        img, txt, scale = model(pixels, ids, mask)
    assert image.shape == (3, 16) and text.shape == (3, 16)
    assert not torch.allclose(image.norm(dim=-1), torch.ones(3), atol=1e-3)  # projections are not unit already
    torch.testing.assert_close(image_n.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text_n.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(image_n, F.normalize(image, dim=-1))
    torch.testing.assert_close(img, image_n)
    torch.testing.assert_close(txt, text_n)
    assert scale.item() == pytest.approx(torch.tensor(model.config.init_logit_scale).exp().item())


def test_model_classes_check_their_kind(clip_config, fusion_config):
    with pytest.raises(ValueError, match="kind='clip'"):
        CLIP(fusion_config)
    with pytest.raises(ValueError, match="kind='fusion'"):
        FusionModel(clip_config)
    assert isinstance(vlprune.build_model(clip_config), CLIP)
    assert isinstance(vlprune.build_model(fusion_config), FusionModel)


def test_param_counts_add_up(clip_model):
    vision, text = clip_model.num_params("vision"), clip_model.num_params("text")
    assert clip_model.num_params() == vision + text + 1  # + the logit scale
    assert clip_model.num_params() == sum(p.numel() for p in clip_model.parameters())
    with pytest.raises(ValueError, match="part="):
        clip_model.num_params("audio")


# -- text: causal, pooling, padding ---------------------------------------------------------------------

def test_clip_text_encoder_is_causal(clip_model, tokenizer):
    ids, mask = tokenizer([CAPTION])
    p = 4
    changed = ids.clone()
    changed[0, p + 1] = tokenizer.ids["purple"]  # a real word replaced at position p + 1
    with torch.no_grad():
        a = clip_model.text(ids, mask).x
        b = clip_model.text(changed, mask).x
    torch.testing.assert_close(a[:, :p + 1], b[:, :p + 1], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, p + 1:], b[:, p + 1:], atol=1e-4)  # ... while later positions see it


def test_bert_text_encoder_is_bidirectional(fusion_model, tokenizer):
    ids, mask = tokenizer([CAPTION])
    changed = ids.clone()
    changed[0, 5] = tokenizer.ids["purple"]
    with torch.no_grad():
        a, b = fusion_model.text(ids, mask).x, fusion_model.text(changed, mask).x
    assert not torch.allclose(a[:, 0], b[:, 0], atol=1e-4)  # [CLS] sees a later token


def test_clip_pools_at_the_eos_token(clip_model, tokenizer):
    ids, mask = tokenizer([CAPTION, "a red square"])
    eos = [CAPTION.count(" ") + 2, 4]  # [CLS] + words, then [EOS]
    assert ids[0, eos[0]] == tokenizer.eos_id and ids[1, eos[1]] == tokenizer.eos_id
    assert clip_model.text.pool_index(ids, mask).tolist() == eos
    with torch.no_grad():
        state = clip_model.text(ids, mask)
        expected = clip_model.text_proj(state.x[torch.arange(2), torch.tensor(eos)])
        torch.testing.assert_close(clip_model.encode_text(ids, mask), expected)
        # tokens after [EOS] cannot matter to a causal encoder pooled at [EOS], even without a mask
        garbage = ids.clone()
        garbage[:, 30:] = tokenizer.ids["cross"]
        torch.testing.assert_close(clip_model.encode_text(garbage), clip_model.encode_text(ids), atol=1e-6, rtol=0)


def test_clip_text_without_eot_id_pools_at_last_real_token(tokenizer):
    torch.manual_seed(0)
    model = vlprune.build_model(tiny_clip_config(text={"eot_token_id": None})).eval()
    ids, mask = tokenizer([CAPTION, "a red square"])
    assert model.text.pool_index(ids, mask).tolist() == [CAPTION.count(" ") + 2, 4]


def test_clip_text_needs_an_eos_token(clip_model, tokenizer):
    ids, mask = tokenizer(["a red square"])
    ids[ids == tokenizer.eos_id] = tokenizer.ids["red"]
    with pytest.raises(ValueError, match="end-of-text"):
        clip_model.encode_text(ids, mask)


@pytest.mark.parametrize("kind", ["clip", "fusion"])
def test_padding_does_not_change_the_pooled_embedding(kind, clip_model, fusion_model, tokenizer):
    model = clip_model if kind == "clip" else fusion_model
    ids, mask = tokenizer([CAPTION, "a red square"])  # padded to 40
    short = 15                                        # the longest text (14 tokens) + one [PAD]
    assert (ids[:, short:] == tokenizer.pad_id).all()
    with torch.no_grad():
        padded = model.encode_text(ids, mask)
        trimmed = model.encode_text(ids[:, :short], mask[:, :short])
    torch.testing.assert_close(padded, trimmed, atol=1e-5, rtol=0)
    if kind == "fusion":
        # the mask is what makes a bidirectional encoder ignore padding
        with torch.no_grad():
            unmasked = model.encode_text(ids), model.encode_text(ids[:, :short])
        assert not torch.allclose(*unmasked, atol=1e-4)


def test_padding_does_not_change_itm(fusion_model, pixels, tokenizer):
    ids, mask = tokenizer([CAPTION, "a red square", "a big cyan cross"])
    with torch.no_grad():
        torch.testing.assert_close(fusion_model.itm_logits(pixels, ids, mask),
                                   fusion_model.itm_logits(pixels, ids[:, :16], mask[:, :16]), atol=1e-5, rtol=0)


# -- zero-width sub-layers ------------------------------------------------------------------------------

@pytest.mark.filterwarnings(ZERO_INIT_WARNING)
@pytest.mark.parametrize("pre_norm", [True, False])
def test_zero_heads_and_zero_mlp_contribute_nothing(pre_norm, pixels):
    torch.manual_seed(0)
    cfg = tiny_clip_config(vision={"num_layers": 3, "num_heads": [0, 4, 2], "intermediate_size": [64, 0, 32],
                                   "pre_norm": pre_norm})
    model = vlprune.build_model(cfg).eval()
    no_attn, no_mlp = model.visual.blocks[0], model.visual.blocks[1]
    assert no_attn.attn.num_heads == 0 and no_mlp.mlp.hidden == 0
    with torch.no_grad():
        x = model.visual.embed(pixels).x
        out0 = no_attn(TokenState(x=x.clone()), ForwardContext()).x
        out1 = no_mlp(TokenState(x=x.clone()), ForwardContext()).x
        if pre_norm:
            expected0 = x + no_attn.mlp(no_attn.norm2(x))
            expected1 = x + no_mlp.attn(no_mlp.norm1(x)).out
        else:
            h = no_attn.norm1(x)
            expected0 = no_attn.norm2(h + no_attn.mlp(h))
            expected1 = no_mlp.norm2(no_mlp.norm1(x + no_mlp.attn(x).out))
        torch.testing.assert_close(out0, expected0, atol=1e-6, rtol=0)
        torch.testing.assert_close(out1, expected1, atol=1e-6, rtol=0)
        # the zero-width sub-layers really output zeros (not e.g. their output bias)
        assert torch.equal(no_attn.attn(x).out, torch.zeros_like(x))
        assert torch.equal(no_mlp.mlp(x), torch.zeros_like(x))
        emb = model.encode_image(pixels)
    assert emb.shape == (3, 16) and torch.isfinite(emb).all()


@pytest.mark.filterwarnings(ZERO_INIT_WARNING)
def test_zero_head_text_and_fusion_layers_run(pixels, tokenizer):
    torch.manual_seed(0)
    cfg = tiny_fusion_config(text={"num_heads": [0, 4, 0], "intermediate_size": [64, 0, 0]})
    model = vlprune.build_model(cfg).eval()
    ids, mask = tokenizer(["a red square", "a blue circle", "a big cross"])
    with torch.no_grad():
        logits = model.itm_logits(pixels, ids, mask)
        fused = model.fused_cls(pixels, ids, mask)
        # the last (fusion) layer has no self-attention, no cross-attention and no MLP: post-LN of the
        # identity at each sub-layer, i.e. three LayerNorms of its input
        block = model.text.blocks[2]
        before = model.text(ids, mask).x
        expected = block.norm2(block.norm_cross(block.norm1(before)))[:, 0]
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=0)
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()


# -- the SDPA fast path equals the math path ------------------------------------------------------------

@pytest.mark.parametrize("kind", ["clip", "fusion"])
def test_sdpa_fast_path_equals_math_path(kind, clip_model, fusion_model, pixels, tokenizer):
    model = clip_model if kind == "clip" else fusion_model
    ids, mask = tokenizer([CAPTION, "a red square", "a cyan cross at bottom right"])

    def outputs():
        with torch.no_grad():
            out = [model.encode_image(pixels), model.encode_text(ids, mask)]
            if kind == "fusion":
                out.append(model.itm_logits(pixels, ids, mask))
        return out

    fast = outputs()
    seen = []

    def record(block, state, attn, ctx):
        seen.append((block.key, attn.cls_attn))
        return state

    for block in _all_blocks(model):
        block.wants_cls_attn = True
        block.mid_hook = record
    slow = outputs()
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # the math path really ran: every block handed out its [CLS] attention row, a distribution over keys
    assert {key for key, _ in seen} == {block.key for block in _all_blocks(model)}
    vision_rows = [attn for key, attn in seen if key.startswith("vision")]
    assert vision_rows[0].shape == (3, 4, 17)
    torch.testing.assert_close(vision_rows[0].sum(-1), torch.ones(3, 4))
    if kind == "clip":  # causal text: the [CLS] query (position 0) attends only to itself
        text_row = next(attn for key, attn in seen if key.startswith("text"))
        torch.testing.assert_close(text_row[..., 0], torch.ones(3, 4))
    else:               # padded keys get no attention
        text_row = next(attn for key, attn in seen if key.startswith("text"))
        assert (text_row[1, :, ~mask[1].bool()] == 0).all()


# -- fusion heads ---------------------------------------------------------------------------------------

def test_fusion_heads(fusion_model, pixels, tokenizer):
    ids, mask = tokenizer([CAPTION, "a red square", "is there a red square"])
    with torch.no_grad():
        logits = fusion_model.itm_logits(pixels, ids, mask)
        score = fusion_model.itm_score(pixels, ids, mask)
        vqa = fusion_model.vqa_logits(pixels, ids, mask)
    assert logits.shape == (3, 2)
    assert score.shape == (3,) and ((score >= 0) & (score <= 1)).all()
    torch.testing.assert_close(score, logits.softmax(-1)[:, 1])
    assert vqa.shape == (3, 5)


def test_fused_output_depends_on_the_image(fusion_model, pixels, tokenizer):
    ids, mask = tokenizer(["a red square"] * 3)
    with torch.no_grad():
        logits = fusion_model.itm_logits(pixels, ids, mask)
    assert not torch.allclose(logits[0], logits[1], atol=1e-6)


def test_vqa_without_answers_is_a_clear_error(pixels, tokenizer):
    model = vlprune.build_model(tiny_fusion_config(num_answers=0)).eval()
    assert model.vqa_head is None
    ids, mask = tokenizer(["is there a red square"] * 3)
    with pytest.raises(ValueError, match="no VQA head.*num_answers=0"):
        model.vqa_logits(pixels, ids, mask)


def test_fusion_layer_needs_image_tokens(fusion_model, tokenizer):
    ids, mask = tokenizer(["a red square"])
    state = fusion_model.text(ids, mask)
    with pytest.raises(ValueError, match="encoder_states"):
        fusion_model.text.blocks[2](state, fusion_model.text.context())


# -- input validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_pixels_raise(clip_model, pixels, bad):
    pixels = pixels.clone()
    pixels[1, 0, 3, 4] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        clip_model.encode_image(pixels)


def test_mismatched_image_and_text_counts_raise(fusion_model, pixels, tokenizer):
    ids, mask = tokenizer(["a red circle", "a blue square"])  # 2 texts for 3 images
    with pytest.raises(ValueError, match="got 3 images and 2 texts"):
        fusion_model.itm_score(pixels, ids, mask)
    with pytest.raises(ValueError, match="got 3 images and 2 texts"):
        fusion_model.vqa_logits(pixels, ids, mask)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        fusion_model.encode_text(ids, mask[:1])


def test_bad_pixel_shapes_raise(clip_model):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        clip_model.encode_image(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="square grid"):
        clip_model.encode_image(torch.zeros(2, 3, 32, 48))


def test_other_image_sizes_interpolate_position_embeddings(clip_model):
    with torch.no_grad():
        emb = clip_model.encode_image(torch.randn(2, 3, 64, 64))
        tokens = clip_model.visual(torch.randn(2, 3, 64, 64)).x
    assert emb.shape == (2, 16) and tokens.shape == (2, 65, 32)


@pytest.mark.parametrize("kind", ["clip", "fusion"])
def test_token_ids_out_of_vocab_raise(kind, clip_model, fusion_model, tokenizer):
    model = clip_model if kind == "clip" else fusion_model
    vocab = model.config.text.vocab_size
    ids, mask = tokenizer(["a red square"])
    for bad in (vocab, -1):
        wrong = ids.clone()
        wrong[0, 2] = bad
        with pytest.raises(ValueError, match=rf"\[0, {vocab}\)"):
            model.encode_text(wrong, mask)


def test_text_longer_than_max_length_raises(clip_model):
    ids = torch.full((1, 41), 7)
    ids[0, 0], ids[0, -1] = 2, 3
    with pytest.raises(ValueError, match="max_length=40"):
        clip_model.encode_text(ids)
    with pytest.raises(ValueError, match="empty"):
        clip_model.encode_text(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        clip_model.encode_text(torch.zeros(5, dtype=torch.long))


# -- position embedding initialisation ------------------------------------------------------------------

def test_sincos_table_encodes_row_in_first_half_and_column_in_second():
    from vlprune.models.vision import sincos_2d

    table = sincos_2d(4, 16).reshape(4, 4, 16)
    assert torch.allclose(table[:, :1, :8], table[:, :, :8])    # row half: the same along a row
    assert torch.allclose(table[:1, :, 8:], table[:, :, 8:])    # column half: the same down a column
    flat = table.reshape(16, 16)
    distances = torch.cdist(flat, flat) + torch.eye(16) * 1e3
    assert distances.min() > 0.1                                 # every position has its own code
    assert table.abs().max() <= 1.0


def test_sincos_init_sets_patch_positions_and_leaves_cls_at_zero():
    from dataclasses import replace

    from vlprune.models.vision import VisionTransformer, sincos_2d

    cfg = replace(tiny_clip_config().vision, pos_embed_init="sincos")
    vit = VisionTransformer(cfg)
    grid = int(cfg.num_patches**0.5)
    assert torch.equal(vit.pos_embed[0, 1:], sincos_2d(grid, cfg.width))
    assert torch.count_nonzero(vit.pos_embed[0, 0]) == 0
    normal = VisionTransformer(replace(cfg, pos_embed_init="normal"))
    assert normal.pos_embed.std() < 0.05 < vit.pos_embed.std()


# -- image pooling ([CLS] or mean of the patch tokens) ------------------------------------------------------

def _mean_pooled(model):
    from dataclasses import replace

    config = replace(model.config, vision=replace(model.config.vision, pool="mean"))
    pooled = vlprune.build_model(config).eval()
    pooled.load_state_dict(model.state_dict())
    return pooled


def test_mean_pool_projects_the_mean_of_the_final_patch_tokens(clip_model, pixels):
    pooled = _mean_pooled(clip_model)
    with torch.no_grad():
        tokens = pooled.visual(pixels).x
        want = pooled.visual_proj(tokens[:, 1:].mean(1))
        assert torch.allclose(pooled.encode_image(pixels), want, atol=1e-6)
        assert not torch.allclose(clip_model.encode_image(pixels), want, atol=1e-3)  # [CLS] pooling differs


def test_mean_pool_counts_merged_tokens_by_size_and_drops_masked_ones():
    from vlprune.models.common import pool_image

    x = torch.randn(2, 5, 8)  # [CLS] + 4 patches
    plain = pool_image(TokenState(x=x), "mean")
    torch.testing.assert_close(plain, x[:, 1:].mean(1))
    # merge patches 1 and 2 into their size-weighted average (ToMe): the pooled feature does not change
    merged = torch.cat([x[:, :1], (x[:, 1:2] + x[:, 2:3]) / 2, x[:, 3:]], dim=1)
    size = torch.tensor([1.0, 2.0, 1.0, 1.0]).expand(2, 4)[..., None]
    torch.testing.assert_close(pool_image(TokenState(x=merged, size=size), "mean"), plain)
    # a masked (pruned) patch counts for nothing, whatever it holds
    mask = torch.tensor([True, True, True, True, False]).expand(2, 5)
    junk = x.clone()
    junk[:, 4] = 1e6
    torch.testing.assert_close(pool_image(TokenState(x=junk, mask=mask), "mean"), x[:, 1:4].mean(1))
    assert torch.equal(pool_image(TokenState(x=x), "cls"), x[:, 0])


def test_mean_pool_survives_save_and_load(clip_model, pixels, tmp_path):
    pooled = _mean_pooled(clip_model)
    vlprune.save(pooled, tmp_path / "m")
    again = vlprune.load(tmp_path / "m").eval()
    assert again.config.vision.pool == "mean"
    with torch.no_grad():
        assert torch.equal(again.encode_image(pixels), pooled.encode_image(pixels))
