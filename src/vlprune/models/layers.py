"""Transformer building blocks and the hook points every vlprune method uses.

Methods never patch model code. They act only through:

* ``Block.pre_hook(block, state, ctx) -> state`` — runs before the block (stage reducers: ELIP);
* ``Block.mid_hook(block, state, attn, ctx) -> state`` — runs between the self-attention residual and
  the MLP (ToMe, EViT, TRIPS); ``attn`` is the ``AttentionOutput`` of this layer;
* ``Block.wants_cls_attn`` / ``Block.wants_keys`` — ask the self-attention for the head-wise [CLS]
  attention row ``(B, H, N)`` or the keys ``(B, H, N, d)`` (then the math path is used);
  ``Block.reset_hooks()`` / ``VisionTransformer.reset_hooks()`` / ``TextTransformer.reset_hooks()`` remove them;
* ``ForwardContext.guide`` / ``num_patches`` / ``pool_index`` / ``image_embedding`` — what the model provides
  to a method's hooks (text guide, original patch count, pooled text position, paired image embedding);
  ``ForwardContext.method_state`` — the attached method's own per-call scratch (the model never reads it);
* ``model.attached`` — an ``AttachedMethods`` handle: the installed configs and the capabilities
  (``text_guided_image``, ``image_guided_text``) the model asks about; the model knows no method by name;
* ``ctx.head_gates[layer_key]`` — a per-head gate ``(B, H)`` multiplied into the head outputs (SmartTrim);
  cross-attention uses the key ``layer_key + ".cross"``;
* ``ctx.head_index[layer_key]`` — indices ``(h,)`` of the only heads to compute: the others are physically
  skipped (SmartTrim's hard masks); a gate given beside it is ``(B, h)``, one entry per computed head;
* ``TokenState.log_keep`` / ``ctx.encoder_log_keep`` — a float ``(B, N)`` added to the attention logits of
  the keys (self-attention / cross-attention): ``log M`` of a soft keep mask, 0 keeps, -inf removes (SmartTrim);
* ``ctx.cross_cls_attn`` — a dict: each fusion layer stores the head-wise cross-attention of its [CLS] query
  over the image tokens ``(B, H, M)`` under its key (then the math path is used; attention supervision);
* ``TokenState.size`` — tokens that stand for several patches add ``log(size)`` to their attention
  logits (ToMe proportional attention) when ``ctx.proportional_attn`` is on;
* ``TokenState.mask`` — boolean key mask ``(B, N)``; masked keys get no attention;
* ``Block.structure`` — a ``StructureMask`` (soft structured pruning, MoPE-CLIP): per-head and per-FFN-neuron
  multipliers, or the whole layer skipped. A float mask with ``requires_grad`` yields Taylor importances.

``num_heads`` and ``intermediate_size`` may be 0: the sub-layer then outputs zeros and its residual
passes through (structurally pruned models).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from vlprune.config import TowerConfig


@dataclass
class TokenState:
    """The sequence flowing through a tower.

    ``x`` (B, N, D); ``size`` (B, N, 1) — original patches each token stands for (None = all ones);
    ``source`` (B, N, N0) — which original tokens each token covers (optional, for visualisation);
    ``mask`` (B, N) bool — True where the token is a real key (None = all real); ``log_keep`` (B, N) float —
    added to the key logits (``log M`` of a soft keep mask; None = 0). [CLS] stays at index 0.
    """

    x: torch.Tensor
    size: torch.Tensor | None = None
    source: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    log_keep: torch.Tensor | None = None


@dataclass
class ForwardContext:
    """Per-call information shared by all blocks of a tower."""

    causal: bool = False
    encoder_states: torch.Tensor | None = None       # image tokens for cross-attention
    encoder_mask: torch.Tensor | None = None         # (B, M) bool
    encoder_log_keep: torch.Tensor | None = None     # (B, M) float, added to the cross-attention key logits
    proportional_attn: bool = False
    head_gates: dict[str, torch.Tensor] = field(default_factory=dict)
    head_index: dict[str, torch.Tensor] = field(default_factory=dict)  # heads to compute; others skipped
    cross_cls_attn: dict[str, torch.Tensor] | None = None  # filled by fusion layers when a dict is given
    # what the model provides to an attached method (None where this call has none):
    guide: torch.Tensor | None = None            # (B, vision width) text guide of the paired text (image tower)
    num_patches: int | None = None               # M, the original patch count (image tower)
    pool_index: torch.Tensor | None = None       # (B,) position of the pooled text token (text tower)
    image_embedding: torch.Tensor | None = None  # (B, embed_dim) normalised paired image (text tower)
    # the attached method's own scratch for this call (e.g. ELIP's ``ELIPScratch``); the model never reads it
    method_state: object | None = None


@dataclass(frozen=True)
class AttachedMethods:
    """What ``vlprune.apply`` / ``apply_text_pruning`` installed on a model (``model.attached``), opaque to the
    model: the configs, and the capabilities the model asks about to order its towers.

    ``text_guided_image``: the image method selects with the paired text's guide (encode the text first);
    ``image_guided_text``: the text method ranks tokens by the paired image's embedding (encode the image first).
    """

    image: object | None = None  # the image-token method's config
    text: object | None = None   # the text-token method's config
    text_guided_image: bool = False
    image_guided_text: bool = False


@dataclass
class StructureMask:
    """Soft structured pruning of one block: ``heads`` (H,) multiplies each self-attention head's output,
    ``neurons`` (hidden,) each FFN activation (1 keeps, 0 removes); ``drop`` skips the block entirely.

    A sub-layer whose mask is all zero outputs zeros, as a sub-layer with 0 heads / 0 neurons does, so a masked
    model equals the physically pruned one (``vlprune.structured.prune``).
    """

    heads: torch.Tensor | None = None
    neurons: torch.Tensor | None = None
    drop: bool = False


def _removes_all(mask: torch.Tensor | None) -> bool:
    return mask is not None and not bool(mask.any())


@dataclass
class AttentionOutput:
    out: torch.Tensor
    cls_attn: torch.Tensor | None = None   # (B, H, N) attention of the [CLS] query over keys
    keys: torch.Tensor | None = None       # (B, H, N, d)


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": F.relu,
}


def key_bias(mask: torch.Tensor | None, size: torch.Tensor | None, dtype: torch.dtype,
             log_keep: torch.Tensor | None = None) -> torch.Tensor | None:
    """Additive attention bias (B, 1, 1, N) from a key mask, for proportional attention log(size), and a
    float ``log_keep`` (SmartTrim's log M)."""
    bias = None
    if size is not None:
        bias = size.squeeze(-1).to(dtype).log()[:, None, None, :]
    if log_keep is not None:
        keep = log_keep.to(dtype)[:, None, None, :]
        bias = keep if bias is None else bias + keep
    if mask is not None:
        masked = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
        masked = masked[:, None, None, :]
        bias = masked if bias is None else bias + masked
    return bias


def self_attention_bias(state: TokenState, ctx: ForwardContext) -> torch.Tensor | None:
    """The key bias a block's self-attention uses: key mask, log_keep, plus log(size) under proportional
    attention."""
    return key_bias(state.mask, state.size if ctx.proportional_attn else None, state.x.dtype, state.log_keep)


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/o projections and a per-layer head count.

    ``kv_dim`` differs from ``dim`` for cross-attention (text queries, image keys/values).
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, kv_dim: int | None = None, bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        inner = num_heads * head_dim
        kv_dim = dim if kv_dim is None else kv_dim
        self.q = nn.Linear(dim, inner, bias=bias)
        self.k = nn.Linear(kv_dim, inner, bias=bias)
        self.v = nn.Linear(kv_dim, inner, bias=bias)
        self.o = nn.Linear(inner, dim, bias=True)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, -1, self.head_dim).transpose(1, 2)

    def _rows(self, heads: torch.Tensor) -> torch.Tensor:
        """Feature indices of the heads ``heads`` in the q/k/v outputs (and o inputs)."""
        offsets = torch.arange(self.head_dim, device=heads.device)
        return (heads[:, None] * self.head_dim + offsets).flatten()

    def _project(self, linear: nn.Linear, t: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        if rows is None:
            return self._heads(linear(t))
        bias = None if linear.bias is None else linear.bias[rows]
        return self._heads(F.linear(t, linear.weight[rows], bias))

    def forward(
        self,
        x: torch.Tensor,
        kv: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        causal: bool = False,
        head_gate: torch.Tensor | None = None,
        want_cls_attn: bool = False,
        want_keys: bool = False,
        heads: torch.Tensor | None = None,
    ) -> AttentionOutput:
        """``heads`` (h,): compute only these heads (the others count as gated to 0); ``head_gate`` is then
        (B, h)."""
        if self.num_heads == 0:
            return AttentionOutput(out=torch.zeros_like(x))
        rows = None if heads is None else self._rows(heads)
        if rows is not None and rows.numel() == 0:  # every head removed: only the output bias is left
            return AttentionOutput(out=self.o.bias.expand_as(x).clone())
        kv = x if kv is None else kv
        q, k, v = (self._project(lin, t, rows) for lin, t in ((self.q, x), (self.k, kv), (self.v, kv)))
        cls_attn = None
        if want_cls_attn:
            probs = self._probs(q, k, bias, causal)
            ctx = probs @ v
            cls_attn = probs[:, :, 0, :]
        else:
            if causal:
                n = x.shape[1]
                causal_bias = torch.full((n, n), float("-inf"), dtype=q.dtype, device=q.device).triu(1)
                bias = causal_bias if bias is None else bias + causal_bias
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        if head_gate is not None:
            ctx = ctx * head_gate[:, :, None, None].to(ctx.dtype)
        b, h, n, _ = ctx.shape
        flat = ctx.transpose(1, 2).reshape(b, n, h * self.head_dim)
        out = self.o(flat) if rows is None else F.linear(flat, self.o.weight[:, rows], self.o.bias)
        return AttentionOutput(out=out, cls_attn=cls_attn, keys=k if want_keys else None)

    def keys_of(self, x: torch.Tensor) -> torch.Tensor:
        """Keys (B, H, N, d) of an already normalised input."""
        return self._heads(self.k(x))

    def query_attention(self, query: torch.Tensor, keys: torch.Tensor, bias: torch.Tensor | None = None
                        ) -> torch.Tensor:
        """Attention (B, H, N) of one extra query token ``query`` (B, D), projected by this layer's W_q, over
        ``keys`` — how ELIP's guide and TRIPS's text [CLS] look at the image tokens."""
        q = self.q(query[:, None]).view(query.shape[0], 1, self.num_heads, self.head_dim).transpose(1, 2)
        return self._probs(q, keys, bias, causal=False)[:, :, 0]

    def _probs(self, q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None, causal: bool) -> torch.Tensor:
        logits = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5
        if bias is not None:
            logits = logits + bias
        if causal:
            n = q.shape[2]
            logits = logits.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        return logits.softmax(dim=-1)


class MLP(nn.Module):
    """Two-layer feed-forward network; ``hidden`` may be 0 (outputs zeros)."""

    def __init__(self, dim: int, hidden: int, act: str):
        super().__init__()
        self.hidden = hidden
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = _ACTIVATIONS[act]

    def forward(self, x: torch.Tensor, neuron_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``neuron_mask`` (hidden,) multiplies the activations (``StructureMask.neurons``)."""
        if self.hidden == 0 or _removes_all(neuron_mask):
            return torch.zeros_like(x)
        hidden = self.act(self.fc1(x))
        return self.fc2(hidden if neuron_mask is None else hidden * neuron_mask)


PreHook = Callable[["Block", TokenState, ForwardContext], TokenState]
MidHook = Callable[["Block", TokenState, AttentionOutput, ForwardContext], TokenState]


class Block(nn.Module):
    """Transformer layer: self-attention, optional cross-attention, MLP; pre-LN or post-LN."""

    def __init__(self, cfg: TowerConfig, layer: int, key: str, cross_dim: int | None = None):
        super().__init__()
        dim, eps = cfg.width, cfg.layer_norm_eps
        self.key = key  # e.g. "vision.3": names this layer for hooks, gates and reports
        self.layer = layer
        self.pre_norm = cfg.pre_norm
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, cfg.num_heads[layer], cfg.head_dim, bias=cfg.qkv_bias)
        self.cross_attn: Attention | None = None
        self.norm_cross: nn.LayerNorm | None = None
        if cross_dim is not None:
            self.norm_cross = nn.LayerNorm(dim, eps=eps)
            self.cross_attn = Attention(dim, cfg.num_heads[layer], cfg.head_dim, kv_dim=cross_dim,
                                        bias=cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, cfg.intermediate_size[layer], cfg.act)
        self.structure: StructureMask | None = None
        self.pre_hook: PreHook | None = None
        self.mid_hook: MidHook | None = None
        self.wants_cls_attn = False
        self.wants_keys = False

    def reset_hooks(self) -> None:
        """Remove what a token method installed (hooks and attention requests); ``structure`` stays."""
        self.pre_hook = self.mid_hook = None
        self.wants_cls_attn = self.wants_keys = False

    def _residual(self, x: torch.Tensor, norm: nn.LayerNorm, fn: Callable[[torch.Tensor], torch.Tensor]):
        if self.pre_norm:
            return x + fn(norm(x))
        return norm(x + fn(x))

    def attn_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the self-attention sees: normalised input (pre-LN) or the input itself (post-LN)."""
        return self.norm1(x) if self.pre_norm else x

    def forward(self, state: TokenState, ctx: ForwardContext, use_cross: bool = True,
                run_hooks: bool = True) -> TokenState:
        """``run_hooks=False`` runs the plain layer (a method's own extra pass, e.g. ELIP's faithful mode)."""
        structure = self.structure or StructureMask()
        if structure.drop:
            return state
        if self.pre_hook is not None and run_hooks:
            state = self.pre_hook(self, state, ctx)
        bias = self_attention_bias(state, ctx)
        attn_out: list[AttentionOutput] = []

        def self_attention(h: torch.Tensor) -> torch.Tensor:
            if _removes_all(structure.heads):
                result = AttentionOutput(out=torch.zeros_like(h))
            else:
                result = self.attn(h, bias=bias, causal=ctx.causal, head_gate=self._head_gate(ctx, structure),
                                   want_cls_attn=self.wants_cls_attn and run_hooks,
                                   want_keys=self.wants_keys and run_hooks, heads=ctx.head_index.get(self.key))
            attn_out.append(result)
            return result.out

        state = replace(state, x=self._residual(state.x, self.norm1, self_attention))
        if self.mid_hook is not None and run_hooks:
            state = self.mid_hook(self, state, attn_out[0], ctx)
        if self.cross_attn is not None and use_cross:
            if ctx.encoder_states is None:
                raise ValueError(f"layer {self.key} is a fusion layer and needs image tokens (encoder_states)")
            cross_bias = key_bias(ctx.encoder_mask, None, state.x.dtype, ctx.encoder_log_keep)

            def cross_attention(h: torch.Tensor) -> torch.Tensor:
                key = self.key + ".cross"
                record = ctx.cross_cls_attn is not None
                result = self.cross_attn(h, kv=ctx.encoder_states, bias=cross_bias, head_gate=ctx.head_gates.get(key),
                                         want_cls_attn=record, heads=ctx.head_index.get(key))
                if record:
                    ctx.cross_cls_attn[self.key] = result.cls_attn
                return result.out

            state = replace(state, x=self._residual(state.x, self.norm_cross, cross_attention))
        return replace(state, x=self._residual(state.x, self.norm2, lambda h: self.mlp(h, structure.neurons)))

    def _head_gate(self, ctx: ForwardContext, structure: StructureMask) -> torch.Tensor | None:
        """The per-sample gate of ``ctx.head_gates`` times the structural head mask (either may be absent)."""
        gate = ctx.head_gates.get(self.key)
        if structure.heads is None:
            return gate
        return structure.heads[None] if gate is None else gate * structure.heads[None]
