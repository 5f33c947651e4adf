"""convert_checkpoint CLI and params-only Orbax checkpoints (also the train loop's layout)."""
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests import ckpt_testlib as lib
from vivit_jax import checkpoints as ckpt
from vivit_jax.tools import convert_checkpoint

REPO = pathlib.Path(__file__).resolve().parents[1]


def _same(a, b):
  fa, fb = ckpt.flatten(a), ckpt.flatten(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


def test_scenic_to_orbax_command(scenic_ref, tmp_path):
  case = scenic_ref / "vivit/spacetime_token_legacy_optimizer_layout"
  out = tmp_path / "k400"
  proc = subprocess.run(
      [sys.executable, "-m", "vivit_jax.tools.convert_checkpoint", "--from=scenic", "--to=orbax",
       f"--input={case}", f"--output={out}", f"--config={case / 'config.json'}"],
      capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert "40 arrays, 46,085 parameters" in proc.stdout
  assert "embedding/kernel" in proc.stdout and "(2, 4, 4, 3, 48)" in proc.stdout
  _same(ckpt.load_params(out), ckpt.load_scenic_checkpoint(case))
  assert (out / convert_checkpoint.MODEL_CONFIG_FILE).is_file()


def test_mismatching_config_fails_before_writing(scenic_ref, tmp_path):
  fe_config = scenic_ref / "vivit/factorized_encoder_token/config.json"
  with pytest.raises(ckpt.CheckpointMismatchError, match=r"(?s)spacetime_token does not fit.*missing"):
    convert_checkpoint.run(["--from=scenic", "--to=orbax", f"--output={tmp_path / 'x'}",
                            f"--input={scenic_ref / 'vivit/spacetime_token'}",
                            f"--config={fe_config}"])
  assert not (tmp_path / "x").exists()


def test_vit_to_orbax_runs_init_from(scenic_ref, tmp_path, capsys):
  config, npz = lib.surgery_case(scenic_ref, "spacetime_token")
  cfg_file = str(scenic_ref / lib.SURGERY.format("spacetime_token")) + ".config.json"
  convert_checkpoint.run(["--from=vit", "--to=orbax", f"--input={scenic_ref / lib.VIT_CASE}",
                          f"--output={tmp_path / 'vivit'}", f"--config={cfg_file}"])
  assert "initialised from a ViT" in capsys.readouterr().out
  got = ckpt.flatten(ckpt.load_params(tmp_path / "vivit"))
  expected = lib.fixture_prefix(npz, "result")
  for k in ("embedding/kernel", "Transformer/posembed_input/pos_embedding", "cls"):
    np.testing.assert_array_equal(got[k], expected[k].astype(np.float32))
  convert_checkpoint.run(["--from=vit", "--to=orbax", f"--input={scenic_ref / lib.VIT_CASE}",
                          f"--output={tmp_path / 'vit'}"])  # no config: the ViT as it is
  _same(ckpt.load_params(tmp_path / "vit"), ckpt.load_scenic_checkpoint(scenic_ref / lib.VIT_CASE))


def test_scenic_to_hf_and_back(scenic_ref, tmp_path):
  case = scenic_ref / "vivit/spacetime_token"
  convert_checkpoint.run(["--from=scenic", "--to=hf", f"--input={case}",
                          f"--output={tmp_path / 'hf'}", "--num_frames=8", "--image_size=16"])
  convert_checkpoint.run(["--from=hf", "--to=orbax", f"--input={tmp_path / 'hf'}",
                          f"--output={tmp_path / 'back'}"])
  _same(ckpt.load_params(tmp_path / "back"), ckpt.load_scenic_checkpoint(case))


def test_load_params_reads_train_loop_checkpoints(tmp_path):
  params = {"embedding": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)},
            "cls": np.ones((1, 1, 3), np.float32)}
  state = {"params": params, "opt_state": {"mu": params}, "step": np.int32(5)}
  manager = ocp.CheckpointManager(tmp_path / "workdir" / "checkpoints")
  for step in (5, 10):
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
  manager.wait_until_finished()
  for path in ("workdir", "workdir/checkpoints", "workdir/checkpoints/10",
               "workdir/checkpoints/10/state"):
    _same(ckpt.load_params(tmp_path / path), params)
  ckpt.save_params(params, tmp_path / "params_only")
  _same(ckpt.load_params(tmp_path / "params_only"), params)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("fsdp",))
  sharded = {"w": jax.device_put(np.arange(8.0, dtype=np.float32).reshape(4, 2),
                                 jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp")))}
  ckpt.save_params(sharded, tmp_path / "sharded")
  loaded = ckpt.load_params(tmp_path / "sharded")
  assert isinstance(loaded["w"], np.ndarray)
  np.testing.assert_array_equal(loaded["w"], np.asarray(sharded["w"]))
  with pytest.raises(ckpt.CheckpointFormatError, match=r"not an Orbax checkpoint"):
    ckpt.load_params(tmp_path / "workdir/checkpoints/10/state/d")
