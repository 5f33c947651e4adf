"""Where a ViViT looks: attention rollout (Abnar & Zuidema, 2020) over the weights that
`MultiHeadDotProductAttention` sows when `mutable=['intermediates']`, turned into per-frame maps.

Rollout: each layer's weights `W [l, l]` (heads averaged, or one head) are mixed with the
residual connection, `A = (W + I) / 2`, rows renormalised, and multiplied through the layers,
`R = A_L ··· A_1`: `R[i, j]` is how much token j flows into token i at the top. The CLS row of
`R` (or, without a CLS token, the mean row) is the map. Models 1 and 2 only: Models 3 and 4
split attention over axes, and have no CLS token.
"""
import dataclasses
import re
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from vivit_jax import config_facts
from vivit_jax.models.embed import uniform_frame_indices

SUPPORTED_TYPES = ("spacetime", "factorized_encoder")
WEIGHTS_NAME = "attention_weights"


@dataclasses.dataclass
class AttentionMaps:
  """The maps of one video.

  spatial: `[t', gh, gw]`, each token-frame's map summing to 1.
  temporal: `[t']` summing to 1: Model 2's temporal transformer over frames, Model 1's mass
    per frame; None for Model 2's `spatial_only_baseline`.
  frames: `[(frame index in the clip, token-frame index)]`, the clip frames each map covers.
  """
  spatial: np.ndarray
  temporal: Optional[np.ndarray]
  frames: list[tuple[int, int]]
  attention_type: str


def check_supported(config) -> str:
  """The config's attention type, if this module can draw it; else a one-line ValueError."""
  kind = config.model.get("attention_config", {}).get("type", "spacetime")
  if kind not in SUPPORTED_TYPES:
    raise ValueError(f"attention maps are drawn for Models 1 and 2 (model.attention_config.type "
                     f"in {list(SUPPORTED_TYPES)}), not {kind!r}")
  return kind


def layer_weights(intermediates: Mapping[str, Any], transformer: str) -> list[np.ndarray]:
  """The sown weights `[b, heads, l, l]` of `transformer`'s blocks, in layer order."""
  if transformer not in intermediates:
    raise KeyError(f"no attention weights under {transformer!r} (found {sorted(intermediates)}); "
                   "was the model applied with mutable=['intermediates']?")
  blocks = intermediates[transformer]
  names = sorted((n for n in blocks if re.fullmatch(r"encoderblock_\d+", n)),
                 key=lambda n: int(n.split("_")[1]))
  out = []
  for name in names:
    (weights,) = [v[WEIGHTS_NAME] for v in blocks[name].values() if WEIGHTS_NAME in v]
    out.append(np.asarray(weights[0] if isinstance(weights, tuple) else weights, np.float64))
  return out


def rollout(weights: Sequence[np.ndarray], head: Optional[int] = None,
            residual: bool = True) -> np.ndarray:
  """`R = A_L ··· A_1` of per-layer weights `[b, heads, l, l]` → `[b, l, l]`.

  Args:
    weights: the layers' weights, first layer first.
    head: one head's weights; None averages the heads.
    residual: mix in the identity (the residual connection), `A = (W + I) / 2`.
  """
  if not weights:
    raise ValueError("no attention layers to roll out")
  b, heads, l, _ = weights[0].shape
  if head is not None and not 0 <= head < heads:
    raise ValueError(f"--head={head}: this transformer has {heads} heads (0..{heads - 1})")
  result = np.broadcast_to(np.eye(l), (b, l, l))
  for w in weights:
    a = w.mean(axis=1) if head is None else w[:, head]
    if residual:
      a = (a + np.eye(l)) / 2
    a = a / a.sum(axis=-1, keepdims=True)
    result = a @ result
  return result


def query_row(rolled: np.ndarray, has_cls: bool) -> np.ndarray:
  """`[b, l, l]` → `[b, tokens]` summing to 1: the CLS row over the other tokens, or (no CLS
  token) the mean row."""
  row = rolled[:, 0, 1:] if has_cls else rolled.mean(axis=1)
  return row / row.sum(axis=-1, keepdims=True)


def token_frames(config) -> list[tuple[int, int]]:
  """[(clip frame, token-frame)] for each clip frame a token-frame covers."""
  t = config_facts.input_shape(config)[0]
  enc = config.model.get("temporal_encoding_config", {})
  if enc.get("method", "3d_conv") == "temporal_sampling":
    return [(int(f), i) for i, f in enumerate(uniform_frame_indices(t, enc.n_sampled_frames))]
  ft = tuple(config.model.patches.size)[2]
  return [(f, f // ft) for f in range((t // ft) * ft)]


def video_maps(config, intermediates: Mapping[str, Any], *, head: Optional[int] = None
               ) -> AttentionMaps:
  """The maps of the one video a model was applied to (batch of 1)."""
  kind = check_supported(config)
  has_cls = config.model.get("classifier", "gap") in ("token", "0")
  frames = token_frames(config)
  t_tokens = frames[-1][1] + 1
  _, h, w, _ = config_facts.input_shape(config)
  gh, gw = h // config.model.patches.size[0], w // config.model.patches.size[1]
  if kind == "spacetime":
    row = query_row(rollout(layer_weights(intermediates, "Transformer"), head), has_cls)[0]
    per_frame = row.reshape(t_tokens, gh, gw)
    temporal = per_frame.sum(axis=(1, 2))
    spatial = per_frame / per_frame.sum(axis=(1, 2), keepdims=True)
  else:
    spatial_weights = layer_weights(intermediates, "SpatialTransformer")
    if spatial_weights[0].shape[0] != t_tokens:
      raise ValueError(f"expected the weights of one video ({t_tokens} frames), got a batch of "
                       f"{spatial_weights[0].shape[0]} frames")
    spatial = query_row(rollout(spatial_weights, head), has_cls).reshape(t_tokens, gh, gw)
    temporal = None
    if "TemporalTransformer" in intermediates:
      temporal = query_row(rollout(layer_weights(intermediates, "TemporalTransformer"), head),
                           has_cls)[0]
  return AttentionMaps(spatial=spatial.astype(np.float32),
                       temporal=None if temporal is None else temporal.astype(np.float32),
                       frames=frames, attention_type=kind)


def apply_with_weights(model, params, video: np.ndarray):
  """(logits, intermediates) of `model` on `video [b, t, h, w, c]`, weights sown."""
  logits, state = model.apply({"params": params}, video, train=False, mutable=["intermediates"])
  return logits, state["intermediates"]
