"""ELIP (Guo et al.): text-guided progressive vision-token pruning and merging, parameter-free.

The vision layers form stages (default (2, 2, 6, 2) for 12 layers). At the start of stage i >= 2:
  1. fused guide  x_cls = λ·v_cls + (1-λ)·t_cls                                    (eq. 1; λ weights vision)
  2. importance = head-averaged attention of x_cls over the tokens:                 (eq. 2)
     ``faithful``: a no-grad pass of the stage's blocks on [x_cls, tokens], attention row of its last block;
     ``cheap`` (ours): the guide as an extra query in the previous layer's real attention, no extra pass;
  3. keep the top int(α_i·M) tokens (M = original patch count), in their original order;   (eq. 3)
  4. merge the rest into one token, weights = their attention renormalised to sum 1.      (eq. 4)
Sequence after a stage start: 1 + int(α_i·M) + 1. A merged token from an earlier stage competes like any
other. As in the official code, nothing is pruned when no text guide is given (unless λ = 1).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from vlprune.config import ConfigError, VisionConfig
from vlprune.method_registry import register_method
from vlprune.models.flops import layer_macs
from vlprune.models.layers import AttentionOutput, Block, ForwardContext, TokenState, self_attention_bias
from vlprune.reduce.base import ReduceConfig, check_ratio, keep_and_fuse, register_attach, rest_weights

MODES = ("faithful", "cheap")


@register_method("token", "text-guided pruning and merging of image tokens at 3 stages (eq. 3-4)",
                 "ELIP, Ji et al. 2023")
@dataclass(frozen=True)
class ELIPConfig(ReduceConfig):
    method = "elip"
    stages: tuple[int, ...] = (2, 2, 6, 2)
    keep: tuple[float, ...] = (0.9, 0.65, 0.4)
    lam: float = 0.8
    mode: str = "faithful"
    merge: bool = True  # False: the prune-only ablation

    def check(self, vision: VisionConfig) -> None:
        if sum(self.stages) != vision.num_layers or not all(isinstance(s, int) and s > 0 for s in self.stages):
            raise ConfigError(f"ELIPConfig.stages={self.stages!r} is invalid: expected positive layer counts "
                              f"summing to the {vision.num_layers} vision layers")
        if len(self.keep) != len(self.stages) - 1:
            raise ConfigError(f"ELIPConfig.keep={self.keep!r} is invalid: expected one keep ratio per stage "
                              f"after the first ({len(self.stages) - 1})")
        for ratio in self.keep:
            check_ratio("ELIPConfig", "keep", ratio)
        if list(self.keep) != sorted(self.keep, reverse=True):
            raise ConfigError(f"ELIPConfig.keep={self.keep!r} is invalid: ratios of the original patches must "
                              "not increase from stage to stage")
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"ELIPConfig.lam={self.lam!r} is invalid: expected a value in [0, 1]")
        if self.mode not in MODES:
            raise ConfigError(f"ELIPConfig.mode={self.mode!r} is invalid: expected one of {MODES}")

    @property
    def text_guided(self) -> bool:
        return self.lam < 1.0

    def starts(self) -> list[int]:
        """First layer of stages 2, 3, ..."""
        out, layer = [], 0
        for size in self.stages[:-1]:
            layer += size
            out.append(layer)
        return out

    def kept(self, ratio: float, patches: int) -> int:
        return int(ratio * patches)

    def schedule(self, vision: VisionConfig) -> list[tuple[int, int]]:
        m, n = vision.num_patches, vision.num_patches + 1
        reduce_at = dict(zip(self.starts(), self.keep))
        out = []
        for layer in range(vision.num_layers):
            if layer in reduce_at:
                k = self.kept(reduce_at[layer], m)
                n = 1 + k + int(self.merge and k < n - 1)
            out.append((n, n))
        return out

    def extra_macs(self, vision: VisionConfig) -> int:
        """Multiply-accumulates of the guide's attention: the faithful no-grad pass through the stage (its last
        block only up to the keys and the guide's query), or cheap mode's one extra query."""
        if self._keeps_everything(vision):
            return 0
        schedule, macs = self.schedule(vision), 0
        ends = self.starts()[1:] + [vision.num_layers]
        for start, end in zip(self.starts(), ends):
            n = schedule[start - 1][1]  # tokens entering the stage, before its reduction
            last = end - 1 if self.mode == "faithful" else start - 1
            inner = vision.num_heads[last] * vision.head_dim
            if self.mode == "faithful":
                macs += sum(layer_macs(vision, layer, n, n) for layer in range(start, last)) + n * vision.width * inner
            macs += vision.width * inner + n * inner  # the guide's query and its attention logits
        return macs

    def _keeps_everything(self, vision: VisionConfig) -> bool:
        return all(self.kept(r, vision.num_patches) >= vision.num_patches for r in self.keep)


@dataclass
class ELIPScratch:
    """ELIP's per-call scratch (``ForwardContext.method_state``), cheap mode: the [CLS] entering the layer before a
    stage start, then the guide's attention there, which that stage start consumes."""

    cls_in: torch.Tensor | None = None
    scores: torch.Tensor | None = None


