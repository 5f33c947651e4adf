"""Feeding the devices: order, run-ahead, errors, uint8 pixels, and the idle-time measure."""
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import data_fixtures as fx
from tests import train_helpers as th
from vivit_jax import sharding, train
from vivit_jax.data import build_dataset, pixels
from vivit_jax.device_feed import DeviceFeed
from vivit_jax.metrics import read_metrics


def _mesh():
  return sharding.make_mesh(None, jax.devices()[:1])


@pytest.mark.parametrize("size", [0, 1, 3])
def test_keeps_order_and_runs_ahead(size):
  taken = []

  def local_batches():
    for i in range(6):
      taken.append(i)
      yield {"inputs": np.full((2, 3), i, np.float32), "extra": np.zeros(2)}

  with DeviceFeed(local_batches(), _mesh(), size, {"inputs": np.float32}) as feed:
    first = next(feed)
    time.sleep(0.3)  # let the thread fill the queue
    # `size` batches on the devices, plus at most one the thread holds until there is room.
    assert size + 1 <= len(taken) <= size + 2, taken
    assert set(first) == {"inputs"} and isinstance(first["inputs"], jax.Array)
    values = [float(first["inputs"][0, 0])] + [float(b["inputs"][0, 0]) for b in feed]
  assert values == [0, 1, 2, 3, 4, 5]


def test_pipeline_errors_surface_in_order():
  def local_batches():
    yield {"inputs": np.zeros((2,), np.float32)}
    raise OSError("shard train-00003 is unreadable")

  feed = DeviceFeed(local_batches(), _mesh(), 2, {"inputs": np.float32})
  next(feed)
  with pytest.raises(OSError, match="train-00003"):
    next(feed)


def test_uint8_needs_pixels_not_normalised_floats():
  feed = DeviceFeed(iter([{"inputs": np.zeros((2, 3), np.float32)}]), _mesh(), 0,
                    {"inputs": np.uint8})
  with pytest.raises(TypeError, match=r"batch\['inputs'\] is float32, but "
                     r"data_dtype_str='uint8' expects uint8 pixels"):
    next(feed)


def test_device_batches_pass_through():
  on_device = {"inputs": jnp.arange(4, dtype=jnp.uint8)}
  with DeviceFeed(iter([on_device]), _mesh(), 2, {"inputs": np.uint8}) as feed:
    assert next(feed)["inputs"] is on_device["inputs"]


@pytest.mark.parametrize("size", [0, 2])
def test_idle_time_counts_only_when_the_devices_have_nothing_to_run(size):
  def slow():
    while True:
      time.sleep(0.2)
      yield {"inputs": np.zeros((2,), np.float32)}

  with DeviceFeed(slow(), _mesh(), size, {"inputs": np.float32}) as feed:
    _, idle = feed.next_batch(lambda: False)
    assert 0.15 < idle < 1.0, idle
    _, busy = feed.next_batch(lambda: True)
    assert busy == 0.0


def test_uint8_pixels_normalise_on_device_like_the_host(tmp_path):
  """The uint8 path gives the float path's clips, up to rounding to whole pixel values."""
  fx.write_table(str(tmp_path), "t", [[fx.clip_record(8, 1), fx.clip_record(9, 2)]])
  for zero_centering in (True, False):
    dc = fx.dataset_configs(str(tmp_path), {"train": "t@1", "test": "t@1"}, min_resize=28,
                            zero_centering=zero_centering, augmentation_params={
                                "do_jitter_scale": True, "do_color_augment": True,
                                "prob_color_augment": 1.0})
    for split in ("train", "test"):
      floats = fx.collect(build_dataset(dc, split, 2, seed=3), 1)[0]["inputs"]
      ints = fx.collect(build_dataset(dc, split, 2, seed=3, uint8_pixels=True), 1)[0]["inputs"]
      assert ints.dtype == np.uint8 and floats.dtype == np.float32
      on_device = np.asarray(jax.jit(lambda x: pixels.model_input(x, zero_centering))(ints))
      step = 1 / 127.5 if zero_centering else 1 / 255
      np.testing.assert_allclose(on_device, floats, atol=0.5 * step + 1e-6)
      assert np.abs(on_device - floats).max() > 0  # the float path really was not rounded


def test_trainer_reports_the_devices_waiting_on_a_slow_pipeline(tmp_path):
  def slow_data_fn(split, batch_size, **kw):
    batches = th.fake_data_fn(split, batch_size, **kw)
    if split != "train":
      return batches
    return (time.sleep(0.25) or b for b in batches)

  config = th.tiny_config(num_training_steps=8, log_summary_steps=4, checkpoint_steps=0)
  config.dataset_configs.prefetch_to_device = 2
  train.train_and_evaluate(config, str(tmp_path), mode="train", data_fn=slow_data_fn,
                           devices=jax.devices()[:1])
  rows = [r for r in read_metrics(str(tmp_path)) if "data_wait_fraction" in r]
  # The tiny model's step takes milliseconds: the devices wait for data most of the time.
  assert rows and all(0.6 < r["data_wait_fraction"] <= 1.0 for r in rows), rows
