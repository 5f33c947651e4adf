"""An independent NumPy forward pass of ViViT, written from the paper and Scenic's semantics.

Used only by the tests, as a second implementation to check the Flax modules against for the
variants, classifiers and tokenisers that have no Scenic fixture here.
"""
import math

import numpy as np


def layer_norm(x, p, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def attend(q, k, v):
  """q, k, v [B, L, H, C] → [B, L, H, C], attention over L."""
  logits = np.einsum("bqhc,bkhc->bhqk", q, k) / math.sqrt(q.shape[-1])
  return np.einsum("bhqk,bkhc->bqhc", softmax(logits), v)


def attend_axis(q, k, v, axis):
  """Attention along axis 1 (time) or 2 (space) of [b, t, n, H, C]."""
  if axis == 2:
    b, t, n, h, c = q.shape
    return attend(*(a.reshape(b * t, n, h, c) for a in (q, k, v))).reshape(b, t, n, h, c)
  return np.swapaxes(attend_axis(*(np.swapaxes(a, 1, 2) for a in (q, k, v)), axis=2), 1, 2)


def mhsa(x, p, mode="full"):
  proj = lambda name: np.einsum("...d,dhc->...hc", x, p[name]["kernel"]) + p[name]["bias"]
  q, k, v = proj("query"), proj("key"), proj("value")
  if mode == "full":
    y = attend(q, k, v)
  elif mode in ("time", "space"):
    y = attend_axis(q, k, v, 1 if mode == "time" else 2)
  elif mode == "factorized_heads":  # Model 4: first half of heads over time, rest over space
    h = q.shape[-2] // 2
    y = np.concatenate([attend_axis(q[..., :h, :], k[..., :h, :], v[..., :h, :], 1),
                        attend_axis(q[..., h:, :], k[..., h:, :], v[..., h:, :], 2)], axis=-2)
  return np.einsum("...hc,hcd->...d", y, p["out"]["kernel"]) + p["out"]["bias"]


def mlp(x, p):
  y = gelu_tanh(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
  return y @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


def encoder(x, p, num_layers, kind, t, order=("time", "space")):
  x = x + p["posembed_input"]["pos_embedding"]
  b, l, d = x.shape
  for i in range(num_layers):
    bp = p[f"encoderblock_{i}"]
    if kind == "factorized_self_attention_block":
      y = x.reshape(b, t, l // t, d)
      for axis in order:
        y = y + mhsa(layer_norm(y, bp[f"LayerNorm_{axis}"]),
                     bp[f"MultiHeadDotProductAttention_{axis}"], axis)
      x = y.reshape(b, l, d)
      x = x + mlp(layer_norm(x, bp["LayerNorm_mlp"]), bp["MlpBlock"])
      continue
    if kind == "factorized_dot_product_attention":
      y = layer_norm(x, bp["LayerNorm_0"]).reshape(b, t, l // t, d)
      x = x + mhsa(y, bp["MultiHeadDotProductAttention_0"], "factorized_heads").reshape(b, l, d)
    else:
      x = x + mhsa(layer_norm(x, bp["LayerNorm_0"]), bp["MultiHeadDotProductAttention_0"])
    x = x + mlp(layer_norm(x, bp["LayerNorm_1"]), bp["MlpBlock_0"])
  return layer_norm(x, p["encoder_norm"])


def tokens(video, p, method, patch, n_sampled=None):
  """video [b, T, H, W, c] → [b, t, n, d]."""
  if method == "3d_conv":
    fh, fw, ft = patch
  else:
    fh, fw = patch[:2]
    T = video.shape[1]
    if n_sampled < T:  # Scenic's sample_frames_uniformly, with its float arange
      idx = np.round(np.arange(T / (n_sampled + 1), T, T / (n_sampled + 1))).astype(int)
      video = video[:, np.minimum(idx, T - 1)]
    ft = 1
  b, T, H, W, c = video.shape
  x = video.reshape(b, T // ft, ft, H // fh, fh, W // fw, fw, c)
  kernel = p["embedding"]["kernel"]
  if kernel.ndim == 4:
    kernel = kernel[None]
  out = np.einsum("btuiyjxc,uyxcd->btijd", x, kernel) + p["embedding"]["bias"]
  return out.reshape(b, T // ft, (H // fh) * (W // fw), -1)


def pool(x, classifier):
  if classifier in ("token", "0"):
    return x[:, 0]
  return {"gap": np.mean, "gmp": np.max, "gsp": np.sum}[classifier](x, axis=1)


def head(x, p):
  if "pre_logits" in p:
    x = np.tanh(x @ p["pre_logits"]["kernel"] + p["pre_logits"]["bias"])
  return x @ p["output_projection"]["kernel"] + p["output_projection"]["bias"]


def forward(params, video, mc):
  """Logits of the ViViT described by model config `mc` (a ConfigDict) with `params`."""
  p = params
  te = mc.temporal_encoding_config
  x = tokens(video.astype(np.float64), p, te.method, tuple(mc.patches.size),
             te.get("n_sampled_frames"))
  b, t, n, d = x.shape
  kind = mc.attention_config.type
  if kind == "factorized_encoder":
    def vit(z, name, cfg):
      if mc.classifier == "token":
        z = np.concatenate([np.broadcast_to(p[f"cls_{name}"], (z.shape[0], 1, d)), z], 1)
      return pool(encoder(z, p[name], cfg.num_layers, "spacetime", None), mc.classifier)
    f = vit(x.reshape(b * t, n, d), "SpatialTransformer", mc.spatial_transformer).reshape(b, t, d)
    if mc.attention_config.get("spatial_only_baseline", False):
      return head(f.mean(1), p)
    return head(vit(f, "TemporalTransformer", mc.temporal_transformer), p)
  x = x.reshape(b, t * n, d)
  if mc.classifier == "token":
    x = np.concatenate([np.broadcast_to(p["cls"], (b, 1, d)), x], 1)
  order = mc.attention_config.get("attention_order", "time_space").split("_")
  x = encoder(x, p["Transformer"], mc.num_layers, kind, t, order)
  return head(pool(x, mc.classifier), p)
