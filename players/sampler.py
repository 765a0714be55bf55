"""Decode steps of a Llama-architecture player on a preallocated KV cache.

    decoder = LlamaDecoder.prepare(model)          # None when the model is not one it can run
    decoder.start(prefill.cache, prompt_mask, source, extra_tokens=max_new_tokens)
    logits = decoder.step(tokens, positions)       # [B, V] logits of the next token
    decoder.keep_rows(still_running)               # drop finished rows

Generation spends its time in one-token decode steps, and at batch 8 a 135M model's step is
a few dozen small matrix products. Through transformers' generic forward each step also pays
for Python dispatch in every module, a mask rebuilt from scratch, and a KV cache that grows by
`torch.cat` (copying every layer's keys and values once per token). This module runs the same
arithmetic directly: the projections (and a LoRA adapter's `B(A(x)) * scaling`, in the order
peft computes it), HF's own RMSNorm and rotary modules, and softmax attention over the prompt's
keys (each distinct prompt's once, however many rows continue it: the n samples of a state)
and each row's generated keys, held in buffers sized for the whole generation at the start
and written in place.

The prompt prefill stays a normal forward pass of the model; its cache is taken over by the
decoder. Behaviour log-probs therefore come from the same weights and the same operations as
the learner's forward pass; only float rounding differs (other matrix shapes and summation
orders), as it does for transformers' own decode loop against the learner's one-pass forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from players.cpu_linear import decode_linear, routes_to_onednn

# Module types whose arithmetic this file reproduces; anything else keeps the generic loop.
_SUPPORTED_MODEL_TYPES = ("llama",)


@dataclass(frozen=True)
class _Projection:
    """One linear layer as weights: the base weight and bias, plus each active LoRA (A, B, s);
    the base product runs as the model's own layer runs it (oneDNN when it was routed)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    adapters: tuple[tuple[torch.Tensor, torch.Tensor, float], ...]
    onednn: bool = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.onednn:
            result = decode_linear(x, self.weight, self.bias)
        else:
            result = functional.linear(x, self.weight, self.bias)
        for a, b, scaling in self.adapters:
            result = result + functional.linear(functional.linear(x, a), b) * scaling
        return result


def _projection(module: nn.Module) -> _Projection | None:
    """The weights a (possibly LoRA-wrapped) linear applies right now, or None if not plain."""
    if isinstance(module, nn.Linear):
        return _Projection(module.weight, module.bias, (), routes_to_onednn(module))
    base_layer = getattr(module, "base_layer", None)
    lora_a = getattr(module, "lora_A", None)
    if not isinstance(base_layer, nn.Linear) or lora_a is None:
        return None
    if getattr(module, "merged", False):
        return None
    onednn = routes_to_onednn(base_layer)
    if getattr(module, "disable_adapters", False):
        return _Projection(base_layer.weight, base_layer.bias, (), onednn)
    adapters = []
    for name in module.active_adapters:
        if name not in lora_a.keys():
            continue
        if name in getattr(module, "lora_variant", {}):  # DoRA and friends: not plain LoRA
            return None
        dropout = module.lora_dropout[name]
        if not isinstance(dropout, nn.Identity) and dropout.training:
            return None
        adapters.append((lora_a[name].weight, module.lora_B[name].weight, float(module.scaling[name])))
    return _Projection(base_layer.weight, base_layer.bias, tuple(adapters), onednn)


@dataclass(frozen=True)
class _Layer:
    input_norm: nn.Module
    q: _Projection
    k: _Projection
    v: _Projection
    o: _Projection
    post_norm: nn.Module
    gate: _Projection
    up: _Projection
    down: _Projection
    act: nn.Module


