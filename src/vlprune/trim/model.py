"""``SmartTrim``: a fusion model plus its trimmers, and the forward pass that trims tokens and heads per input.

Order of computation (each trimmer needs the other modality's [CLS]):

1. image patch embedding; its mean patch feature is the image summary ``c_c`` of the text encoder's trimmers
   (the vision [CLS] carries no image information before the first vision layer);
2. text encoder (``TextTransformer.unimodal``), trimmed, ``c_c`` = image summary; layers the fusion pass also
   runs (every layer of a BLIP-style model, ``fusion_from_embeddings``) are trimmed there only, so here they
   run untrimmed;
3. vision encoder, trimmed, ``c_c`` = the text [CLS] of step 2 (as TRIPS, the text is encoded first);
4. fusion layers (``FusionModel.fuse`` on ``FusionModel.fusion_input``: text tokens, cross-attention to the
   kept image tokens), trimmed, ``c_c`` = final vision [CLS].

Steps 2-4 are the model's own passes; SmartTrim only adds a step before each layer (their ``before``).

Before every layer the token trimmer scores the non-[CLS] tokens and the head trimmers score the heads of the
layer's self-attention (and cross-attention). Modes:

* ``soft`` (training): Gumbel-sigmoid masks (eq. 8); tokens are masked as keys with ``log M`` (cumulative over
  layers), head outputs are multiplied by their mask;
* ``masked``: hard masks ``[π > 0]`` applied the same way (0 / -inf key logits, 0/1 head gates);
* ``hard`` (inference): the same decisions, but removed tokens leave the sequence (a batch is padded to its
  largest kept count, with key masks) and only heads some input keeps are computed; at batch size 1 this is
  physical removal, so the compute follows the input;
* ``full``: no trimming, ``f(x, ∅)`` — exactly the base model.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from vlprune.models.fusion import FusionModel
from vlprune.models.layers import Block, ForwardContext, PreHook, TokenState
from vlprune.trim.config import SmartTrimConfig
from vlprune.trim.gumbel import gumbel_sigmoid_log, hard_log, logistic_noise
from vlprune.trim.losses import keep_ratio
from vlprune.trim.schedule import curriculum_target
from vlprune.trim.trimmers import HeadTrimmer, TokenTrimmer

MODES = ("soft", "masked", "hard", "full")


@dataclass
class TrimRecord:
    """Per module name (``tokens:vision.3``, ``heads:text.4.cross`` …): the keep masks one forward used.

    Tokens: ``keep`` (B, N-1) cumulative keep mask of the non-[CLS] tokens entering the layer (soft or 0/1) and
    ``valid`` (B, N-1) bool (not padding). Heads: ``keep`` (B, H), ``valid`` None. ``scored``: False for a
    ``full`` forward, which runs no trimmer (so their cost does not count).
    """

    keep: dict[str, torch.Tensor] = field(default_factory=dict)
    valid: dict[str, torch.Tensor | None] = field(default_factory=dict)
    scored: bool = True

    def counts(self, name: str) -> torch.Tensor:
        """(B,) tokens entering the layer ([CLS] included) or heads kept, as floats."""
        keep, valid = self.keep[name], self.valid[name]
        if valid is None:
            return keep.sum(dim=1)
        return (keep * valid).sum(dim=1) + 1.0

    def ratio(self, name: str) -> torch.Tensor:
        """β of one module (eq. 10), over the batch."""
        return keep_ratio(self.keep[name], self.valid[name])


@dataclass
class TrimOutput:
    cls: torch.Tensor          # (B, D) fused [CLS]
    record: TrimRecord


def cost_group(name: str) -> str:
    """The cost-loss module a trimmer belongs to: token trimming of one tower, or heads of one attention kind."""
    kind, key = name.split(":")
    tower = key.split(".")[0]
    return f"{kind}:{tower}" + (".cross" if key.endswith(".cross") else "")


def _module_key(name: str) -> str:
    return name.replace(":", "__").replace(".", "_")


class SmartTrim(nn.Module):
    """``model`` (a ``FusionModel``, weights shared with the untrimmed network) plus the trimmers of ``config``."""

    def __init__(self, model: FusionModel, config: SmartTrimConfig):
        super().__init__()
        config.check(model.config)
        self.model, self.config = model, config
        self.trimmers = nn.ModuleDict()
        vision, text = model.config.vision, model.config.text
        towers = [(b, vision.width, text.width) for b in model.visual.blocks]
        towers += [(b, text.width, vision.width) for b in model.text.blocks]
        for block, dim, other in towers:
            if config.tokens in ("cross", "local"):
                self.trimmers[_module_key("tokens:" + block.key)] = TokenTrimmer(
                    dim, other, config.trimmer_dim, config.init_logit, use_global=config.tokens == "cross")
            if config.heads == "learned":
                for key, attn, d_in in self._attentions(block, dim, other):
                    self.trimmers[_module_key("heads:" + key)] = HeadTrimmer(d_in, attn.num_heads, config.trimmer_dim,
                                                                             config.init_logit)
        self.generator: torch.Generator | None = None  # random baselines at evaluation (seeded by the caller)

    @staticmethod
    def _attentions(block: Block, dim: int, other: int):
        yield block.key, block.attn, dim
        if block.cross_attn is not None:
            yield block.key + ".cross", block.cross_attn, dim + other

    def trimmer_params(self) -> int:
        return sum(p.numel() for p in self.trimmers.parameters())

    # -- the forward pass -----------------------------------------------------------------------------------

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                mode: str = "masked", probe: dict[str, torch.Tensor] | None = None) -> TrimOutput:
        """Fused [CLS] and the record of what was kept. ``probe`` (``full`` mode only): per attention module
        key a (B, H) gate multiplied into the heads, for gradient head importance."""
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: expected one of {MODES}")
        m, record = self.model, TrimRecord(scored=mode != "full")
        image, image_ctx = m.visual.begin(pixel_values)
        summary = image.x[:, 1:].mean(dim=1)
        fusion = set(m.text.fusion_blocks())  # trimmed in the fusion pass (BLIP: every layer)
        text = m.text.unimodal(m.text.embed(input_ids, attention_mask), m.text.context(),
                               self._trimming(summary, mode, record, probe, skip=fusion))
        image = m.visual.run(image, image_ctx, before=self._trimming(text.x[:, 0], mode, record, probe))
        image = replace(image, x=m.visual.norm(image.x))
        fused = m.fuse(m.fusion_input(input_ids, attention_mask, text), image,
                       before=self._trimming(image.x[:, 0], mode, record, probe))
        return TrimOutput(cls=fused.x[:, 0], record=record)

    def vqa_logits(self, pixel_values, input_ids, attention_mask=None, mode: str = "masked") -> torch.Tensor:
        return self.model.vqa_head(self(pixel_values, input_ids, attention_mask, mode).cls)

    def itm_logits(self, pixel_values, input_ids, attention_mask=None, mode: str = "masked") -> torch.Tensor:
        return self.model.itm_head(self(pixel_values, input_ids, attention_mask, mode).cls)

    def _trimming(self, other_cls: torch.Tensor, mode: str, record: TrimRecord,
                  probe: dict[str, torch.Tensor] | None, skip: Collection[Block] = ()) -> PreHook:
        """The step the model's pass runs before each of its layers (``before``): trim the tokens entering the
        layer and gate its heads, with ``other_cls`` as the other modality's [CLS]; layers in ``skip`` run
        untrimmed."""
        def before(block: Block, state: TokenState, ctx: ForwardContext) -> TokenState:
            if block in skip:
                return state
            state = self._trim_tokens(block, state, other_cls, mode, record)
            self._trim_heads(block, state.x[:, 0], other_cls, ctx, mode, record, probe)
            return state
        return before

    # -- tokens -----------------------------------------------------------------------------------------------

    def _trim_tokens(self, block: Block, state: TokenState, other_cls: torch.Tensor, mode: str,
                     record: TrimRecord) -> TokenState:
        name = "tokens:" + block.key
        b, n, _ = state.x.shape
        valid = state.mask[:, 1:] if state.mask is not None else torch.ones(b, n - 1, dtype=torch.bool,
                                                                           device=state.x.device)
        if mode == "full" or self.config.tokens == "off":
            previous = state.log_keep[:, 1:].exp() if state.log_keep is not None else valid.to(state.x.dtype)
            record.keep[name], record.valid[name] = previous, valid
            return state
        scores = self._token_scores(block, state, other_cls)
        learned = self.config.tokens != "random"
        log_m = gumbel_sigmoid_log(scores, self.config.temperature) if mode == "soft" and learned else hard_log(scores)
        cumulative = log_m if state.log_keep is None else state.log_keep[:, 1:] + log_m
        record.keep[name], record.valid[name] = cumulative.exp(), valid
        if mode == "hard":
            return compact(state, (cumulative > float("-inf")) & valid)
        return replace(state, log_keep=torch.cat([cumulative.new_zeros(b, 1), cumulative], dim=1))

    def _token_scores(self, block: Block, state: TokenState, other_cls: torch.Tensor) -> torch.Tensor:
        """π (B, N-1) of the non-[CLS] tokens; the random baseline draws ``logit(rate) + Logistic`` instead."""
        if self.config.tokens == "random":
            patches = state.x[:, 1:, 0]
            return self._random_scores(patches, self._token_rate(block))
        trimmer = self.trimmers[_module_key("tokens:" + block.key)]
        return trimmer(state.x[:, 1:], state.x[:, 0], other_cls)

    def _token_rate(self, block: Block) -> float:
        """Random baseline: the share of the still-kept tokens this layer keeps, so that the cumulative kept
        fraction follows ``keep_profile`` (or keeps the modality's target from the first layer on)."""
        tower, layer = block.key.split(".")
        target = self.config.target_vision if tower == "vision" else self.config.target_text
        profile = self.config.keep_profile or {}
        here = profile.get(f"tokens:{block.key}", target)
        before = profile.get(f"tokens:{tower}.{int(layer) - 1}", target) if int(layer) > 0 else 1.0
        return min(1.0, here / max(before, 1e-6))

    def _random_scores(self, like: torch.Tensor, rate: float) -> torch.Tensor:
        logit = torch.logit(torch.tensor(min(max(rate, 1e-6), 1.0), dtype=like.dtype))
        return logit + logistic_noise(like.shape, like, None if self.training else self.generator)

    # -- heads ------------------------------------------------------------------------------------------------

    def _trim_heads(self, block: Block, own_cls: torch.Tensor, other_cls: torch.Tensor, ctx: ForwardContext,
                    mode: str, record: TrimRecord, probe: dict[str, torch.Tensor] | None) -> None:
        other_dim = other_cls.shape[-1]
        for key, attn, _ in self._attentions(block, own_cls.shape[-1], other_dim):
            name = "heads:" + key
            ctx.head_gates.pop(key, None)
            ctx.head_index.pop(key, None)
            gate = self._head_gate(key, attn.num_heads, own_cls, other_cls, mode)
            record.keep[name], record.valid[name] = gate, None
            if mode == "full":
                if probe is not None:
                    ctx.head_gates[key] = probe[key]
            elif mode == "hard":
                kept = gate.bool().any(dim=0).nonzero().flatten()
                if kept.numel() < attn.num_heads:
                    ctx.head_index[key] = kept
                if not bool(gate[:, kept].bool().all()):
                    ctx.head_gates[key] = gate[:, kept]
            elif self.config.heads != "off":
                ctx.head_gates[key] = gate

    def _head_gate(self, key: str, heads: int, own_cls: torch.Tensor, other_cls: torch.Tensor,
                   mode: str) -> torch.Tensor:
        """(B, H) head keep mask: soft Gumbel-sigmoid in training, 0/1 otherwise (eq. 7-8)."""
        b = own_cls.shape[0]
        kind = "off" if mode == "full" else self.config.heads
        if kind == "off":
            return own_cls.new_ones(b, heads)
        if kind == "fixed":
            gate = own_cls.new_zeros(heads)
            gate[list(self.config.fixed_heads.get(key, range(heads)))] = 1.0
            return gate.expand(b, heads)
        if kind == "random":
            rate = (self.config.keep_profile or {}).get("heads:" + key, self.config.target_heads)
            return (self._random_scores(own_cls.new_empty(b, heads), rate) > 0).to(own_cls.dtype)
        cls = torch.cat([own_cls, other_cls], dim=-1) if key.endswith(".cross") else own_cls
        scores = self.trimmers[_module_key("heads:" + key)](cls)
        if mode == "soft":
            return gumbel_sigmoid_log(scores, self.config.temperature).exp()
        return (scores > 0).to(own_cls.dtype)

    # -- reporting --------------------------------------------------------------------------------------------

    def cost_ratios(self, record: TrimRecord) -> dict[str, torch.Tensor]:
        """β per cost module (eq. 10) of the learnable trimmers: mean over that module's layers."""
        learned = {"tokens": self.config.tokens in ("cross", "local"), "heads": self.config.heads == "learned"}
        groups: dict[str, list[torch.Tensor]] = {}
        for name in record.keep:
            if learned[name.split(":")[0]]:
                groups.setdefault(cost_group(name), []).append(record.ratio(name))
        return {g: torch.stack(v).mean() for g, v in groups.items()}

    def targets(self, step: int | None = None, total_steps: int | None = None) -> dict[str, float]:
        """γ per cost module: the configured targets, or at training step ``step`` of ``total_steps`` the linear
        curriculum's value (from 1.0 over the first ``config.curriculum`` of training)."""
        def at(target: float) -> float:
            if step is None or total_steps is None:
                return target
            return curriculum_target(target, step, total_steps, self.config.curriculum)

        out = {}
        if self.config.tokens in ("cross", "local"):
            out.update({"tokens:vision": at(self.config.target_vision), "tokens:text": at(self.config.target_text)})
        if self.config.heads == "learned":
            out.update({g: at(self.config.target_heads) for g in ("heads:vision", "heads:text", "heads:text.cross")})
        return out

    def trimmer_macs(self, record: TrimRecord, tower: str | None = None) -> torch.Tensor:
        """(B,) multiply-accumulates of the trimmers themselves, on the tokens present at each layer; ``tower``
        (``vision`` or ``text``): of that tower's trimmers only."""
        total = torch.zeros(next(iter(record.keep.values())).shape[0], dtype=torch.float64)
        if not record.scored:
            return total
        for name in record.keep:
            if tower is not None and not name.split(":")[1].startswith(tower + "."):
                continue
            module = self.trimmers[_module_key(name)] if _module_key(name) in self.trimmers else None
            if isinstance(module, TokenTrimmer):
                present = (record.counts(name) - 1).round().tolist()
                total += torch.tensor([module.macs(int(t)) for t in present], dtype=total.dtype)
            elif isinstance(module, HeadTrimmer):
                total += module.macs()
        return total


def compact(state: TokenState, keep: torch.Tensor) -> TokenState:
    """Keep [CLS] and the non-[CLS] tokens where ``keep`` (B, N-1), in their order, padded to the batch's largest
    kept count; the padding is masked out as keys (``mask``; None when nothing is padded)."""
    b, _, d = state.x.shape
    count = int(keep.sum(dim=1).max())
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :count]
    index = torch.cat([order.new_zeros(b, 1), order + 1], dim=1)
    x = state.x.gather(1, index[..., None].expand(-1, -1, d))
    mask = torch.cat([keep.new_ones(b, 1), keep.gather(1, order)], dim=1)
    return TokenState(x=x, mask=None if bool(mask.all()) else mask)
