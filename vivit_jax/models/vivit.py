"""The four ViViT variants (Arnab et al., 2021, §3.3), Scenic-compatible.

Model 1 `spacetime`: all spatio-temporal tokens through one transformer.
Model 2 `factorized_encoder`: a spatial transformer per frame, then a temporal transformer.
Model 3 `factorized_self_attention_block`: each block attends over time, then over space.
Model 4 `factorized_dot_product_attention`: half the heads over time, half over space.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vivit_jax.models import attention as attn
from vivit_jax.models.blocks import Encoder, remat_policy_name
from vivit_jax.models.embed import video_to_tokens
from vivit_jax.models.partitioning import CLASSES, EMBED, MLP, axes

ATTENTION_TYPES = (
    "spacetime",
    "factorized_encoder",
    "factorized_self_attention_block",
    "factorized_dot_product_attention",
)
CLASSIFIERS = ("token", "gap", "gmp", "gsp", "0")
_POOL = {"gap": jnp.mean, "gmp": jnp.max, "gsp": jnp.sum}


def _pool(x: jax.Array, classifier: str) -> jax.Array:
  """`[b, l, d]` → `[b, d]` float32: the first token ('token', '0') or a pooling over tokens
  (summed in float32: 'gsp' over 3137 bfloat16 tokens would lose the small ones)."""
  x = x.astype(jnp.float32)
  if classifier in ("token", "0"):
    return x[:, 0]
  return _POOL[classifier](x, axis=1)


def _prepend_cls(module: nn.Module, x: jax.Array, name: str) -> jax.Array:
  cls = module.param(name, axes(nn.initializers.zeros, (None, None, EMBED)),
                     (1, 1, x.shape[-1]), jnp.float32)
  cls = jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
  return jnp.concatenate([cls, x], axis=1)


def classifier_head(x: jax.Array, num_classes: int, representation_size: int | None,
                    return_prelogits: bool = False) -> jax.Array:
  """Optional `pre_logits` (Dense + tanh), then the zero-initialised `output_projection`.

  `[b, d]` → `[b, num_classes]`; runs in float32 whatever the activation dtype.
  """
  x = x.astype(jnp.float32)
  if representation_size is not None:
    x = nn.Dense(representation_size, name="pre_logits",
                 kernel_init=axes(nn.initializers.lecun_normal(), (EMBED, MLP)),
                 bias_init=axes(nn.initializers.zeros, (MLP,)))(x)
    x = jnp.tanh(x)
  if return_prelogits:
    return x
  return nn.Dense(num_classes, name="output_projection",
                  kernel_init=axes(nn.initializers.zeros, (EMBED, CLASSES)),
                  bias_init=axes(nn.initializers.zeros, (CLASSES,)))(x)


class _ViViTBase(nn.Module):
  """The base class of both top-level models: their shared fields and the classifier head."""
  num_classes: int
  hidden_size: int
  patches: tuple
  temporal_encoding_config: ml_collections.ConfigDict
  attention_config: ml_collections.ConfigDict
  classifier: str = "token"
  representation_size: int | None = None
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_droplayer_rate: float = 0.0
  attention_implementation: str | None = None
  remat: str | bool = "none"
  dtype: Any = jnp.float32

  def _encoder(self, name, num_layers, mlp_dim, num_heads, **kw) -> Encoder:
    return Encoder(
        num_layers=num_layers, mlp_dim=mlp_dim, num_heads=num_heads,
        dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate,
        stochastic_droplayer_rate=self.stochastic_droplayer_rate,
        attention_implementation=self.attention_implementation, remat=self.remat,
        dtype=self.dtype, name=name, **kw)

  def _head(self, x, return_prelogits):
    return classifier_head(x, self.num_classes, self.representation_size, return_prelogits)


class ViViT(_ViViTBase):
  """Models 1, 3 and 4: one transformer `Transformer` over the t'·n tokens (time-major)."""
  mlp_dim: int = 3072
  num_layers: int = 12
  num_heads: int = 12

  @nn.compact
  def __call__(self, video: jax.Array, *, train: bool, return_prelogits: bool = False):
    """`video [b, t, h, w, c]` → logits `[b, num_classes]` (or pre-logits `[b, d]`)."""
    kind = self.attention_config.get("type", "spacetime")
    tokens = video_to_tokens(video.astype(self.dtype), self.temporal_encoding_config,
                             self.patches, self.hidden_size, self.dtype)
    b, t, n, d = tokens.shape
    x = tokens.reshape(b, t * n, d)
    if self.classifier == "token":
      x = _prepend_cls(self, x, "cls")
    x = self._encoder(
        "Transformer", self.num_layers, self.mlp_dim, self.num_heads,
        block_type="spacetime" if kind == "spacetime" else kind, temporal_dims=t,
        attention_order=self.attention_config.get("attention_order", "time_space"),
        attention_kernel_init_method=self.attention_config.get(
            "attention_kernel_init_method", "xavier"))(x, train=train)
    return self._head(_pool(x, self.classifier), return_prelogits)


