"""Sampling indices, crops, temporally consistent augmentation, mixup and CutMix."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from vivit_jax.data import augment
from vivit_jax.data import mixing
from vivit_jax.data import randaugment
from vivit_jax.data import sampling


def _indices(t, mode, **kw):
  return sampling.sample_indices(tf.constant(t), 4, 2, mode, **kw).numpy()


def test_sample_indices():
  np.testing.assert_array_equal(_indices(20, "central"), [[6, 8, 10, 12]])
  np.testing.assert_array_equal(_indices(7, "central"), [[0, 2, 4, 6]])
  np.testing.assert_array_equal(_indices(5, "central"), [[0, 2, 4, 1]])  # Wraps.
  np.testing.assert_array_equal(_indices(13, "uniform", num_clips=3),
                                [[0, 2, 4, 6], [3, 5, 7, 9], [6, 8, 10, 12]])
  np.testing.assert_array_equal(_indices(13, "uniform", num_clips=1), [[3, 5, 7, 9]])
  starts = {int(_indices(12, "random", seed=tf.constant([0, s]))[0, 0]) for s in range(60)}
  assert starts == set(range(6))  # Every start in [0, T - span] occurs, nothing beyond.
  a = _indices(12, "random", seed=tf.constant([1, 2]))
  np.testing.assert_array_equal(a, _indices(12, "random", seed=tf.constant([1, 2])))
  with pytest.raises(ValueError, match="mode 'middle' not in"):
    _indices(12, "middle")
  with pytest.raises(ValueError, match="needs a seed"):
    _indices(12, "random")


def test_crop_windows():
  central = augment.crop_windows(tf.constant(24), tf.constant(32), 24, 16, "central").numpy()
  np.testing.assert_array_equal(central, [[4, 8, 16]])
  three = augment.crop_windows(tf.constant(24), tf.constant(32), 24, 24, "three").numpy()
  np.testing.assert_array_equal(three, [[0, 0, 24], [0, 4, 24], [0, 8, 24]])
  tall = augment.crop_windows(tf.constant(40), tf.constant(20), 10, 10, "three").numpy()
  np.testing.assert_array_equal(tall, [[0, 0, 20], [10, 0, 20], [20, 0, 20]])
  # min_resize 12, crop 8 on a 24-pixel short side: a 16-pixel source box.
  for s in range(20):
    y, x, side = augment.crop_windows(tf.constant(24), tf.constant(30), 12, 8, "random",
                                      seed=tf.constant([s, 0])).numpy()[0]
    assert side == 16 and 0 <= y <= 8 and 0 <= x <= 14


def _video(seed=0, t=4, size=16):
  frame = np.random.default_rng(seed).uniform(0, 255, (size, size, 3)).astype(np.float32)
  return tf.constant(np.repeat(frame[None], t, axis=0))


@pytest.mark.parametrize("name", ["rand_augment", "color", "erasing", "flip"])
def test_augmentations_are_the_same_on_every_frame(name):
  video = _video()
  changed = 0
  for s in range(12):
    seed = tf.constant([s, 1])
    out = {
        "rand_augment": lambda: randaugment.rand_augment(video, seed, 2, 20),
        "color": lambda: augment.color_augment(video, seed, 1.0, 0.3),
        "erasing": lambda: augment.random_erasing(video, seed, 0.7),
        "flip": lambda: augment.random_flip(video, seed),
    }[name]().numpy()
    assert out.shape == video.shape and out.min() >= 0 and out.max() <= 255
    for t in range(1, 4):
      np.testing.assert_allclose(out[t], out[0], atol=1e-4)
    changed += not np.allclose(out, video.numpy(), atol=1e-3)
  assert changed >= 3


def test_every_rand_augment_op_runs():
  video = _video(t=2)
  for op in randaugment.OPS:
    out = op(video, tf.constant(0.5)).numpy()
    assert out.shape == video.shape and np.isfinite(out).all()
  with pytest.raises(ValueError, match="rand_augment_magnitude=40"):
    randaugment.rand_augment(video, tf.constant([0, 0]), 1, 40)


def test_flip_mirrors_columns():
  video = _video()
  flipped = [augment.random_flip(video, tf.constant([s, 0])).numpy() for s in range(10)]
  assert any(np.array_equal(f, video.numpy()[:, :, ::-1]) for f in flipped)
  assert all(np.array_equal(f, video.numpy()) or np.array_equal(f, video.numpy()[:, :, ::-1])
             for f in flipped)


def test_mixup_one_lambda_per_batch():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 2, 8, 8, 3))
  y = jax.nn.one_hot(jnp.array([0, 1, 2, 3]), 5)
  mx, my = jax.jit(mixing.mixup, static_argnums=3)(jax.random.PRNGKey(1), x, y, 0.4)
  lam = float(my[0, 0])
  assert 0 < lam < 1
  np.testing.assert_allclose(my.sum(-1), 1.0, atol=1e-6)
  np.testing.assert_allclose(mx, lam * x + (1 - lam) * x[::-1], atol=1e-5)
  np.testing.assert_allclose(my[1, 1], lam, atol=1e-6)  # Same λ for every example.


def test_cutmix_pastes_one_box_on_every_frame():
  x = jnp.zeros((2, 3, 16, 16, 3)).at[1].set(1.0)
  y = jax.nn.one_hot(jnp.array([0, 1]), 2)
  areas = []
  for s in range(6):
    mx, my = jax.jit(mixing.cutmix, static_argnums=3)(jax.random.PRNGKey(s), x, y, 1.0)
    pasted = np.asarray(mx[0, :, :, :, 0])  # 1 where example 1 was pasted into example 0.
    np.testing.assert_array_equal(pasted, np.repeat(pasted[:1], 3, axis=0))
    area = pasted[0].mean()
    np.testing.assert_allclose(my[0], [1 - area, area], atol=1e-6)
    areas.append(area)
  assert len(set(areas)) > 2
