"""ALBEF/BLIP-style fusion model: ITC over unimodal encoders, then a multimodal encoder (text layers with
cross-attention to image tokens) for image-text matching (ITM), masked language modelling (MLM) and VQA
as classification over a closed answer vocabulary."""

from __future__ import annotations

import torch
from torch import nn

from vlprune.config import ModelConfig
from vlprune.models.common import DualTowerModel
from vlprune.models.layers import AttachedMethods, ForwardContext, PreHook, TokenState


class FusionModel(DualTowerModel):
    def __init__(self, config: ModelConfig):
        if config.kind != "fusion":
            raise ValueError(f"FusionModel needs a config with kind='fusion', got kind={config.kind!r}")
        super().__init__(config)
        w = config.text.width
        self.itm_head = nn.Linear(w, 2)
        self.mlm_head = nn.Sequential(nn.Linear(w, w), nn.GELU(), nn.LayerNorm(w, eps=config.text.layer_norm_eps),
                                      nn.Linear(w, config.text.vocab_size))
        self.vqa_head = (nn.Sequential(nn.Linear(w, 2 * w), nn.GELU(), nn.Linear(2 * w, config.num_answers))
                         if config.num_answers > 0 else None)
        self._init()

    def text_guide(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ELIP/TRIPS guide for fusion models: the unimodal text [CLS] hidden state (B, width), detached
        (selection is stop-gradient). Needs text width == vision width, as in ALBEF/BLIP."""
        return self.guide_from_text(self.text(input_ids, attention_mask), input_ids, attention_mask)

    def guide_from_text(self, state: TokenState, input_ids: torch.Tensor | None = None,
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``text_guide`` from an already computed text tower pass."""
        if self.config.text.width != self.config.vision.width:
            raise ValueError(f"text guidance needs equal widths; text {self.config.text.width} vs vision "
                             f"{self.config.vision.width}")
        return state.x[:, 0].detach()

    def fusion_input(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     text_state: TokenState | None = None) -> TokenState:
        """The text tokens the fusion layers start from: the unimodal output ``text_state`` (computed when not
        given), or the token embeddings for BLIP-style models (``text.fusion_from_embeddings``)."""
        if self.config.text.fusion_from_embeddings:
            return self.text.embed(input_ids, attention_mask)
        return self.text(input_ids, attention_mask) if text_state is None else text_state

    def fusion_context(self, image_state: TokenState,
                       cross_cls_attn: dict[str, torch.Tensor] | None = None) -> ForwardContext:
        """The context the fusion layers share: the image tokens they cross-attend to, with their key mask and
        soft keep mask (``log_keep``)."""
        return self.text.context(encoder_states=image_state.x, encoder_mask=image_state.mask,
                                 encoder_log_keep=image_state.log_keep, cross_cls_attn=cross_cls_attn)

    def fuse(self, text_state: TokenState, image_state: TokenState,
             cross_cls_attn: dict[str, torch.Tensor] | None = None, before: PreHook | None = None) -> TokenState:
        """Run the fusion layers (``text.fusion_blocks()``) on ``fusion_input`` tokens: they attend to themselves
        and, by cross-attention, to image tokens. A dict ``cross_cls_attn`` receives each fusion layer's [CLS]
        cross-attention (B, H, M); ``before`` runs ahead of each layer (``TextTransformer.run``)."""
        ctx = self.fusion_context(image_state, cross_cls_attn)
        state = TokenState(x=text_state.x, mask=text_state.mask, log_keep=text_state.log_keep)
        return self.text.run(state, ctx, self.config.text.fusion_start, None, use_cross=True, before=before)

    def fused_cls(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Multimodal [CLS] hidden state (B, D) for an image-text pair. The text is encoded first and its
        [CLS] guides text-guided token reduction in the image tower, when one is applied."""
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(f"got {pixel_values.shape[0]} images and {input_ids.shape[0]} texts: ITM and VQA score "
                             "image-text pairs, so pass one text per image (repeat the image for several texts; "
                             "for all-pairs similarity use encode_image / encode_text)")
        attached = self.attached or AttachedMethods()
        if attached.image_guided_text:  # the image guides the text: image first
            if attached.text_guided_image:
                raise ValueError("image-guided text pruning and text-guided image token reduction each need the "
                                 "other modality first; turn one off (vlprune.apply(model, None))")
            image = self.visual(pixel_values)
            text = self.text(input_ids, attention_mask, image_embedding=self.image_embedding(image, normalize=True))
        else:
            text = self.text(input_ids, attention_mask)
            guide = self.guide_from_text(text) if attached.text_guided_image else None
            image = self.visual(pixel_values, guide=guide)
        return self.fuse(self.fusion_input(input_ids, attention_mask, text), image).x[:, 0]

    def itm_logits(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ITM logits (B, 2): index 1 = the text matches the image."""
        return self.itm_head(self.fused_cls(pixel_values, input_ids, attention_mask))

    def itm_score(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Probability (B,) that each text matches its image (used to re-rank retrieval candidates)."""
        return self.itm_logits(pixel_values, input_ids, attention_mask).softmax(dim=-1)[:, 1]

    def vqa_logits(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Answer logits (B, num_answers) for a question about the image."""
        if self.vqa_head is None:
            raise ValueError("this model has no VQA head (num_answers=0); fine-tune one with "
                             "`vlprune train --task vqa`")
        return self.vqa_head(self.fused_cls(pixel_values, input_ids, attention_mask))
