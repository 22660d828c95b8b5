"""Text encoder in two flavours.

* ``clip``: causal self-attention, pre-LN, final LayerNorm, pooled at the end-of-text token (or the highest id).
* ``bert``: bidirectional, post-LN with an embedding LayerNorm, pooled at [CLS] (index 0). Layers listed
  in ``cross_attention_layers`` also attend to image tokens: the ALBEF/BLIP image-grounded encoder.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from vlprune.config import TextConfig
from vlprune.models.layers import Block, ForwardContext, PreHook, TokenState


class TextTransformer(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.token_embed = nn.Embedding(cfg.vocab_size, w)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.max_length, w))
        self.embed_norm = nn.LayerNorm(w, eps=cfg.layer_norm_eps) if cfg.flavour == "bert" else nn.Identity()
        cross = set(cfg.cross_attention_layers)
        self.blocks = nn.ModuleList(
            Block(cfg, i, f"text.{i}", cross_dim=cfg.encoder_width if i in cross else None)
            for i in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(w, eps=cfg.layer_norm_eps) if cfg.flavour == "clip" else nn.Identity()
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> TokenState:
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (B, L), got shape {tuple(input_ids.shape)}")
        length = input_ids.shape[1]
        if length > self.cfg.max_length:
            raise ValueError(f"text has {length} tokens but the model takes at most max_length="
                             f"{self.cfg.max_length}; truncate it in the tokenizer")
        if length == 0:
            raise ValueError("input_ids is empty: every caption needs at least one token")
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= self.cfg.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.cfg.vocab_size}); got "
                             f"[{int(input_ids.min())}, {int(input_ids.max())}] — wrong tokenizer?")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids "
                             f"{tuple(input_ids.shape)}: pass the mask the tokenizer returned with these ids")
        x = self.embed_norm(self.token_embed(input_ids) + self.pos_embed[:, :length])
        mask = None if attention_mask is None else attention_mask.bool()
        return TokenState(x=x, mask=mask)

    def reset_hooks(self) -> None:
        """Remove every token method's hooks from the text layers."""
        for block in self.blocks:
            block.reset_hooks()

    def context(self, **kwargs) -> ForwardContext:
        return ForwardContext(causal=self.cfg.flavour == "clip", **kwargs)

    def run(self, state: TokenState, ctx: ForwardContext, start: int = 0, end: int | None = None,
            use_cross: bool = True, before: PreHook | None = None) -> TokenState:
        """Run layers ``start:end`` (cross-attention only where ``use_cross`` and the layer has it). ``before``:
        a caller's step ahead of each layer, for this call only (SmartTrim's trimming): ``before(block, state,
        ctx)`` returns the state the layer gets and may set per-layer fields of ``ctx`` (head gates)."""
        for block in self.blocks[start:end]:
            if before is not None:
                state = before(block, state, ctx)
            state = block(state, ctx, use_cross=use_cross)
        return state

    def fusion_blocks(self) -> list[Block]:
        """The layers the fusion pass runs (``cfg.fusion_start`` on). For BLIP-style models
        (``fusion_from_embeddings``) these are every layer, which the unimodal pass also runs."""
        return list(self.blocks[self.cfg.fusion_start:])

    def unimodal(self, state: TokenState, ctx: ForwardContext, before: PreHook | None = None) -> TokenState:
        """The text-only pass from embedded tokens: layers ``0:cfg.unimodal_layers`` without cross-attention,
        then the final norm."""
        state = self.run(state, ctx, 0, self.cfg.unimodal_layers, use_cross=False, before=before)
        return replace(state, x=self.norm(state.x))

    def pool_index(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Index of the pooled token per row: [CLS] for bert; for clip, ``TextConfig.pool``: the first end-of-text
        token or the highest token id (the first of equal ones, as ``argmax`` in transformers and open_clip)."""
        if self.cfg.flavour == "bert":
            return torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        if self.cfg.pool == "argmax":
            return input_ids.argmax(dim=1)
        if self.cfg.eot_token_id is not None:
            is_eot = input_ids == self.cfg.eot_token_id
            if not bool(is_eot.any(dim=1).all()):
                raise ValueError(f"every text needs an end-of-text token (id {self.cfg.eot_token_id}); "
                                 "use the model's tokenizer")
            return is_eot.int().argmax(dim=1)
        if attention_mask is not None:
            return attention_mask.long().sum(dim=1) - 1
        return input_ids.argmax(dim=1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                image_embedding: torch.Tensor | None = None) -> TokenState:
        """Text-only pass over the unimodal layers (``cfg.unimodal_layers``); returns final tokens.
        ``image_embedding`` (B, embed_dim), normalised: the paired image, for image-guided text-token pruning."""
        state = self.embed(input_ids, attention_mask)
        ctx = self.context()
        if any(block.pre_hook is not None for block in self.blocks):  # text-token pruning needs the pooled index
            ctx.pool_index = self.pool_index(input_ids, attention_mask)
        ctx.image_embedding = image_embedding
        return self.unimodal(state, ctx)
