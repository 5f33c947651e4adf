"""`--dry_run` on 8 CPU devices, and the default mesh rule for TPU hosts and pods."""
import subprocess
import sys

import pytest

from tests import train_helpers, train_procs
from tests.test_configs import load
from vivit_jax import config_facts, dry_run, optim, schedules, sharding, train_state

GiB = 2**30


def _abstract_state(config):
  tx, _ = optim.build_optimizer(config, schedules.steps_per_epoch_of(config))
  return train_state.abstract_train_state(config_facts.model(config), tx,
                                    config_facts.input_shape(config))[0]


def _state_bytes(config) -> int:
  """What `train_state.make_run_mesh` weighs: params, their gradients and the optimizer state."""
  return train_state.replicated_state_bytes(_abstract_state(config))


def test_default_mesh_rule_on_tpu_hosts_and_pods():
  base, large = _state_bytes(load("k400_fe")), _state_bytes(load("k600_fe"))  # ViViT-B, -L
  assert 1.0 * GiB < base < 1.6 * GiB and large > 3.2 * GiB, (base / GiB, large / GiB)
  dp = (("data", -1), ("fsdp", 1), ("tensor", 1))
  # ViViT-B fits replicated on a v5e-8 (16 GiB chips) and a v4-8 (32 GiB): data parallel.
  assert sharding.default_mesh(base, 16 * GiB, 8)[0] == dp
  assert sharding.default_mesh(base, 32 * GiB, 4)[0] == dp
  # ViViT-L does not: FSDP over the host's chips; on a v4-32 pod data parallel across hosts.
  mesh, why = sharding.default_mesh(large, 32 * GiB, 4)
  assert mesh == (("data", 1), ("fsdp", 4), ("tensor", 1))
  assert "FSDP over each host's 4 devices" in why
  mesh, why = sharding.default_mesh(large, 32 * GiB, 16, num_processes=4)
  assert mesh == (("data", 4), ("fsdp", 4), ("tensor", 1))
  assert why.endswith("data parallel across 4 host(s)")
  # Unknown device memory (CPU): nothing to weigh against, data parallel.
  assert sharding.default_mesh(large, None, 8) == (dp, sharding.default_mesh(large, None, 8)[1])
  assert "device memory unknown" in sharding.default_mesh(large, None, 8)[1]


def test_config_mesh_wins_over_the_rule(monkeypatch):
  monkeypatch.setattr(sharding, "device_memory_bytes", lambda device: 1)  # "nothing fits"
  config = train_helpers.tiny_config(mesh=(("data", 2), ("fsdp", 2), ("tensor", 2)))
  abstract = _abstract_state(config)
  mesh, why = train_state.make_run_mesh(config, abstract)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2} and why == "config.mesh"
  config.mesh = None
  assert dict(train_state.make_run_mesh(config, abstract)[0].shape) == {
      "data": 1, "fsdp": 8, "tensor": 1}


def test_dry_run_shows_the_rules_fsdp_mesh(monkeypatch):
  """A device too small to hold the state replicated: the dry run shows FSDP over 8 devices."""
  monkeypatch.setattr(sharding, "device_memory_bytes", lambda device: 2**10)
  report = dry_run.dry_run(train_helpers.tiny_config(mesh=None))
  assert report["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
  assert "FSDP over each host's 8 devices" in report["mesh_reason"]
  assert report["batch_per_device"] == 1 and report["global_batch"] == 8
  # Parameters are split along `embed`: each device holds a fraction of the state.
  replicated = dry_run.dry_run(train_helpers.tiny_config())
  assert replicated["mesh"] == {"data": 8, "fsdp": 1, "tensor": 1}
  assert report["state_bytes_per_device"] < 0.5 * replicated["state_bytes_per_device"]
  assert report["params"] == replicated["params"]


def test_dry_run_cli_on_8_cpu_devices(tmp_path):
  env = train_procs.worker_env()
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
  env["VIVIT_DATA_DIR"] = str(tmp_path / "data")
  out = subprocess.run(
      [sys.executable, "-m", "vivit_jax.main", f"--config={train_procs.REPO}/configs/k400_st.py",
       "--dry_run", "--config.dataset_configs.num_frames=4",
       "--config.dataset_configs.crop_size=32", "--config.model.num_layers=2",
       "--config.model.hidden_size=64", "--config.model.num_heads=1",
       "--config.model.mlp_dim=64", "--config.batch_size=16"],
      env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.splitlines()
  assert lines[0] == "vivit_jax dry run (nothing is trained, no data is read)"
  assert "devices: 8 x cpu (cpu), 1 process(es)" in lines
  assert any(l.startswith("mesh: data=8 x fsdp=1 x tensor=1 (params + gradients + optimizer state ") for l in lines)
  # Model 1: 1 + 2·2·2 tokens, one line per layer, XLA on a CPU ('auto').
  for i in range(2):
    assert (f"  Transformer/encoderblock_{i}/MultiHeadDotProductAttention_0: xla: 9 tokens "
            "(auto: no fused kernel on cpu)") in lines
  assert any(l.startswith("FLOPs per step: ") and "per clip" in l for l in lines)
  assert "batch: 16 global, 2 per device, 16 per host" in lines
  assert any(l.startswith("memory per device (compiled step): peak ") for l in lines)
  assert not (tmp_path / "data").exists()  # no data read or created
  assert not list(tmp_path.glob("*")), list(tmp_path.glob("*"))  # nothing written


def test_workdir_is_required_without_dry_run(tmp_path):
  env = train_procs.worker_env()
  out = subprocess.run(
      [sys.executable, "-m", "vivit_jax.main", f"--config={train_procs.REPO}/configs/k400_st.py"],
      env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and "--workdir is required (except with --dry_run)" in out.stderr


@pytest.mark.parametrize("value", ["cudnn", "splash"])
def test_dry_run_refuses_a_kernel_this_machine_lacks(value):
  config = train_helpers.tiny_config(**{"model.attention_implementation": value})
  with pytest.raises(ValueError, match=f"attention_implementation='{value}' needs a"):
    dry_run.dry_run(config)
