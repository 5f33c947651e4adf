"""Transformer building blocks: MLP, encoder blocks for the four variants, the encoder."""
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vivit_jax.models import attention as attn
from vivit_jax.models.remat import REMAT_POLICIES, remat_policy_name
from vivit_jax.models.partitioning import EMBED, MLP, MLP_HIDDEN, TOKENS, axes, constrain

ATTENTION_KERNEL_INITIALIZERS = {
    "xavier": nn.initializers.xavier_uniform(),
    "zero": nn.initializers.zeros,
}


def layer_norm(name: str | None = None, dtype=jnp.float32) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=1e-6, dtype=dtype, name=name,
      scale_init=axes(nn.initializers.ones, (EMBED,)),
      bias_init=axes(nn.initializers.zeros, (EMBED,)))


def _tokens_constraint(x):
  # [b, l, d] sequences only; Model 3/4 blocks see [b, t, n, d] and stay unconstrained there.
  return constrain(x, TOKENS) if x.ndim == 3 else x


class MlpBlock(nn.Module):
  """Dense → GELU → dropout → Dense → dropout."""
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    d = x.shape[-1]
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    y = dense(self.mlp_dim,
              kernel_init=axes(nn.initializers.xavier_uniform(), (EMBED, MLP)),
              bias_init=axes(nn.initializers.normal(stddev=1e-6), (MLP,)))(x)
    if y.ndim == 3:
      y = constrain(y, MLP_HIDDEN)
    y = nn.gelu(y)  # tanh approximation, as flax/Scenic
    y = nn.Dropout(self.dropout_rate)(y, deterministic)
    y = dense(d,
              kernel_init=axes(nn.initializers.xavier_uniform(), (MLP, EMBED)),
              bias_init=axes(nn.initializers.normal(stddev=1e-6), (EMBED,)))(y)
    return nn.Dropout(self.dropout_rate)(y, deterministic)


