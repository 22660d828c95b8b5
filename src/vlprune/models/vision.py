"""ViT image encoder: patch embedding, [CLS], learned position embeddings (normal or 2-D sin-cos init), blocks,
final norm."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from vlprune.config import VisionConfig
from vlprune.models.layers import Block, ForwardContext, PreHook, TokenState


def sincos_2d(grid: int, width: int) -> torch.Tensor:
    """(grid*grid, width) 2-D sine-cosine position table (MAE, Transformer eq. 5 per axis): the first half of
    the channels encode the row, the second half the column, each as sin/cos at width/4 geometric frequencies."""
    freq = 1.0 / 10000 ** (torch.arange(width // 4, dtype=torch.float64) / (width // 4))
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angle = pos.reshape(-1, 1) * freq
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()


class VisionTransformer(nn.Module):
    """Pre-LN ViT. ``forward`` returns the final ``TokenState`` (normed tokens, [CLS] first)."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.patch_embed = nn.Conv2d(cfg.channels, w, cfg.patch_size, cfg.patch_size, bias=cfg.patch_bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, w))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, w))
        self.norm_pre = nn.LayerNorm(w, eps=cfg.layer_norm_eps) if cfg.ln_pre else nn.Identity()
        self.blocks = nn.ModuleList(Block(cfg, i, f"vision.{i}") for i in range(cfg.num_layers))
        self.norm = nn.LayerNorm(w, eps=cfg.layer_norm_eps)
        self.proportional_attn = False  # set by token-merging methods: keys get +log(size) (ToMe)
        self.trace_source = False       # track which patches each token covers (TokenState.source)
        nn.init.normal_(self.cls_token, std=0.02)
        if cfg.pos_embed_init == "sincos":
            grid = int(cfg.num_patches**0.5)
            with torch.no_grad():
                self.pos_embed[0, 1:] = sincos_2d(grid, w)  # [CLS] keeps a zero position
        else:
            nn.init.normal_(self.pos_embed, std=0.02)

    def reset_hooks(self) -> None:
        """Remove every token method's hooks: the tower computes exactly as the base tower again."""
        for block in self.blocks:
            block.reset_hooks()
        self.proportional_attn = False
        self.trace_source = False

    def embed(self, pixel_values: torch.Tensor) -> TokenState:
        """Patch + position embedding; position embeddings are interpolated for other image sizes."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.cfg.channels:
            raise ValueError(f"pixel_values must be (B, {self.cfg.channels}, H, W), got {tuple(pixel_values.shape)}")
        if not torch.isfinite(pixel_values).all():
            raise ValueError("pixel_values contain NaN or inf; check the image preprocessing")
        x = self.patch_embed(pixel_values).flatten(2).transpose(1, 2)
        pos = self._pos_embed(x.shape[1])
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + pos
        return TokenState(x=self.norm_pre(x))

    def _pos_embed(self, num_patches: int) -> torch.Tensor:
        if num_patches == self.cfg.num_patches:
            return self.pos_embed
        old, new = int(self.cfg.num_patches**0.5), int(num_patches**0.5)
        if new * new != num_patches:
            raise ValueError(f"image gives {num_patches} patches, which is not a square grid")
        grid = self.pos_embed[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
        return torch.cat([self.pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, new * new, -1)], dim=1)

    def begin(self, pixel_values: torch.Tensor, ctx: ForwardContext | None = None,
              guide: torch.Tensor | None = None) -> tuple[TokenState, ForwardContext]:
        """Everything before the first block: embedded tokens and the context the blocks share.
        ``guide`` (B, width): the text feature that text-guided methods (ELIP, TRIPS) select patches with."""
        ctx = ForwardContext(proportional_attn=self.proportional_attn) if ctx is None else ctx
        if guide is not None:
            if guide.shape != (pixel_values.shape[0], self.cfg.width):
                raise ValueError(f"guide must be (batch, vision width) = ({pixel_values.shape[0]}, {self.cfg.width}),"
                                 f" got {tuple(guide.shape)}")
            ctx.guide = guide
        state = self.embed(pixel_values)
        ctx.num_patches = state.x.shape[1] - 1  # M, the original patch count (ELIP keeps int(α·M))
        if self.trace_source:
            b, n, _ = state.x.shape
            state.source = torch.eye(n, device=state.x.device, dtype=state.x.dtype).expand(b, n, n)
        return state, ctx

    def run(self, state: TokenState, ctx: ForwardContext, start: int = 0, end: int | None = None,
            before: PreHook | None = None) -> TokenState:
        """Run blocks ``start:end`` (without the final norm); ``before`` as in ``TextTransformer.run``."""
        for block in self.blocks[start:end]:
            if before is not None:
                state = before(block, state, ctx)
            state = block(state, ctx)
        return state

    def forward(self, pixel_values: torch.Tensor, ctx: ForwardContext | None = None,
                guide: torch.Tensor | None = None) -> TokenState:
        """Final ``TokenState``; see ``begin`` for ``guide``."""
        state = self.run(*self.begin(pixel_values, ctx, guide))
        return replace(state, x=self.norm(state.x))