class LlamaDecoder:
    """The decode step of one Llama-style causal LM, with its adapters as they are now."""

    def __init__(self, model: nn.Module, layers: list[_Layer]) -> None:
        self.model = model
        self.layers = layers
        self.config = model.config
        self.heads = self.config.num_attention_heads
        self.kv_heads = self.config.num_key_value_heads
        self.groups = self.heads // self.kv_heads
        self.head_dim = getattr(self.config, "head_dim", None) or self.config.hidden_size // self.heads
        self.scaling = self.head_dim**-0.5
        # Prompt keys/values per layer, every distinct prompt once: [kv, P * Lp, D] when rows
        # share prompts, [kv, B, Lp, D] when each row has its own (per_row).
        self.prompt_keys: list[torch.Tensor] = []
        self.prompt_values: list[torch.Tensor] = []
        self.per_row = False
        # Generated keys/values per layer, one row per batch row: [kv, B, capacity, D].
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.prompt_bias = torch.empty(0)  # [1, B, 1, P * Lp or Lp]: 0 on the row's own prompt, -inf elsewhere
        self.length = 0  # generated positions written so far
        # The vocabulary projection ([B, H] x [V, H]^T, V = 49k for SmolLM2) as weight @ x^T on a
        # multi-threaded CPU when it runs through BLAS (MINMAX_ENGINE_CPU_LINEAR=blas): MKL
        # splits that product's long weight dimension across threads better. Measured at batch
        # 8, one process alternating the two: 2 threads 117 -> 128 tokens/s; 1 thread 91 vs 90
        # (no gain, so not used); the other projections lose by it. A head routed to oneDNN
        # (the default) reads oneDNN's packed weight instead, faster than either.
        self.head_weight_major = False

    @classmethod
    def prepare(cls, model: nn.Module) -> LlamaDecoder | None:
        """A decoder for `model` (a causal LM, possibly inside a PeftModel), or None when it
        has anything this file does not reproduce exactly (then the caller keeps HF's loop)."""
        causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = causal_lm.config
        if getattr(config, "model_type", None) not in _SUPPORTED_MODEL_TYPES or causal_lm.training:
            return None
        rope = getattr(config, "rope_parameters", None) or {}
        if "dynamic" in str(rope.get("rope_type", "default")) or getattr(config, "attention_dropout", 0.0):
            return None
        decoder = causal_lm.get_decoder()
        lm_head = causal_lm.get_output_embeddings()
        if not isinstance(lm_head, nn.Linear) or not isinstance(decoder.embed_tokens, nn.Embedding):
            return None
        layers = []
        for layer in decoder.layers:
            attention, mlp = layer.self_attn, layer.mlp
            projections = [
                _projection(module)
                for module in (
                    attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj,
                    mlp.gate_proj, mlp.up_proj, mlp.down_proj,
                )
            ]
            if any(projection is None for projection in projections):
                return None
            layers.append(_Layer(layer.input_layernorm, *projections[:4], layer.post_attention_layernorm, *projections[4:], mlp.act_fn))  # type: ignore[arg-type]
        return cls(causal_lm, layers)

    def start(self, cache: object, prompt_mask: torch.Tensor, source: torch.Tensor, extra_tokens: int) -> None:
        """Take over a prefill of the P distinct prompts: its KV cache ([P, kv, Lp, D] per
        layer) and [P, Lp] attention mask; row b of the batch continues prompt source[b].
        Room is made for `extra_tokens` generated positions."""
        prompts, prompt_length = prompt_mask.shape
        rows = source.shape[0]
        self.prompt_keys, self.prompt_values, self.keys, self.values = [], [], [], []
        # Rows sharing a prompt read one copy of its keys (at batch 8 the prompt's cache is
        # most of the bytes an attention step reads), scoring against every distinct prompt
        # and masking the others; rows with prompts of their own attend row by row, which
        # costs no more than one row's prompt each.
        self.per_row = prompts == rows and bool(torch.equal(source, torch.arange(rows, device=source.device)))
        for cached in cache.layers:  # type: ignore[attr-defined]
            if self.per_row:
                self.prompt_keys.append(cached.keys.transpose(0, 1).contiguous())
                self.prompt_values.append(cached.values.transpose(0, 1).contiguous())
            else:
                self.prompt_keys.append(cached.keys.transpose(0, 1).reshape(self.kv_heads, prompts * prompt_length, self.head_dim))
                self.prompt_values.append(cached.values.transpose(0, 1).reshape(self.kv_heads, prompts * prompt_length, self.head_dim))
            self.keys.append(cached.keys.new_empty((self.kv_heads, rows, extra_tokens, self.head_dim)))
            self.values.append(cached.values.new_empty((self.kv_heads, rows, extra_tokens, self.head_dim)))
        if self.per_row:
            visible = prompt_mask.bool()  # [B, Lp]
        else:
            own_prompt = source.unsqueeze(1) == torch.arange(prompts, device=source.device).unsqueeze(0)  # [B, P]
            visible = (own_prompt.unsqueeze(2) & prompt_mask.bool().unsqueeze(0)).view(rows, prompts * prompt_length)
        bias = torch.zeros(visible.shape, dtype=self.prompt_keys[0].dtype, device=source.device)
        self.prompt_bias = bias.masked_fill_(~visible, float("-inf")).view(1, rows, 1, -1)
        self.length = 0
        lm_head = self.model.get_output_embeddings()
        self.head_weight_major = (
            source.device.type == "cpu" and torch.get_num_threads() > 1 and not routes_to_onednn(lm_head)
        )

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Drop every batch row not in `rows` (finished sequences), keeping the order given."""
        self.keys = [keys.index_select(1, rows) for keys in self.keys]
        self.values = [values.index_select(1, rows) for values in self.values]
        self.prompt_bias = self.prompt_bias.index_select(1, rows)
        if self.per_row:
            self.prompt_keys = [keys.index_select(1, rows) for keys in self.prompt_keys]
            self.prompt_values = [values.index_select(1, rows) for values in self.prompt_values]

    @property
    def rows(self) -> int:
        return self.prompt_bias.shape[1]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """[B] next tokens at [B] positions -> [B, V] logits; the tokens join the cache."""
        decoder = self.model.get_decoder()
        slot = self.length
        self.length += 1
        batch = tokens.shape[0]
        hidden = functional.embedding(tokens, decoder.embed_tokens.weight)  # [B, H]
        cos, sin = decoder.rotary_emb(hidden, positions.unsqueeze(1))  # [B, 1, D]: broadcast over heads
        for layer, prompt_keys, prompt_values, keys, values in zip(
            self.layers, self.prompt_keys, self.prompt_values, self.keys, self.values
        ):
            normed = layer.input_norm(hidden)
            query = layer.q(normed).view(batch, self.heads, self.head_dim)
            key = layer.k(normed).view(batch, self.kv_heads, self.head_dim)
            query = query * cos + _rotate_half(query) * sin
            keys[:, :, slot] = (key * cos + _rotate_half(key) * sin).transpose(0, 1)
            values[:, :, slot] = layer.v(normed).view(batch, self.kv_heads, self.head_dim).transpose(0, 1)
            attended = self._attend(query, prompt_keys, prompt_values, keys[:, :, : self.length], values[:, :, : self.length])
            hidden = hidden + layer.o(attended)
            normed = layer.post_norm(hidden)
            hidden = hidden + layer.down(layer.act(layer.gate(normed)) * layer.up(normed))
        lm_head = self.model.get_output_embeddings()
        normed = decoder.norm(hidden)
        if routes_to_onednn(lm_head):
            return decode_linear(normed, lm_head.weight, lm_head.bias)
        if self.head_weight_major:
            return _weight_major_linear(normed, lm_head.weight, lm_head.bias)
        return lm_head(normed)

    def _attend(
        self,
        query: torch.Tensor,
        prompt_keys: torch.Tensor,
        prompt_values: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
    ) -> torch.Tensor:
        """Softmax attention of each row's query ([B, heads, D]) over its prompt's positions and
        its own generated ones; [B, heads * D], heads in the model's order."""
        batch = query.shape[0]
        # Head h reads key/value head h // groups: [kv, B, groups, D].
        grouped = query.view(batch, self.kv_heads, self.groups, self.head_dim).transpose(0, 1)
        if self.per_row:
            prompt_scores = torch.matmul(grouped, prompt_keys.transpose(2, 3))  # [kv, B, groups, Lp]
        else:
            prompt_scores = torch.matmul(
                grouped.reshape(self.kv_heads, batch * self.groups, self.head_dim), prompt_keys.transpose(1, 2)
            ).view(self.kv_heads, batch, self.groups, -1)
        own_scores = torch.matmul(grouped, keys.transpose(2, 3))  # [kv, B, groups, T]
        scores = torch.cat((prompt_scores * self.scaling + self.prompt_bias, own_scores * self.scaling), dim=-1)
        weights = torch.softmax(scores, dim=-1)
        prompt_width = prompt_scores.shape[-1]
        if self.per_row:
            from_prompt = torch.matmul(weights[..., :prompt_width], prompt_values)
        else:
            from_prompt = torch.matmul(
                weights[..., :prompt_width].reshape(self.kv_heads, batch * self.groups, prompt_width), prompt_values
            ).view(self.kv_heads, batch, self.groups, self.head_dim)
        attended = from_prompt + torch.matmul(weights[..., prompt_width:], values)
        return attended.transpose(0, 1).reshape(batch, self.heads * self.head_dim)


def _weight_major_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T computed as (weight @ x.T).T: the weight as the left operand (equal up to
    float rounding)."""
    result = torch.mm(weight, x.t()).t()
    return result if bias is None else result + bias


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
