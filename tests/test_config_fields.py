"""No config field is accepted and ignored: each works, or is refused with the reason."""
import logging

import jax
import numpy as np
import pytest

from tests import train_helpers as th
from tests.test_configs import load
from vivit_jax import config_check, sharding, train
from vivit_jax.checkpoints import surgery
from vivit_jax.models import build_model
from vivit_jax.models.embed import TUBELET_INITIALIZERS


def _train(tmp_path, **overrides):
  config = th.tiny_config(**{"num_training_steps": 4, "checkpoint_steps": 2, **overrides})
  config_check.validate_config(config)
  return train.train_and_evaluate(config, str(tmp_path), mode="train", data_fn=th.fake_data_fn,
                                  devices=jax.devices()[:1])


@pytest.mark.parametrize("field,value,reason", [
    ("steps_per_eval", 100, "evaluated exactly once"),
    ("steps_per_test", 100, "evaluated exactly once"),
    ("debug_train", True, "no debug mode"),
    ("multicrop_softmax_logits", True, "eval_average='softmax'"),
    ("dataset_configs.do_multicrop_test", True, "num_test_clips"),
    ("dataset_configs.log_test_epochs", 5, "log_eval_steps"),
    ("dataset_configs.test_batch_size", 8, "eval_batch_size"),
])
def test_scenic_fields_without_counterpart_are_refused(field, value, reason):
  config = load("k400_fe")
  node, leaf = (config.dataset_configs, field.split(".")[1]) if "." in field else (config, field)
  node[leaf] = value
  with pytest.raises(ValueError, match=rf"config.{field}=.* does not implement: .*{reason}"):
    config_check.validate_config(config)


def test_scenic_switches_set_to_off_are_fine():
  config = load("k400_fe")
  config.steps_per_eval = None
  config.debug_train = False
  config.init_from.checkpoint_path = None
  config_check.validate_config(config)


def test_unknown_dataset_field_is_refused_with_suggestion():
  config = load("k400_fe")
  config.dataset_configs.num_frame = 16
  with pytest.raises(ValueError, match=r"dataset_configs.num_frame is not a known field; did "
                                       r"you mean config.dataset_configs.num_frames\?"):
    config_check.validate_config(config)


def test_one_hot_labels_false_is_refused():
  config = load("k400_fe")
  config.dataset_configs.one_hot_labels = False
  with pytest.raises(ValueError, match="one_hot_labels=False; labels are always one-hot"):
    config_check.validate_config(config)


def test_checkpoint_false_saves_nothing(tmp_path):
  _, summary = _train(tmp_path, checkpoint=False)
  assert summary["step"] == 4
  assert not list((tmp_path / "checkpoints").iterdir())
  assert sorted(th.read_losses(tmp_path)) == [1, 2, 3, 4]


def test_write_summary_false_writes_no_metrics_files(tmp_path):
  _train(tmp_path, write_summary=False)
  assert not (tmp_path / "metrics.jsonl").exists()
  assert not list(tmp_path.glob("events.out.tfevents.*"))
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "4"]


def test_write_summary_writes_tensorboard_and_jsonl(tmp_path):
  _train(tmp_path)
  assert sorted(th.read_losses(tmp_path)) == [1, 2, 3, 4]
  assert list(tmp_path.glob("events.out.tfevents.*"))


def test_xprof_writes_a_profiler_trace(tmp_path):
  _train(tmp_path, xprof=True, num_training_steps=8)
  traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 0


def test_data_dtype_str_bfloat16_trains(tmp_path):
  _, summary = _train(tmp_path, data_dtype_str="bfloat16")
  losses = th.read_losses(tmp_path)
  assert summary["step"] == 4 and all(np.isfinite(list(losses.values())))


def test_one_log_line_per_logged_step(tmp_path, caplog):
  with caplog.at_level(logging.INFO):
    _train(tmp_path)
  lines = [r.getMessage() for r in caplog.records]
  for step in range(1, 5):
    assert sum(line.startswith(f"step {step}/4:") for line in lines) == 1, lines
  assert not [line for line in lines if "train_loss" in line]  # no second writer's line


def test_tubelet_initialisers_are_one_list():
  """Every name a config may give builds a fresh model and inflates a ViT kernel."""
  config = th.tiny_config()
  kernel_2d = np.ones((4, 4, 3, 16))
  for method in TUBELET_INITIALIZERS:
    config.model.temporal_encoding_config.kernel_init_method = method
    config_check.validate_config(config)
    model = build_model(config.model, th.NUM_CLASSES)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1,) + th.SHAPE, np.float32),
                        train=False)["params"]
    kernel = np.asarray(jax.tree.leaves(params["embedding"])[-1])
    assert kernel.shape == (2, 4, 4, 3, 16) and np.abs(kernel).sum() > 0, method
    assert surgery.inflate_kernel(kernel_2d, 2, method).shape == (2, 4, 4, 3, 16), method
  with pytest.raises(ValueError, match=r"valid: \['central_frame_initializer', "
                                       r"'average_frame_initializer', 'average_arp_frame_"):
    surgery.inflate_kernel(kernel_2d, 2, "nope")