class DropPath(nn.Module):
  """Stochastic depth: drops the whole residual branch per example with probability `rate`.

  As in Scenic, kept branches are not rescaled by 1/(1-rate), so eval needs no correction and
  fine-tuning Scenic checkpoints keeps their statistics.
  """
  rate: float = 0.0

  @nn.compact
  def __call__(self, branch: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return branch
    shape = (branch.shape[0],) + (1,) * (branch.ndim - 1)
    drop = jax.random.bernoulli(self.make_rng("dropout"), self.rate, shape)
    return jnp.where(drop, jnp.zeros_like(branch), branch)


class EncoderBlock(nn.Module):
  """Pre-LN block: x + MHSA(LN(x)); x + MLP(LN(x)). Models 1, 2 and (on [b,t,n,d]) 4."""
  mlp_dim: int
  num_heads: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  droplayer_p: float = 0.0
  attention_fn: Callable = attn.full_attention
  attention_implementation: str | None = None
  deterministic: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    det = self.deterministic
    x = layer_norm(dtype=self.dtype)(inputs)
    x = attn.MultiHeadDotProductAttention(
        self.num_heads, attention_fn=self.attention_fn, dropout_rate=self.attention_dropout_rate,
        implementation=self.attention_implementation, dtype=self.dtype)(x, det)
    x = nn.Dropout(self.dropout_rate)(x, det)
    x = _tokens_constraint(DropPath(self.droplayer_p)(x, det) + inputs)
    y = layer_norm(dtype=self.dtype)(x)
    y = MlpBlock(self.mlp_dim, self.dropout_rate, dtype=self.dtype)(y, det)
    return _tokens_constraint(DropPath(self.droplayer_p)(y, det) + x)


class FactorizedSelfAttentionBlock(nn.Module):
  """Model 3: x + MHSA_time(LN(x)), x + MHSA_space(LN(x)) (in `attention_order`), x + MLP(LN(x)).

  Operates on `[b, t, n, d]`. Unlike Scenic, stochastic depth applies here too, to each of the
  three residual branches.
  """
  mlp_dim: int
  num_heads: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  droplayer_p: float = 0.0
  attention_order: str = "time_space"
  attention_kernel_init_method: str = "xavier"
  attention_implementation: str | None = None
  deterministic: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    det = self.deterministic
    orders = {"time_space": ("time", "space"), "space_time": ("space", "time")}
    if self.attention_order not in orders:
      raise ValueError(f"model.attention_config.attention_order={self.attention_order!r}; "
                       f"valid: {sorted(orders)}")
    if self.attention_kernel_init_method not in ATTENTION_KERNEL_INITIALIZERS:
      raise ValueError(
          f"model.attention_config.attention_kernel_init_method="
          f"{self.attention_kernel_init_method!r}; valid: {sorted(ATTENTION_KERNEL_INITIALIZERS)}")
    b, t, n, d = x.shape
    for axis_name in orders[self.attention_order]:
      axis = 1 if axis_name == "time" else 2
      y = layer_norm(f"LayerNorm_{axis_name}", dtype=self.dtype)(x)
      y = attn.MultiHeadDotProductAttention(
          self.num_heads, attention_fn=functools.partial(attn._attend_along, axis),
          kernel_init=ATTENTION_KERNEL_INITIALIZERS[self.attention_kernel_init_method],
          dropout_rate=self.attention_dropout_rate, implementation=self.attention_implementation,
          dtype=self.dtype, name=f"MultiHeadDotProductAttention_{axis_name}")(y, det)
      y = nn.Dropout(self.dropout_rate)(y, det)
      x = x + DropPath(self.droplayer_p)(y, det)
    y = layer_norm("LayerNorm_mlp", dtype=self.dtype)(x)
    y = MlpBlock(self.mlp_dim, self.dropout_rate, dtype=self.dtype, name="MlpBlock")(y, det)
    return x + DropPath(self.droplayer_p)(y, det)


class AddPositionEmbs(nn.Module):
  """Learned 1D position embedding `pos_embedding [1, l, d]`."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pe = self.param("pos_embedding", axes(nn.initializers.normal(stddev=0.02), (None, None, EMBED)),
                    (1,) + x.shape[1:], jnp.float32)
    return x + pe.astype(x.dtype)


class Encoder(nn.Module):
  """Position embedding → dropout → `num_layers` blocks → LayerNorm.

  `block_type`:
    'spacetime'  (Models 1, 2): EncoderBlock on `[b, l, d]`.
    'factorized_self_attention_block' (Model 3): `[b, t*n, d]` viewed as `[b, t, n, d]`.
    'factorized_dot_product_attention' (Model 4): likewise, heads split over time/space.
  `temporal_dims` (t) is needed by the factorised types.
  """
  num_layers: int
  mlp_dim: int
  num_heads: int
  block_type: str = "spacetime"
  temporal_dims: int | None = None
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_droplayer_rate: float = 0.0
  attention_order: str = "time_space"
  attention_kernel_init_method: str = "xavier"
  attention_implementation: str | None = None
  remat: str | bool = "none"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if x.ndim != 3:
      raise ValueError(f"Encoder input must be [batch, tokens, hidden], got {x.shape}")
    b, l, d = x.shape
    x = AddPositionEmbs(name="posembed_input")(x)
    x = nn.Dropout(self.dropout_rate)(x, not train)

    common = dict(mlp_dim=self.mlp_dim, num_heads=self.num_heads, dropout_rate=self.dropout_rate,
                  attention_dropout_rate=self.attention_dropout_rate,
                  attention_implementation=self.attention_implementation,
                  deterministic=not train, dtype=self.dtype)
    if self.block_type == "spacetime":
      block_cls, extra = EncoderBlock, {}
    elif self.block_type == "factorized_self_attention_block":
      block_cls = FactorizedSelfAttentionBlock
      extra = dict(attention_order=self.attention_order,
                   attention_kernel_init_method=self.attention_kernel_init_method)
    elif self.block_type == "factorized_dot_product_attention":
      block_cls, extra = EncoderBlock, dict(attention_fn=attn.factorized_dot_product_attention)
    else:
      raise ValueError(f"unknown encoder block type {self.block_type!r}")
    if self.block_type != "spacetime":
      t = self.temporal_dims
      if not t or l % t:
        raise ValueError(f"{l} tokens cannot be viewed as {t} frames (temporal_dims)")
      x = x.reshape(b, t, l // t, d)
    policy = remat_policy_name(self.remat)
    if policy != "none":
      block_cls = nn.remat(block_cls, policy=REMAT_POLICIES[policy])

    for i in range(self.num_layers):
      # Stochastic depth rises linearly from 0 at the first block to the rate at the last.
      p = i / max(self.num_layers - 1, 1) * self.stochastic_droplayer_rate
      x = block_cls(droplayer_p=p, name=f"encoderblock_{i}", **common, **extra)(x)

    x = _tokens_constraint(x.reshape(b, l, d))
    return layer_norm("encoder_norm", dtype=self.dtype)(x)
