"""Scenic checkpoints: both train-state layouts, file/dir/remote paths, bad input, the matcher."""
import shutil

import numpy as np
import pytest

from tests import ckpt_testlib as lib
from vivit_jax import checkpoints as ckpt
from vivit_jax.checkpoints import scenic

CASES = ["spacetime_token", "factorized_encoder_token", "spacetime_token_legacy_optimizer_layout"]


@pytest.mark.parametrize("name", CASES[:2])  # the legacy layout holds the same params (below)
def test_loaded_params_give_scenic_logits(scenic_ref, name):
  case = scenic_ref / "vivit" / name
  config = lib.read_config(case / "config.json")
  ref = np.load(scenic_ref / "vivit" / name.replace("_legacy_optimizer_layout", "") /
                "reference.npz")
  params = ckpt.load_scenic_checkpoint(str(case))  # a directory of checkpoint_<step>
  model, fresh = lib.param_shapes(config.model, 5, (1, 8, 16, 16, 3))
  params = ckpt.match_params(fresh, params, source=str(case))
  logits = model.apply({"params": params}, ref["inputs"], train=False)
  np.testing.assert_allclose(logits, ref["logits"], atol=1e-5, rtol=0)
  assert all(isinstance(v, np.ndarray) for v in ckpt.flatten(params).values())


def test_both_layouts_hold_the_same_params(scenic_ref):
  new = ckpt.flatten(ckpt.load_scenic_checkpoint(scenic_ref / "vivit/spacetime_token/checkpoint_2"))
  old = ckpt.flatten(ckpt.load_scenic_checkpoint(
      scenic_ref / "vivit/spacetime_token_legacy_optimizer_layout/checkpoint_2"))
  assert new.keys() == old.keys() and len(new) == 40
  for k in new:
    np.testing.assert_array_equal(new[k], old[k])


def test_directory_takes_newest_step_and_released_name(scenic_ref, tmp_path):
  st = scenic_ref / "vivit/spacetime_token/checkpoint_2"
  fe = scenic_ref / "vivit/factorized_encoder_token/checkpoint_2"
  shutil.copy(st, tmp_path / "checkpoint_9")
  shutil.copy(fe, tmp_path / "checkpoint_10")  # numerically newest, not lexically
  (tmp_path / "checkpoint_11tmp").write_bytes(b"partial write")  # ignored
  assert ckpt.load_scenic_checkpoint(tmp_path).keys() >= {"SpatialTransformer"}
  released = tmp_path / "released"
  released.mkdir()
  shutil.copy(st, released / "checkpoint")  # released files are called just `checkpoint`
  assert "Transformer" in ckpt.load_scenic_checkpoint(released)
  assert "Transformer" in ckpt.load_scenic_checkpoint(released / "checkpoint")


def test_remote_paths_go_through_gfile(scenic_ref):
  import tensorflow as tf
  url = "ram://vivit_ckpt_test/run"
  tf.io.gfile.makedirs(url)
  tf.io.gfile.copy(str(scenic_ref / "vivit/spacetime_token/checkpoint_2"), url + "/checkpoint_2",
                   overwrite=True)
  remote = ckpt.flatten(ckpt.load_scenic_checkpoint(url))
  local = ckpt.flatten(ckpt.load_scenic_checkpoint(scenic_ref / "vivit/spacetime_token"))
  assert remote.keys() == local.keys()
  np.testing.assert_array_equal(remote["cls"], local["cls"])