def attach_elip(model, config: ELIPConfig) -> None:
    """Install ELIP's stage reductions (and cheap mode's guide query) on the image tower (``vlprune.apply``)."""
    if config._keeps_everything(model.config.vision):
        return  # exactly the base model
    blocks = model.visual.blocks
    ends = config.starts()[1:] + [len(blocks)]
    for start, end, ratio in zip(config.starts(), ends, config.keep):
        if config.mode == "cheap":
            blocks[start - 1].wants_keys = True
            blocks[start - 1].pre_hook = _remember_cls
            blocks[start - 1].mid_hook = _guide_attention_hook(config)
        blocks[start].pre_hook = _stage_hook(config, list(blocks[start:end]), ratio)


register_attach(ELIPConfig, attach_elip)


def _scratch(ctx: ForwardContext) -> ELIPScratch:
    if not isinstance(ctx.method_state, ELIPScratch):
        ctx.method_state = ELIPScratch()
    return ctx.method_state


def _guide(config: ELIPConfig, v_cls: torch.Tensor, ctx: ForwardContext) -> torch.Tensor | None:
    """eq. 1; None when there is no text and λ < 1 (ELIP then does not prune)."""
    t_cls = ctx.guide
    if t_cls is None:
        return v_cls if config.lam == 1.0 else None
    return config.lam * v_cls + (1.0 - config.lam) * t_cls.to(v_cls.dtype)


def _remember_cls(block: Block, state: TokenState, ctx: ForwardContext) -> TokenState:
    _scratch(ctx).cls_in = state.x[:, 0]
    return state


def _guide_attention_hook(config: ELIPConfig):
    def guide_attention(block: Block, state: TokenState, attn: AttentionOutput, ctx: ForwardContext) -> TokenState:
        """cheap mode: the guide's attention over this layer's keys, stored for the next stage start."""
        scratch = _scratch(ctx)
        with torch.no_grad():
            cls_in, scratch.cls_in = scratch.cls_in, None
            guide = _guide(config, cls_in, ctx)
            if guide is not None:
                bias = self_attention_bias(state, ctx)
                scratch.scores = block.attn.query_attention(block.attn_input(guide), attn.keys, bias)
        return state

    return guide_attention


def _stage_hook(config: ELIPConfig, stage: list[Block], ratio: float):
    def reduce(block: Block, state: TokenState, ctx: ForwardContext) -> TokenState:
        with torch.no_grad():
            if config.mode == "cheap":
                scratch = _scratch(ctx)
                scores, scratch.scores = scratch.scores, None
            else:
                scores = _faithful_scores(config, stage, state, ctx)
        if scores is None:
            return state
        patch_scores = scores.mean(dim=1)[:, 1:]  # head-averaged, [CLS] excluded
        k = config.kept(ratio, int(ctx.num_patches))
        if k >= patch_scores.shape[1]:
            return state
        keep = patch_scores.topk(k, dim=1).indices
        weights = None
        if config.merge:
            weights = rest_weights(patch_scores, keep)
        return keep_and_fuse(state, keep, weights)

    return reduce


def _faithful_scores(config: ELIPConfig, stage: list[Block], state: TokenState, ctx: ForwardContext
                     ) -> torch.Tensor | None:
    """faithful mode: a no-grad pass of the stage's blocks on [guide, tokens]; its last block's guide attention."""
    guide = _guide(config, state.x[:, 0], ctx)
    if guide is None:
        return None
    probe = replace(state, x=torch.cat([guide[:, None], state.x[:, 1:]], dim=1).detach())
    for blk in stage[:-1]:
        probe = blk(probe, ctx, run_hooks=False)
    last = stage[-1]
    h = last.attn_input(probe.x)
    return last.attn.query_attention(h[:, 0], last.attn.keys_of(h), self_attention_bias(probe, ctx))
