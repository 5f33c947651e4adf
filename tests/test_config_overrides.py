"""Configs mean what they say under command-line overrides (schedules, run lengths, paths)."""
import sys

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from tests.test_configs import CONFIG_DIR, CONFIG_FILES, load
from vivit_jax import config_check, config_lib, optim, schedules


def parse(monkeypatch, config_name: str, *overrides: str):
  """The config as `python -m vivit_jax.main --config=... OVERRIDES` sees it."""
  argv = ["main", f"--config={CONFIG_DIR / config_name}", *overrides]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides from sys.argv
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=False)
  values(argv)
  config = values.config
  config_lib.resolve_overrides(config, config_flags.get_override_values(values["config"]))
  return config


def _schedule(config):
  per_epoch = schedules.steps_per_epoch_of(config)
  total = schedules.total_training_steps(config, per_epoch)
  _, lr_fn = optim.build_optimizer(config, per_epoch)
  return per_epoch, total, lambda step: float(lr_fn(step))


@pytest.mark.parametrize("overrides", [["--config.batch_size=128"],
                                       ["--config.num_training_epochs=15"]],
                         ids=["batch_128", "half_epochs"])
def test_schedule_follows_overrides(monkeypatch, overrides):
  config = parse(monkeypatch, "k400_fe.py", *overrides)
  config_check.validate_config(config)
  per_epoch, total, lr = _schedule(config)
  base = config.lr_configs.base_learning_rate
  assert per_epoch == 214834 // config.batch_size
  assert total == int(np.ceil(config.num_training_epochs * per_epoch))
  # The last update (step index total - 1) uses the cosine's end value, 0.
  assert lr(total - 1) < 1e-6 * base
  warmup = int(2.5 * per_epoch)  # 2.5 epochs of the run's own batch size
  assert lr(warmup) == pytest.approx(base, rel=1e-6)
  assert lr(warmup - 1) < base and lr(warmup // 2) == pytest.approx(base / 2, rel=1e-3)


def test_steps_override_an_epoch_based_config(monkeypatch):
  config = parse(monkeypatch, "synthetic.py", "--config.num_training_steps=60")
  config_check.validate_config(config)
  assert config.num_training_epochs is None
  assert _schedule(config)[1] == 60


def test_fractional_epochs_override_a_step_based_config(monkeypatch):
  config = parse(monkeypatch, "synthetic.py:runlocal", "--config.num_training_epochs=0.5")
  config_check.validate_config(config)
  assert config.num_training_steps is None
  per_epoch, total, _ = _schedule(config)
  assert total == int(np.ceil(0.5 * per_epoch))


def test_both_run_lengths_on_the_command_line_are_refused(monkeypatch):
  with pytest.raises(ValueError, match="both given; give one"):
    parse(monkeypatch, "synthetic.py", "--config.num_training_steps=60",
          "--config.num_training_epochs=2")


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_config_has_both_run_lengths_typed(name):
  config = load(name)
  assert config.get_type("num_training_epochs") is float
  assert config.get_type("num_training_steps") is int


@pytest.mark.parametrize("value", ["None", "none", ""])
def test_unset_path_values(monkeypatch, value):
  config = parse(monkeypatch, "k400_fe.py", f"--config.init_from.checkpoint_path={value}",
                 f"--config.eval_checkpoint_path={value}")
  assert config.init_from.checkpoint_path is None and config.eval_checkpoint_path is None