def test_truncated_file_is_named(scenic_ref, tmp_path):
  data = (scenic_ref / "vivit/spacetime_token/checkpoint_2").read_bytes()
  bad = tmp_path / "checkpoint_3"
  bad.write_bytes(data[: len(data) // 3])
  with pytest.raises(ckpt.CheckpointFormatError, match=r"checkpoint_3 .*truncated"):
    ckpt.load_scenic_checkpoint(tmp_path)


def _text_file(tmp_path):
  path = tmp_path / "notes.txt"
  path.write_text("this is not a checkpoint\n")
  return path


def _npz_file(tmp_path):
  path = tmp_path / "vit.npz"
  np.savez(path, a=np.zeros(3))
  return path


def _other_msgpack(tmp_path):
  from flax import serialization  # pylint: disable=g-import-not-at-top
  path = tmp_path / "other_state"
  path.write_bytes(serialization.msgpack_serialize({"step": 3, "weights": {"w": np.ones(2)}}))
  return path


@pytest.mark.parametrize("make,message", [
    (_text_file, r"notes.txt .*not a readable flax msgpack"),
    (_npz_file, r"vit.npz is an .npz archive"),
    (_other_msgpack, r"holds no parameters.*\['step', 'weights'\]"),
    (lambda tmp_path: tmp_path, r"no Scenic checkpoint in directory"),
    (lambda tmp_path: tmp_path / "missing", "not found: .*missing"),
], ids=["text", "npz", "other_msgpack", "empty_dir", "missing"])
def test_non_checkpoint_files(tmp_path, make, message):
  with pytest.raises(ckpt.CheckpointFormatError, match=message):
    ckpt.load_scenic_checkpoint(make(tmp_path))


def test_a_file_resolves_to_itself(tmp_path):
  text = _text_file(tmp_path)
  assert scenic.resolve_checkpoint_file(str(text)) == str(text)


def test_wrong_variant_lists_every_problem_at_once(scenic_ref):
  fe_params = ckpt.load_scenic_checkpoint(scenic_ref / "vivit/factorized_encoder_token")
  config = lib.vivit_config()
  _, expected = lib.param_shapes(config.model, 5, (1, 8, 16, 16, 3))
  with pytest.raises(ckpt.CheckpointMismatchError) as e:
    ckpt.match_params(expected, fe_params, source="k400_fe/checkpoint")
  err = e.value
  assert "k400_fe/checkpoint" in str(err)
  assert "Transformer/encoderblock_0/LayerNorm_0/scale" in err.missing
  assert "cls" in err.missing and "cls_SpatialTransformer" in err.unused
  assert "TemporalTransformer/posembed_input/pos_embedding" in str(err)
  assert "the checkpoint holds a ViViT factorized_encoder (Model 2), the model is a ViViT " \
         "spacetime" in str(err)
  assert len(err.missing) == 36 and len(err.unused) == 56 and not err.shape_mismatches


def test_shape_mismatches_are_all_reported(scenic_ref):
  params = ckpt.load_scenic_checkpoint(scenic_ref / "vivit/spacetime_token")
  config = lib.vivit_config(patches=dict(size=(4, 4, 4)), num_heads=6)  # ft 4, 6 heads of 8
  _, expected = lib.param_shapes(config.model, 7, (1, 8, 16, 16, 3))
  with pytest.raises(ckpt.CheckpointMismatchError) as e:
    ckpt.match_params(expected, params, source="ckpt")
  bad = {p: (exp, got) for p, exp, got in e.value.shape_mismatches}
  assert bad["embedding/kernel"] == ((4, 4, 4, 3, 48), (2, 4, 4, 3, 48))
  assert bad["Transformer/posembed_input/pos_embedding"] == ((1, 33, 48), (1, 65, 48))
  assert bad["output_projection/bias"] == ((7,), (5,))
  assert bad["Transformer/encoderblock_1/MultiHeadDotProductAttention_0/query/kernel"] == (
      (48, 6, 8), (48, 4, 12))
  # per block q/k/v kernels and biases + out kernel; embedding, posemb, both head arrays
  assert len(bad) == 2 * 7 + 4 and not e.value.missing and not e.value.unused
  assert "embedding/kernel: expected (4, 4, 4, 3, 48), found (2, 4, 4, 3, 48)" in str(e.value)
