"""Multi-head dot-product attention: full (Models 1-3) and head-factorised (Model 4).

Parameter layout is flax's `MultiHeadDotProductAttention` (and so Scenic's):
`query|key|value/kernel [d, heads, head_dim]`, `out/kernel [heads, head_dim, d]`.
"""
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vivit_jax.models.partitioning import EMBED, HEAD_DIM, HEADS, axes

# Valid values of `model.attention_implementation` (None: jax picks, i.e. 'xla').
IMPLEMENTATIONS = (None, "xla", "cudnn")


def dot_product_attention(q, k, v, *, dropout_rate: float = 0.0, deterministic: bool = True,
                          dropout_rng=None, implementation: str | None = None):
  """Attention over axis 1 of `q, k, v [b, l, heads, head_dim]` → `[b, l, heads, head_dim]`.

  Without attention dropout this is `jax.nn.dot_product_attention` (fused kernels on GPU:
  `implementation='cudnn'`). With dropout the weights must be materialised, so it runs the
  explicit softmax (weights in float32).
  """
  if deterministic or dropout_rate == 0.0:
    return jax.nn.dot_product_attention(q, k, v, implementation=implementation)
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  weights = jax.nn.softmax(logits, axis=-1)
  keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
  weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def _attend_along(axis: int, q, k, v, **kw):
  """Attention along `axis` of `[b, t, n, heads, head_dim]`, the other token axis batched."""
  if axis == 2:  # space: every frame on its own
    b, t, n, h, c = q.shape
    out = dot_product_attention(*(a.reshape(b * t, n, h, c) for a in (q, k, v)), **kw)
    return out.reshape(b, t, n, h, c)
  b, t, n, h, c = q.shape  # time: every spatial location on its own
  qkv = (a.transpose(0, 2, 1, 3, 4).reshape(b * n, t, h, c) for a in (q, k, v))
  out = dot_product_attention(*qkv, **kw)
  return out.reshape(b, n, t, h, c).transpose(0, 2, 1, 3, 4)


def factorized_dot_product_attention(q, k, v, **kw):
  """Model 4: the first half of the heads attend over time, the second half over space.

  `q, k, v [b, t, n, heads, head_dim]`.
  """
  heads = q.shape[-2]
  if q.ndim != 5:
    raise ValueError(f"factorised attention needs [b, t, n, heads, head_dim], got {q.shape}")
  if heads % 2:
    raise ValueError(f"model.num_heads={heads} must be even for factorized_dot_product_attention "
                     "(half the heads attend over time, half over space)")
  half = heads // 2
  rngs = (None, None) if kw.get("dropout_rng") is None else jax.random.split(kw["dropout_rng"])
  outs = [
      _attend_along(axis, q[..., sl, :], k[..., sl, :], v[..., sl, :],
                    **{**kw, "dropout_rng": rng})
      for axis, sl, rng in ((1, slice(None, half), rngs[0]), (2, slice(half, None), rngs[1]))]
  return jnp.concatenate(outs, axis=-2)


def full_attention(q, k, v, **kw):
  """Joint attention over all tokens: `q, k, v [b, l, heads, head_dim]`."""
  return dot_product_attention(q, k, v, **kw)


class MultiHeadDotProductAttention(nn.Module):
  """Self-attention with Scenic's parameter names; the attention function is pluggable."""
  num_heads: int
  attention_fn: Callable = full_attention
  kernel_init: Callable = nn.initializers.xavier_uniform()
  dropout_rate: float = 0.0
  implementation: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    """`x [b, ..., d]` → `[b, ..., d]`; attention runs over the axes `attention_fn` chooses."""
    d = x.shape[-1]
    if d % self.num_heads:
      raise ValueError(f"hidden_size={d} is not divisible by num_heads={self.num_heads}")
    head_dim = d // self.num_heads
    proj = lambda name: nn.DenseGeneral(  # noqa: E731
        (self.num_heads, head_dim), axis=-1, dtype=self.dtype, name=name,
        kernel_init=axes(self.kernel_init, (EMBED, HEADS, HEAD_DIM)),
        bias_init=axes(nn.initializers.zeros, (HEADS, HEAD_DIM)))
    q, k, v = proj("query")(x), proj("key")(x), proj("value")(x)
    rng = None
    if not deterministic and self.dropout_rate > 0:
      rng = self.make_rng("dropout")
    y = self.attention_fn(q, k, v, dropout_rate=self.dropout_rate, deterministic=deterministic,
                          dropout_rng=rng, implementation=self.implementation)
    return nn.DenseGeneral(
        d, axis=(-2, -1), dtype=self.dtype, name="out",
        kernel_init=axes(self.kernel_init, (HEADS, HEAD_DIM, EMBED)),
        bias_init=axes(nn.initializers.zeros, (EMBED,)))(y)
