"""Multi-head dot-product attention: full (Models 1-3) and head-factorised (Model 4).

Parameter layout is flax's `MultiHeadDotProductAttention` (and so Scenic's):
`query|key|value/kernel [d, heads, head_dim]`, `out/kernel [heads, head_dim, d]`.

Every attention of every variant goes through `dot_product_attention`, which picks the
implementation (`model.attention_implementation`) at trace time:

  'xla'     `jax.nn.dot_product_attention` as XLA compiles it: the [l, l] weights are
            materialised per head.
  'cudnn'   cuDNN flash attention (GPU, bfloat16/float16).
  'splash'  the Pallas splash-attention kernel of `jax.experimental.pallas.ops.tpu` (TPU).
  'explicit'  einsum logits, float32 softmax, einsum (the path attention dropout needs): the
            plain materialised-softmax baseline of benchmarks/train_step.py on every platform.
  'heads_major'  the same softmax attention with heads moved before tokens first, so both
            products are plain batched matmuls `[b, h, l, c]`; on CPU ~1.2-1.3x faster than
            'xla' forward + backward from ~50 tokens on (the whole train step of every variant:
            1.02-1.07x the plain path's), slower on the 4-17-token temporal attentions
            (docs/benchmarks.md, "Train step").
  'auto'/None  the fused kernel of the platform where it runs and helps; on CPU 'heads_major'
            from CPU_MIN_TOKENS tokens on; else 'xla'.

ViViT's token counts (1 + 14·14 = 197, 1 + 16·14·14 = 3137, 16 or 17 frames) are never
multiples of the kernels' tiles, so the fused paths pad the token axis and mask the padding:
padded keys get no weight, padded queries are sliced off. With attention dropout in training
the weights must exist, so that case always runs the explicit softmax. So does a call that
asks for the weights (`mutable=['intermediates']`, Models 1 and 2): they are sown as
`intermediates/.../attention_weights` for tools/visualize.py.
"""
import contextlib
import contextvars
import dataclasses
import logging
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vivit_jax.models.partitioning import ACT_HEADS, BATCH, EMBED, HEAD_DIM, HEADS, axes

# Valid values of `model.attention_implementation`.
IMPLEMENTATIONS = (None, "auto", "xla", "cudnn", "splash", "explicit", "heads_major")
# Where each fused kernel runs, and the activation dtypes it takes.
_PLATFORM = {"cudnn": "gpu", "splash": "tpu"}
_DTYPES = {"cudnn": ("bfloat16", "float16"),
           "splash": ("float32", "bfloat16")}
# 'auto' uses a fused kernel only from this many tokens on: shorter sequences (the 16-17
# frame temporal attentions) have small [l, l] weights, and padding them to a tile would
# multiply their FLOPs (17 → 128 tokens: 57x) for nothing.
AUTO_MIN_TOKENS = 128
# On CPU 'auto' runs 'heads_major' from this many tokens on (measured at 49-197 tokens); the
# temporal attentions (4-17 tokens) stay on 'xla', which is faster there.
CPU_MIN_TOKENS = 32
# cuDNN's flash kernels tile the sequence by 64 (3137 → 3200, 197 → 256).
CUDNN_MULTIPLE = 64
# Splash tiles: up to 512 tokens the padded sequence is one block (197 → 256, 17 → 128);
# longer ones use 512-token blocks (3137 → 3584). With head_dim 64 a 128-token block does
# little work per grid step, and a 3200-token sequence in 128 blocks has 625 steps per head
# against 49 for 3584 in 512 blocks: the per-step overhead outweighs the 25% extra FLOPs of
# the longer padding (3584² vs 3200²). Unmeasured (no TPU was lent): `splash_blocks` is the
# one place to tune.
SPLASH_TILE = 128
SPLASH_MAX_BLOCK = 512