class FactorizedEncoderViViT(_ViViTBase):
  """Model 2: `SpatialTransformer` shared over frames, then `TemporalTransformer` over frames."""
  spatial_transformer: ml_collections.ConfigDict = None
  temporal_transformer: ml_collections.ConfigDict = None

  @nn.compact
  def __call__(self, video: jax.Array, *, train: bool, return_prelogits: bool = False):
    """`video [b, t, h, w, c]` → logits `[b, num_classes]` (or pre-logits `[b, d]`)."""
    tokens = video_to_tokens(video.astype(self.dtype), self.temporal_encoding_config,
                             self.patches, self.hidden_size, self.dtype)
    b, t, n, d = tokens.shape

    def vit(x, name, cfg):  # x [b', l, d] → [b', d]
      if self.classifier == "token":
        x = _prepend_cls(self, x, f"cls_{name}")
      x = self._encoder(name, cfg.num_layers, cfg.mlp_dim, cfg.num_heads)(x, train=train)
      return _pool(x, self.classifier)

    # The spatial transformer sees each frame as an image; frames fold into the batch.
    frames = vit(tokens.reshape(b * t, n, d), "SpatialTransformer", self.spatial_transformer)
    frames = frames.reshape(b, t, d)
    if self.attention_config.get("spatial_only_baseline", False):
      x = frames.mean(axis=1)
    else:
      x = vit(frames, "TemporalTransformer", self.temporal_transformer)
    return self._head(x, return_prelogits)


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_named(name: str, field: str = "model_dtype_str"):
  """The jnp dtype of a config dtype name (`model_dtype_str`, `data_dtype_str`)."""
  if name not in DTYPES:
    raise ValueError(f"config.{field}={name!r}; valid: {sorted(DTYPES)}")
  return DTYPES[name]


def build_model(model_config: ml_collections.ConfigDict, num_classes: int, *,
                dtype: str | None = None) -> nn.Module:
  """Builds the ViViT variant named by `model_config.attention_config.type`.

  Args:
    model_config: the `model` part of a Scenic-style config.
    num_classes: width of `output_projection` (for Epic-Kitchens, `sum(class_splits)`).
    dtype: activation dtype name; defaults to `model_config.model_dtype_str` or 'float32'
      (Scenic keeps `model_dtype_str` at the top level of the config; pass it here).
  """
  model_cfg = model_config
  kind = model_cfg.get("attention_config", {}).get("type", "spacetime")
  if kind not in ATTENTION_TYPES:
    raise ValueError(f"model.attention_config.type={kind!r}; valid: {list(ATTENTION_TYPES)}")
  classifier = model_cfg.get("classifier", "gap")
  if classifier not in CLASSIFIERS:
    raise ValueError(f"model.classifier={classifier!r}; valid: {list(CLASSIFIERS)}")
  if classifier in ("token", "0") and kind in ATTENTION_TYPES[2:]:
    raise ValueError(
        f"model.classifier={classifier!r} is not available with attention_config.type={kind!r}: "
        "Models 3 and 4 have no CLS token; use 'gap', 'gmp' or 'gsp'")
  impl = model_cfg.get("attention_implementation", None)
  dtype_name = dtype or model_cfg.get("model_dtype_str", "float32")
  attn.check_implementation(impl, dtype_name)  # valid, and runnable on this platform
  if "patches" not in model_cfg or "size" not in model_cfg.patches:
    raise ValueError("model.patches.size is required, e.g. (16, 16, 2) = (fh, fw, ft)")
  common = dict(
      num_classes=num_classes,
      hidden_size=model_cfg.hidden_size,
      patches=tuple(model_cfg.patches.size),
      temporal_encoding_config=model_cfg.get(
          "temporal_encoding_config", ml_collections.ConfigDict({"method": "3d_conv"})),
      attention_config=model_cfg.get("attention_config", ml_collections.ConfigDict({"type": kind})),
      classifier=classifier,
      representation_size=model_cfg.get("representation_size", None),
      dropout_rate=model_cfg.get("dropout_rate", 0.1),
      attention_dropout_rate=model_cfg.get("attention_dropout_rate", 0.1),
      stochastic_droplayer_rate=model_cfg.get("stochastic_droplayer_rate", 0.0),
      attention_implementation=impl,
      remat=remat_policy_name(model_cfg.get("remat", "none")),
      dtype=dtype_named(dtype_name),
  )
  if kind == "factorized_encoder":
    for part in ("spatial_transformer", "temporal_transformer"):
      if part not in model_cfg:
        raise ValueError(f"model.{part}.(num_layers, mlp_dim, num_heads) is required for "
                         "attention_config.type='factorized_encoder'")
    return FactorizedEncoderViViT(
        spatial_transformer=model_cfg.spatial_transformer,
        temporal_transformer=model_cfg.temporal_transformer, **common)
  return ViViT(mlp_dim=model_cfg.mlp_dim, num_layers=model_cfg.num_layers, num_heads=model_cfg.num_heads, **common)
