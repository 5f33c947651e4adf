"""Batch mixing inside the jitted train step (`config.mixup`): mixup and CutMix, JAX only.

They run on the device, on the global batch, so they live apart from the TensorFlow clip
augmentations of `augment.py`.
"""
import jax
import jax.numpy as jnp


def mixup(rng: jax.Array, inputs: jax.Array, labels: jax.Array,
          alpha: float) -> tuple[jax.Array, jax.Array]:
  """Mixup with one λ ~ Beta(alpha, alpha) per batch, each example mixed with the batch reversed.

  Args:
    rng: PRNG key.
    inputs: [b, ...] clips.
    labels: [b, num_classes] one-hot (or soft) labels.
    alpha: Beta parameter (> 0).

  Returns:
    (mixed inputs, mixed labels), same shapes and dtypes.
  """
  lam = jax.random.beta(rng, alpha, alpha)
  mixed = lam * inputs + (1.0 - lam) * inputs[::-1]
  mixed_labels = lam * labels + (1.0 - lam) * labels[::-1]
  return mixed.astype(inputs.dtype), mixed_labels.astype(labels.dtype)


def cutmix(rng: jax.Array, inputs: jax.Array, labels: jax.Array,
           alpha: float) -> tuple[jax.Array, jax.Array]:
  """CutMix: a box (same on every frame, one per batch) pasted from the reversed batch.

  The box has area (1 - λ) of the frame with λ ~ Beta(alpha, alpha); labels are mixed by the area
  actually pasted (after clipping at the border).

  Args:
    rng: PRNG key.
    inputs: [b, t, h, w, c] clips.
    labels: [b, num_classes].
    alpha: Beta parameter (> 0).
  """
  assert inputs.ndim == 5, f"cutmix expects [b, t, h, w, c], got {inputs.shape}"
  h, w = inputs.shape[2], inputs.shape[3]
  rng_lam, rng_y, rng_x = jax.random.split(rng, 3)
  lam = jax.random.beta(rng_lam, alpha, alpha)
  cut = jnp.sqrt(1.0 - lam)
  cy = jax.random.uniform(rng_y) * h
  cx = jax.random.uniform(rng_x) * w
  y0 = jnp.clip(jnp.round(cy - cut * h / 2), 0, h)
  y1 = jnp.clip(jnp.round(cy + cut * h / 2), 0, h)
  x0 = jnp.clip(jnp.round(cx - cut * w / 2), 0, w)
  x1 = jnp.clip(jnp.round(cx + cut * w / 2), 0, w)
  rows = jnp.arange(h)[:, None]
  cols = jnp.arange(w)[None, :]
  box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
  mixed = jnp.where(box[None, None, :, :, None], inputs[::-1], inputs)
  lam_area = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
  return mixed, (lam_area * labels + (1.0 - lam_area) * labels[::-1]).astype(labels.dtype)


def mix(rng: jax.Array, inputs: jax.Array, labels: jax.Array, mixup_alpha: float,
        cutmix_alpha: float) -> tuple[jax.Array, jax.Array]:
  """`config.mixup`: mixup (`alpha`), CutMix (`cutmix_alpha`), or a coin flip per step if both."""
  coin, rng = jax.random.split(rng)
  if not cutmix_alpha:
    return mixup(rng, inputs, labels, mixup_alpha)
  if not mixup_alpha:
    return cutmix(rng, inputs, labels, cutmix_alpha)
  return jax.lax.cond(jax.random.bernoulli(coin),
                      lambda: cutmix(rng, inputs, labels, cutmix_alpha),
                      lambda: mixup(rng, inputs, labels, mixup_alpha))