def check_implementation(value: Any, dtype: str = "float32", platform: str | None = None
                         ) -> None:
  """Raises a one-line ValueError if `model.attention_implementation=value` cannot run here.

  Args:
    value: the config value.
    dtype: the activation dtype name (`model_dtype_str`).
    platform: 'cpu', 'gpu' or 'tpu'; default `jax.default_backend()`.
  """
  if value not in IMPLEMENTATIONS:
    raise ValueError(f"model.attention_implementation={value!r}; valid: {list(IMPLEMENTATIONS)}")
  if value not in _PLATFORM or _emulating():
    return
  platform = platform or jax.default_backend()
  if platform != _PLATFORM[value]:
    raise ValueError(f"model.attention_implementation={value!r} needs a "
                     f"{_PLATFORM[value].upper()}; this machine's jax platform is {platform!r} "
                     "(use 'auto' or 'xla')")
  if dtype not in _DTYPES[value]:
    raise ValueError(f"model.attention_implementation={value!r} takes model_dtype_str in "
                     f"{list(_DTYPES[value])}, not {dtype!r} (use 'auto' or 'xla')")


# --------------------------------------------------------------------------- choosing a path


@dataclasses.dataclass(frozen=True)
class AttentionPath:
  """What one attention call runs: the kernel, and the token count before/after padding."""
  kernel: str  # 'xla', 'cudnn', 'splash', 'heads_major' or 'explicit'
  tokens: int
  padded: int
  reason: str = ""

  def describe(self) -> str:
    pad = f", padded to {self.padded}" if self.padded != self.tokens else ""
    why = f" ({self.reason})" if self.reason else ""
    return f"{self.kernel}: {self.tokens} tokens{pad}{why}"


def padded_length(kernel: str, tokens: int) -> int:
  """The token count `kernel` runs on: a multiple of its tile."""
  if kernel == "cudnn":
    return _round_up(tokens, CUDNN_MULTIPLE)
  if kernel == "splash":
    return splash_blocks(tokens)[0]
  return tokens


def splash_blocks(tokens: int) -> tuple[int, int]:
  """(padded length, block size) of the splash kernel for a sequence of `tokens`."""
  padded = _round_up(tokens, SPLASH_TILE)
  if padded <= SPLASH_MAX_BLOCK:
    return padded, padded
  return _round_up(tokens, SPLASH_MAX_BLOCK), SPLASH_MAX_BLOCK


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def choose_path(implementation: str | None, q: jax.Array, *, dropout: bool = False,
                platform: str | None = None) -> AttentionPath:
  """The path for `q [b, l, heads, head_dim]` under `model.attention_implementation`."""
  tokens = q.shape[1]
  if dropout:
    return AttentionPath("explicit", tokens, tokens, "attention dropout needs the weights")
  if implementation in ("explicit", "heads_major"):
    return AttentionPath(implementation, tokens, tokens)
  if implementation in ("xla", "cudnn", "splash"):
    return AttentionPath(implementation, tokens, padded_length(implementation, tokens))
  platform = platform or jax.default_backend()
  dtype = jnp.dtype(q.dtype).name
  kernel = {"gpu": "cudnn", "tpu": "splash"}.get(platform)
  if platform == "cpu" and tokens >= CPU_MIN_TOKENS:
    return AttentionPath("heads_major", tokens, tokens, "auto: batched matmuls on CPU")
  if kernel is None:
    return AttentionPath("xla", tokens, tokens, f"auto: no fused kernel on {platform}")
  if dtype not in _DTYPES[kernel]:
    return AttentionPath("xla", tokens, tokens, f"auto: {kernel} does not take {dtype}")
  head_dim = q.shape[-1]
  if kernel == "cudnn" and (head_dim % 8 or head_dim > 128):
    return AttentionPath("xla", tokens, tokens, "auto: cudnn needs head_dim % 8 == 0 and <= 128")
  if tokens < AUTO_MIN_TOKENS:
    return AttentionPath("xla", tokens, tokens, f"auto: < {AUTO_MIN_TOKENS} tokens")
  return AttentionPath(kernel, tokens, padded_length(kernel, tokens), "auto")


# Trace-time bookkeeping: each distinct choice is logged once; `record_paths` collects them
# per attention site (the dry run prints them per layer).
_LOGGED: set = set()
_RECORDER: contextvars.ContextVar = contextvars.ContextVar("vivit_attention_paths", default=None)
_EMULATE: contextvars.ContextVar = contextvars.ContextVar("vivit_attention_emulate",
                                                          default=False)


