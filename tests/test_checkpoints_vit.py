"""ViT image checkpoints in three containers, built here from one set of weights."""
import re

import numpy as np
import pytest
from flax import serialization

from tests import ckpt_testlib as lib
from vivit_jax import checkpoints as ckpt

_PRE_LINEN = {"LayerNorm_0": "LayerNorm_0", "MultiHeadDotProductAttention_0":
              "MultiHeadDotProductAttention_1", "LayerNorm_1": "LayerNorm_2",
              "MlpBlock_0": "MlpBlock_3"}


@pytest.fixture(scope="module")
def vit_weights(scenic_ref):
  """The fixture ViT with a zero CLS position embedding (big_vision cannot store another one)."""
  flat = ckpt.flatten(ckpt.load_scenic_checkpoint(scenic_ref / lib.VIT_CASE))
  flat["Transformer/posembed_input/pos_embedding"][:, 0] = 0.0
  return flat


def _scenic_msgpack(flat, path):
  state = {"params": ckpt.unflatten(flat), "opt_state": {}, "global_step": np.int32(7),
           "model_state": {}, "rng": np.zeros(2, np.uint32), "metadata": {}}
  path.mkdir()
  (path / "checkpoint_7").write_bytes(serialization.msgpack_serialize(state))
  return path


def _augreg_npz(flat, path):
  """vision_transformer / AugReg: root keys, pre-Linen block names, `head`."""
  out = {}
  for k, v in flat.items():
    k = re.sub(r"(encoderblock_\d+)/(\w+?)/", lambda m: f"{m[1]}/{_PRE_LINEN[m[2]]}/", k)
    out[k.replace("output_projection/", "head/")] = v
  np.savez(path, **out)
  return path


def _big_vision_npz(flat, path, *, prefix="params/", scanned=False):
  """big_vision: `params/` prefix, top-level pos_embedding without the CLS slot, `head`."""
  out = {}
  for k, v in flat.items():
    if k == "Transformer/posembed_input/pos_embedding":
      k, v = "pos_embedding", v[:, 1:]
    out[k.replace("output_projection/", "head/")] = v
  if scanned:  # scan_layers=True: blocks stacked on a leading depth axis
    blocks = sorted({m[1] for k in out if (m := re.match(r"Transformer/(encoderblock_\d+)/", k))})
    for k in [k for k in out if k.startswith("Transformer/encoderblock_0/")]:
      rest = k[len("Transformer/encoderblock_0/"):]
      out["Transformer/encoderblock/" + rest] = np.stack(
          [out.pop(f"Transformer/{b}/{rest}") for b in blocks])
  np.savez(path, **{prefix + k: v for k, v in out.items()},
           **{"opt/state/step": np.int32(7)} if prefix.startswith("opt") else {})
  return path


def test_all_containers_initialise_the_same_vivit(scenic_ref, vit_weights, tmp_path):
  sources = {
      "scenic": _scenic_msgpack(vit_weights, tmp_path / "scenic_vit"),
      "augreg": _augreg_npz(vit_weights, tmp_path / "augreg.npz"),
      "big_vision": _big_vision_npz(vit_weights, tmp_path / "bv.npz"),
      "big_vision_old_scanned": _big_vision_npz(vit_weights, tmp_path / "bv_old.npz",
                                                prefix="opt/target/", scanned=True),
  }
  for name, path in sources.items():
    loaded = ckpt.flatten(ckpt.load_vit_params(str(path)))
    assert loaded.keys() == vit_weights.keys(), name
    for k in loaded:
      np.testing.assert_array_equal(loaded[k], vit_weights[k], err_msg=f"{name}: {k}")

  config, npz = lib.surgery_case(scenic_ref, "spacetime_token")
  fresh = ckpt.unflatten(lib.fixture_prefix(npz, "fresh"))
  results = {}
  for name, path in sources.items():
    config.init_from.checkpoint_path = str(path)
    config.init_from.checkpoint_format = "scenic" if name == "scenic" else "big_vision"
    results[name] = ckpt.flatten(ckpt.init_from_pretrained(config, fresh))
  first = results["scenic"]
  np.testing.assert_array_equal(first["cls"], vit_weights["cls"])
  np.testing.assert_array_equal(first["Transformer/posembed_input/pos_embedding"][0, 17:33],
                                vit_weights["Transformer/posembed_input/pos_embedding"][0, 1:])
  for name, flat in results.items():
    for k in first:
      np.testing.assert_array_equal(flat[k], first[k], err_msg=f"{name}: {k}")


def test_big_vision_without_cls_has_no_slot(vit_weights, tmp_path):
  gap = {k: v for k, v in vit_weights.items() if k != "cls"}
  loaded = ckpt.load_vit_params(str(_big_vision_npz(gap, tmp_path / "gap.npz")))
  assert "cls" not in loaded
  assert loaded["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 16, 48)


def test_bad_npz_files(tmp_path):
  not_vit = tmp_path / "features.npz"
  np.savez(not_vit, **{"features/mean": np.zeros(3)})
  with pytest.raises(ckpt.CheckpointFormatError,
                     match=r"features.npz is not a ViT checkpoint.*found top-level names \['features'\]"):
    ckpt.load_vit_params(str(not_vit))
  data = (tmp_path / "features.npz").read_bytes()
  truncated = tmp_path / "truncated.npz"
  truncated.write_bytes(data[: len(data) // 2])
  with pytest.raises(ckpt.CheckpointFormatError, match=r"truncated.npz is not a readable .npz"):
    ckpt.load_vit_params(str(truncated))
  with pytest.raises(ValueError, match=r"checkpoint_format='flax'; valid: \['scenic'"):
    ckpt.load_vit_params(str(not_vit), "flax")
