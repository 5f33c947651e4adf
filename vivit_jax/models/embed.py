"""Video → tokens (paper §3.2): uniform frame sampling or tubelet embedding."""
from typing import Any, Callable

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vivit_jax.models.partitioning import EMBED, axes

_default_kernel_init = nn.initializers.lecun_normal()


def central_frame_initializer():
  """Tubelet kernel `[ft, fh, fw, c, d]` that only looks at the central frame.

  Zeroes every temporal tap but `ft // 2`. (Scenic's version zeroes slices of the *width*
  axis instead, an indexing slip; we act on time, as the paper describes.)
  """
  def init(key, shape, dtype=jnp.float32):
    if len(shape) != 5:
      raise ValueError(f"central_frame_initializer needs a 5-d kernel (t, h, w, c, d), got {shape}")
    kernel = _default_kernel_init(key, shape, dtype)
    keep = (jnp.arange(shape[0]) == shape[0] // 2).astype(dtype)
    return kernel * keep[:, None, None, None, None]
  return init


def average_frame_initializer():
  """Tubelet kernel with the same 2D filter at every temporal tap (I3D-style inflation)."""
  def init(key, shape, dtype=jnp.float32):
    if len(shape) != 5 or shape[0] < 2:
      raise ValueError(
          f"average_frame_initializer needs a 5-d kernel with t > 1, got {shape}")
    # Draw the full kernel so that the variance scaling sees the 3D fan-in, then tile tap 0.
    kernel = _default_kernel_init(key, shape, dtype)
    return jnp.broadcast_to(kernel[:1], shape)
  return init


# The one list of `model.temporal_encoding_config.kernel_init_method` values: how a fresh
# tubelet kernel is drawn. The same names choose how init-from inflates a 2D ViT kernel
# (`checkpoints.surgery.inflate_kernel`). Approximate rank pooling only has a meaning for an
# inflated pretrained kernel; a fresh model draws the default kernel, as Scenic does.
TUBELET_INITIALIZERS = {
    "central_frame_initializer": central_frame_initializer,
    "average_frame_initializer": average_frame_initializer,
    "average_arp_frame_initializer": lambda: _default_kernel_init,
}


def uniform_frame_indices(num_frames: int, n_sampled_frames: int) -> np.ndarray:
  """Scenic's `sample_frames_uniformly`: evenly spaced frames, excluding both ends.

  Reproduced exactly, float `arange` included: for some (num_frames, n) the float steps yield
  n + 1 frames (e.g. 16 frames, n=2 → 3 frames). Scenic models were trained, and their position
  embeddings sized, with those counts, so we keep them and warn.
  """
  if n_sampled_frames >= num_frames:
    return np.arange(num_frames)
  step = num_frames / (n_sampled_frames + 1)
  with jax.ensure_compile_time_eval():  # Concrete indices even while a jit traces the model.
    idx = np.round(np.asarray(jnp.arange(step, num_frames, step))).astype(np.int32)
  if len(idx) != n_sampled_frames:
    logging.warning("temporal_sampling: %d frames, n_sampled_frames=%d samples %d frames "
                    "(Scenic's behaviour, kept for checkpoint compatibility)",
                    num_frames, n_sampled_frames, len(idx))
  return np.minimum(idx, num_frames - 1)


def tubelet_embedding(video: jax.Array, hidden_size: int, patch_size, kernel_init_method=None,
                      dtype=jnp.float32) -> jax.Array:
  """ViViT tubelet embedding: `embedding`, a 3D conv with stride = kernel = (ft, fh, fw).

  `[b, t, h, w, c]` → `[b, t', h', w', d]`. `patch_size` is Scenic's `model.patches.size`,
  ordered (fh, fw, ft). Call from inside a compact method: the conv belongs to the caller.
  """
  fh, fw, ft = patch_size
  if kernel_init_method is None:
    init = _default_kernel_init
  elif kernel_init_method in TUBELET_INITIALIZERS:
    init = TUBELET_INITIALIZERS[kernel_init_method]()
  else:
    raise ValueError(
        f"model.temporal_encoding_config.kernel_init_method={kernel_init_method!r}; "
        f"valid: {sorted(TUBELET_INITIALIZERS)} or None")
  return TubeletEmbedding(hidden_size, (ft, fh, fw), init, dtype, name="embedding")(video)


class TubeletEmbedding(nn.Module):
  """A 3D convolution with stride = kernel and VALID padding, computed as what it is: cut the
  clip into tubelets, then one matmul of `[tokens, ft*fh*fw*c] x [ft*fh*fw*c, d]`.

  Parameters are `nn.Conv`'s (`kernel [ft, fh, fw, c, d]`, `bias [d]`), so checkpoints are
  unchanged. Why not `nn.Conv`: XLA's CPU convolution runs this at a quarter of matmul speed
  (10% of a small Model 1's step, docs/benchmarks.md); as a matmul it runs at the matmul's.
  """
  hidden_size: int
  kernel_size: tuple[int, int, int]  # (ft, fh, fw)
  kernel_init: Callable = _default_kernel_init
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, video: jax.Array) -> jax.Array:
    ft, fh, fw = self.kernel_size
    b, t, h, w, c = video.shape
    d = self.hidden_size
    kernel = self.param("kernel", axes(self.kernel_init, (None, None, None, None, EMBED)),
                        (ft, fh, fw, c, d), jnp.float32)
    bias = self.param("bias", axes(nn.initializers.zeros, (EMBED,)), (d,), jnp.float32)
    gt, gh, gw = t // ft, h // fh, w // fw  # VALID: a partial tubelet at the end is dropped
    x = video[:, :gt * ft, :gh * fh, :gw * fw].astype(self.dtype)
    x = x.reshape(b, gt, ft, gh, fh, gw, fw, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
    y = jnp.einsum("bthwijkc,ijkcd->bthwd", x, kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)


def frame_sampling_embedding(video: jax.Array, hidden_size: int, patch_size, n_sampled_frames: int,
                             dtype=jnp.float32) -> jax.Array:
  """Uniform frame sampling + ViT patch embedding: `[b, t, h, w, c]` → `[b, t_s, h', w', d]`.

  As in Scenic, the sampled frames are stacked along height and embedded by one 2D conv, so
  the parameters are an image ViT's (`embedding/kernel [fh, fw, c, d]`).
  """
  b, t, h, w, c = video.shape
  fh, fw = tuple(patch_size)[:2]
  frames = video[:, uniform_frame_indices(t, n_sampled_frames)]
  t_s = frames.shape[1]
  x = nn.Conv(
      hidden_size, (fh, fw), strides=(fh, fw), padding="VALID",
      kernel_init=axes(_default_kernel_init, (None, None, None, EMBED)),
      bias_init=axes(nn.initializers.zeros, (EMBED,)),
      dtype=dtype, name="embedding")(frames.reshape(b, t_s * h, w, c))
  return x.reshape(b, t_s, h // fh, w // fw, hidden_size)


def video_to_tokens(video: jax.Array, temporal_encoding_config, patch_size, hidden_size,
                    dtype) -> jax.Array:
  """Tokenises (inside the caller's compact method) `video [b, t, h, w, c]` into `tokens [b, t', n, d]` (n spatial tokens per t')."""
  if video.ndim != 5:
    raise ValueError(f"video must be [batch, frames, height, width, channels], got {video.shape}")
  method = temporal_encoding_config.get("method", "3d_conv")
  patch_size = tuple(patch_size)
  if method == "3d_conv":
    if len(patch_size) != 3:
      raise ValueError(f"model.patches.size must be (fh, fw, ft) for 3d_conv, got {patch_size}")
    x = tubelet_embedding(video, hidden_size, patch_size,
                          temporal_encoding_config.get("kernel_init_method", None), dtype)
  elif method == "temporal_sampling":
    x = frame_sampling_embedding(video, hidden_size, patch_size,
                                 temporal_encoding_config.n_sampled_frames, dtype)
  else:
    raise ValueError(f"model.temporal_encoding_config.method={method!r}; "
                     "valid: '3d_conv', 'temporal_sampling'")
  b, t, gh, gw, d = x.shape
  if t * gh * gw == 0:
    raise ValueError(f"no tokens: video {video.shape} is smaller than patches {patch_size}")
  return x.reshape(b, t, gh * gw, d)