@contextlib.contextmanager
def record_paths():
  """Collects `(site, AttentionPath)` for every attention traced inside the block."""
  paths: list = []
  token = _RECORDER.set(paths)
  try:
    yield paths
  finally:
    _RECORDER.reset(token)


@contextlib.contextmanager
def emulated_kernels():
  """Runs the fused paths on any platform, for tests: same padding and masking, but 'cudnn's
  masked call goes to XLA and 'splash' runs in Pallas interpret mode (slow). Applies to
  functions traced inside the block."""
  token = _EMULATE.set(True)
  try:
    yield
  finally:
    _EMULATE.reset(token)


def _emulating() -> bool:
  return _EMULATE.get()


def _note(site: str | None, path: AttentionPath, implementation) -> None:
  paths = _RECORDER.get()
  if paths is not None:
    paths.append((site or "attention", path))
  key = (implementation, path)
  if key not in _LOGGED:
    _LOGGED.add(key)
    logging.info("attention_implementation=%r → %s", implementation, path.describe())


# --------------------------------------------------------------------------- the kernels


def dot_product_attention(q, k, v, *, dropout_rate: float = 0.0, deterministic: bool = True,
                          dropout_rng=None, implementation: str | None = None,
                          site: str | None = None):
  """Attention over axis 1 of `q, k, v [b, l, heads, head_dim]` → `[b, l, heads, head_dim]`.

  `site` names the caller in logs and `record_paths`.
  """
  dropout = not deterministic and dropout_rate > 0.0
  path = choose_path(implementation, q, dropout=dropout)
  _note(site, path, implementation)
  if path.kernel == "explicit":
    return _explicit_attention(q, k, v, dropout_rate, dropout_rng)
  if path.kernel == "xla":
    return jax.nn.dot_product_attention(q, k, v, implementation="xla")
  if path.kernel == "heads_major":
    return _heads_major_attention(q, k, v)
  return padded_attention(q, k, v, path.padded, _FUSED[path.kernel])


def attention_weights(q, k) -> jax.Array:
  """The softmax weights `[b, heads, l_q, l_k]` (float32) of `q, k [b, l, heads, head_dim]`."""
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  return jax.nn.softmax(logits, axis=-1)


def _explicit_attention(q, k, v, dropout_rate, dropout_rng, weights=None):
  """Softmax attention (dropout on the float32 weights when `dropout_rng` is given)."""
  weights = attention_weights(q, k) if weights is None else weights
  if dropout_rng is not None and dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
  return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)


def _heads_major_attention(q, k, v):
  """Softmax attention with `[b, heads, l, c]` operands: both products are batched matmuls
  over (b, heads) with nothing transposed inside them; logits and softmax in float32."""
  to_heads = lambda a: a.transpose(0, 2, 1, 3)  # noqa: E731
  qh, kh, vh = to_heads(q), to_heads(k), to_heads(v)
  logits = jnp.matmul(qh, kh.swapaxes(-1, -2), preferred_element_type=jnp.float32)
  weights = jax.nn.softmax(logits * q.shape[-1] ** -0.5, axis=-1)
  return to_heads(jnp.matmul(weights.astype(v.dtype), vh))


def padded_attention(q, k, v, padded: int, kernel: Callable):
  """Pads the token axis of `q, k, v [b, l, h, c]` to `padded`, runs
  `kernel(q, k, v, l) -> [b, padded, h, c]` (which must ignore keys at positions >= l) and
  drops the padded queries."""
  b, l, h, c = q.shape
  if padded < l:
    raise ValueError(f"cannot pad {l} tokens to {padded}")
  widths = ((0, 0), (0, padded - l), (0, 0), (0, 0))
  out = kernel(*(jnp.pad(a, widths) for a in (q, k, v)), l)
  assert out.shape == (b, padded, h, c), (out.shape, (b, padded, h, c))
  return out[:, :l]


def _cudnn_kernel(q, k, v, tokens: int):
  """cuDNN flash attention with the padding masked by sequence lengths."""
  lengths = jnp.full((q.shape[0],), tokens, jnp.int32)
  return jax.nn.dot_product_attention(
      q, k, v, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
      implementation="xla" if _emulating() else "cudnn")


def _splash_kernel(q, k, v, tokens: int):
  """Pallas splash attention; batch and heads split over the mesh as the sharding rules say.

  The padding gets its own segment id: real queries see only real keys, padded queries only
  padded keys (so no softmax row is empty).
  """
  from jax.experimental.pallas.ops.tpu import splash_attention as splash  # TPU-only import
  b, padded, h, c = q.shape
  _, block = splash_blocks(tokens)
  if padded % block:
    raise ValueError(f"splash: {padded} padded tokens do not split into blocks of {block}")
  interpret = _emulating()
  blocks = splash.BlockSizes(
      block_q=block, block_kv=block, block_kv_compute=block,
      block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
      block_q_dq=block, block_kv_dq=block)

  def local(q, k, v):  # [b_local, h_local, padded, c]
    kernel = splash.make_splash_mha(
        splash.MultiHeadMask([splash.FullMask((padded, padded))] * q.shape[1]),
        block_sizes=blocks, head_shards=1, q_seq_shards=1, interpret=interpret)
    segment = (jnp.arange(padded) >= tokens).astype(jnp.int32)
    ids = splash.SegmentIds(q=segment, kv=segment)
    return jax.vmap(lambda q, k, v: kernel(q, k, v, segment_ids=ids))(q, k, v)

  # Splash does not scale the logits; heads go before tokens.
  to_heads = lambda a: a.transpose(0, 2, 1, 3)  # noqa: E731
  args = (to_heads(q * jnp.asarray(c ** -0.5, q.dtype)), to_heads(k), to_heads(v))
  spec = _kernel_spec(b, h)
  if spec is not None:
    local = jax.shard_map(local, in_specs=(spec,) * 3, out_specs=spec, check_vma=False)
  return to_heads(local(*args))


def _kernel_spec(batch: int, heads: int):
  """`PartitionSpec` of `[b, heads, l, c]` inside a mesh (batch and heads split as the logical
  rules split activations, where they divide evenly); None outside one.

  A Pallas call is opaque to XLA's partitioner, which would otherwise gather its inputs
  onto every device; `shard_map` runs it on each device's own slice instead.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return None
  logical = nn.logical_to_mesh_axes((BATCH, ACT_HEADS))
  dims = []
  for size, target in zip((batch, heads), tuple(logical or (None, None))):
    names = (target,) if isinstance(target, str) else tuple(target or ())
    parts = int(np.prod([mesh.shape[n] for n in names])) if names else 1
    dims.append(target if names and size % parts == 0 else None)
  return jax.sharding.PartitionSpec(dims[0], dims[1], None, None)


_FUSED = {"cudnn": _cudnn_kernel, "splash": _splash_kernel}


# --------------------------------------------------------------------------- the variants


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
  site = kw.get("site") or "attention"
  outs = [
      _attend_along(axis, q[..., sl, :], k[..., sl, :], v[..., sl, :],
                    **{**kw, "dropout_rng": rng, "site": f"{site} ({name} heads)"})
      for axis, sl, rng, name in ((1, slice(None, half), rngs[0], "time"),
                                  (2, slice(half, None), rngs[1], "space"))]
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
    site = "/".join(self.scope.path)
    if self.is_mutable_collection("intermediates") and self.attention_fn is full_attention:
      # Weights asked for (`apply(..., mutable=['intermediates'])`, tools/visualize.py): the
      # explicit softmax, kept as `intermediates/.../attention_weights [b, heads, l, l]`.
      # Training never makes the collection mutable, so it keeps the fused paths.
      weights = attention_weights(q, k)
      _note(site, AttentionPath("explicit", q.shape[1], q.shape[1], "attention weights sown"),
            self.implementation)
      self.sow("intermediates", "attention_weights", weights)
      y = _explicit_attention(q, k, v, self.dropout_rate, rng, weights)
    else:
      y = self.attention_fn(q, k, v, dropout_rate=self.dropout_rate,
                            deterministic=deterministic, dropout_rng=rng,
                            implementation=self.implementation, site=site)
    return nn.DenseGeneral(
        d, axis=(-2, -1), dtype=self.dtype, name="out",
        kernel_init=axes(self.kernel_init, (HEADS, HEAD_DIM, EMBED)),
        bias_init=axes(nn.initializers.zeros, (EMBED,)))(y)
