"""init_from: Scenic's own surgery reproduced, and every mode checked against its definition."""
import numpy as np
import pytest
import scipy.ndimage
from flax.core import meta

from tests import ckpt_testlib as lib
from vivit_jax import checkpoints as ckpt
from vivit_jax.checkpoints import surgery

def _vit(scenic_ref):
  return ckpt.flatten(ckpt.load_scenic_checkpoint(scenic_ref / lib.VIT_CASE))


def _surgery(scenic_ref, variant):
  """Runs our init_from on the fixture's fresh params: (config, npz, fresh, Scenic's, ours)."""
  config, npz = lib.surgery_case(scenic_ref, variant)
  fresh, expected = lib.fixture_prefix(npz, "fresh"), lib.fixture_prefix(npz, "result")
  out = ckpt.flatten(ckpt.init_from_pretrained(config, ckpt.unflatten(fresh)))
  assert out.keys() == expected.keys()
  return config, npz, fresh, expected, out


def _assert_scenic_prelogits(config, flat_params, npz):
  model, _ = lib.param_shapes(config.model, 5, (1, 8, 16, 16, 3))
  prelogits = model.apply({"params": ckpt.unflatten(flat_params)}, npz["inputs"], train=False,
                          return_prelogits=True)
  np.testing.assert_allclose(prelogits, npz["prelogits"], atol=1e-5, rtol=0)


def test_model1_reproduces_scenic_exactly(scenic_ref):
  config, npz, fresh, expected, out = _surgery(scenic_ref, "spacetime_token")
  for k in expected:  # Scenic builds the inflated kernel in float64; we keep the model's float32
    np.testing.assert_array_equal(out[k], expected[k].astype(np.float32), err_msg=k)
    assert out[k].dtype == fresh[k].dtype
  _assert_scenic_prelogits(config, out, npz)


def test_model2_reproduces_scenic_except_the_spatial_cls_fix(scenic_ref):
  config, npz, fresh, expected, out = _surgery(scenic_ref, "factorized_encoder_token")
  for k in expected:
    if k != "cls_SpatialTransformer":
      np.testing.assert_array_equal(out[k], expected[k].astype(np.float32), err_msg=k)
  # Scenic keeps the fresh spatial CLS token; we take the ViT's (documented fix).
  np.testing.assert_array_equal(expected["cls_SpatialTransformer"], fresh["cls_SpatialTransformer"])
  np.testing.assert_array_equal(out["cls_SpatialTransformer"], _vit(scenic_ref)["cls"])
  # The temporal transformer keeps its fresh init, as in Scenic.
  for k in out:
    if k.startswith("TemporalTransformer") or k.startswith("output_projection"):
      np.testing.assert_array_equal(out[k], fresh[k], err_msg=k)
  # With Scenic's CLS put back, the whole network computes Scenic's prelogits.
  out["cls_SpatialTransformer"] = fresh["cls_SpatialTransformer"]
  _assert_scenic_prelogits(config, out, npz)


def test_boxed_params_stay_boxed(scenic_ref):
  config, _ = lib.surgery_case(scenic_ref, "spacetime_token")
  _, boxed = lib.param_shapes(config.model, 5, (1, 8, 16, 16, 3), boxed=True)
  boxed = lib.random_like(boxed)
  out = ckpt.init_from_pretrained(config, boxed)
  plain = ckpt.flatten(ckpt.init_from_pretrained(config, meta.unbox(boxed)))
  flat = ckpt.flatten(out)
  assert all(isinstance(v, meta.Partitioned) for v in flat.values())
  assert flat["embedding/kernel"].names == ckpt.flatten(boxed)["embedding/kernel"].names
  for k, v in flat.items():
    np.testing.assert_array_equal(np.asarray(v.value), np.asarray(plain[k]))
  assert flat["output_projection/kernel"] is ckpt.flatten(boxed)["output_projection/kernel"]


def test_inflation_methods(scenic_ref):
  k2 = _vit(scenic_ref)["embedding/kernel"]  # [4, 4, 3, 48]
  central = surgery.inflate_kernel(k2, 3, "central_frame_initializer")
  np.testing.assert_array_equal(central[1], k2)
  assert not central[0].any() and not central[2].any()
  average = surgery.inflate_kernel(k2, 4, "average_frame_initializer")
  for t in range(4):
    np.testing.assert_allclose(average[t], k2 / 4, rtol=1e-7)
  # ARP weights (Bilen et al. eq. 3), worked by hand; they sum to zero.
  np.testing.assert_allclose(surgery.average_arp_weights(2), [-0.5, 0.5])
  np.testing.assert_allclose(surgery.average_arp_weights(3), [-4 / 3, 2 / 3, 2 / 3])
  arp = surgery.inflate_kernel(k2, 2, "average_arp_frame_initializer")
  np.testing.assert_allclose(arp[0], -0.25 * k2, rtol=1e-6)
  np.testing.assert_allclose(arp[1], 0.25 * k2, rtol=1e-6)
  with pytest.raises(ValueError, match=r"kernel_init_method=None .*valid: \['central_frame"):
    surgery.inflate_kernel(k2, 2, None)


def _init(config, scenic_ref, num_classes=5, video=(1, 8, 16, 16, 3), seed=1):
  config.init_from.checkpoint_path = str(scenic_ref / lib.VIT_CASE)
  _, shapes = lib.param_shapes(config.model, num_classes, video)
  fresh = lib.random_like(shapes, seed)
  return ckpt.flatten(fresh), ckpt.flatten(ckpt.init_from_pretrained(config, fresh))


def test_model3_gets_vit_attention_in_space_and_time(scenic_ref):
  vit = _vit(scenic_ref)
  config = lib.vivit_config(
      attention_config=dict(type="factorized_self_attention_block", attention_order="time_space"),
      classifier="gap", temporal_encoding_config=dict(
          method="3d_conv", kernel_init_method="average_frame_initializer"))
  config.init_from.init_temporal_layer_norm = True
  fresh, out = _init(config, scenic_ref)
  for i in range(2):
    src, dst = f"Transformer/encoderblock_{i}/", f"Transformer/encoderblock_{i}/"
    for p in ("query/kernel", "key/bias", "out/kernel", "value/kernel"):
      for axis in ("space", "time"):
        np.testing.assert_array_equal(out[dst + f"MultiHeadDotProductAttention_{axis}/{p}"],
                                      vit[src + f"MultiHeadDotProductAttention_0/{p}"])
    np.testing.assert_array_equal(out[dst + "LayerNorm_space/scale"], vit[src + "LayerNorm_0/scale"])
    np.testing.assert_array_equal(out[dst + "LayerNorm_time/scale"], vit[src + "LayerNorm_0/scale"])
    np.testing.assert_array_equal(out[dst + "LayerNorm_mlp/bias"], vit[src + "LayerNorm_1/bias"])
    np.testing.assert_array_equal(out[dst + "MlpBlock/Dense_1/kernel"],
                                  vit[src + "MlpBlock_0/Dense_1/kernel"])
  np.testing.assert_allclose(out["embedding/kernel"][1], vit["embedding/kernel"] / 2, rtol=1e-7)
  # gap target from a token ViT: the CLS slot is dropped, the 16-token grid tiled over 4 frames.
  pe = out["Transformer/posembed_input/pos_embedding"]
  assert pe.shape == (1, 64, 48)
  for t in range(4):
    np.testing.assert_array_equal(pe[0, 16 * t:16 * (t + 1)],
                                  vit["Transformer/posembed_input/pos_embedding"][0, 1:])
  assert "cls" not in out


def test_model3_zero_temporal_attention_for_identity_init(scenic_ref):
  config = lib.vivit_config(
      attention_config=dict(type="factorized_self_attention_block",
                            attention_kernel_init_method="zero"), classifier="gap")
  config.init_from.init_temporal_transformer = False
  _, shapes = lib.param_shapes(config.model, 5, (1, 8, 16, 16, 3))
  fresh = ckpt.flatten(lib.random_like(shapes))
  config.init_from.checkpoint_path = str(scenic_ref / lib.VIT_CASE)
  out = ckpt.flatten(ckpt.init_from_pretrained(config, ckpt.unflatten(fresh)))
  vit = _vit(scenic_ref)
  # The temporal attention keeps its init (zero kernels with 'zero': a residual identity).
  for k in fresh:
    if "MultiHeadDotProductAttention_time" in k or "LayerNorm_time" in k:
      np.testing.assert_array_equal(out[k], fresh[k], err_msg=k)
  np.testing.assert_array_equal(
      out["Transformer/encoderblock_0/MultiHeadDotProductAttention_space/query/kernel"],
      vit["Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"])


def test_model4_and_model2_gap_from_vit(scenic_ref):
  vit = _vit(scenic_ref)
  config = lib.vivit_config(attention_config=dict(type="factorized_dot_product_attention"),
                            classifier="gap")
  _, out = _init(config, scenic_ref)
  for k, v in vit.items():
    if "encoderblock" in k or "encoder_norm" in k:
      np.testing.assert_array_equal(out[k], v, err_msg=k)
  fe = lib.read_config(scenic_ref / "vivit/factorized_encoder_token/config.json")
  fe.model.classifier = "gap"  # no CLS tokens anywhere: the ViT's cls has no destination
  fe.init_from = dict(positional_embed_size_change="tile")
  _, out = _init(fe, scenic_ref)
  np.testing.assert_array_equal(out["SpatialTransformer/posembed_input/pos_embedding"][0],
                                vit["Transformer/posembed_input/pos_embedding"][0, 1:])
  assert not any(k.startswith("cls") for k in out)


@pytest.mark.parametrize("how", ["resize", "resize_tile"])
def test_posemb_resize_modes(scenic_ref, how):
  vit_pe = _vit(scenic_ref)["Transformer/posembed_input/pos_embedding"]  # [1, 1 + 4*4, 48]
  config = lib.vivit_config()
  config.dataset_configs.crop_size = 32
  config.init_from.positional_embed_size_change = how
  _, out = _init(config, scenic_ref, video=(1, 8, 32, 32, 3))
  pe = out["Transformer/posembed_input/pos_embedding"]
  assert pe.shape == (1, 1 + 4 * 64, 48)
  np.testing.assert_array_equal(pe[0, 0], vit_pe[0, 0])  # CLS slot kept
  grid8 = scipy.ndimage.zoom(vit_pe[0, 1:].reshape(4, 4, 48), (2, 2, 1), order=1).reshape(64, 48)
  # bilinear with aligned corners: the 4 corner embeddings survive unchanged
  np.testing.assert_allclose(grid8[[0, 7, 56, 63]], vit_pe[0, 1:][[0, 3, 12, 15]], rtol=1e-6)
  if how == "resize_tile":
    for t in range(4):
      np.testing.assert_allclose(pe[0, 1 + 64 * t:1 + 64 * (t + 1)], grid8, rtol=1e-6)
  else:  # one 16x16 grid of 256 tokens from the 4x4 one
    grid16 = scipy.ndimage.zoom(vit_pe[0, 1:].reshape(4, 4, 48), (4, 4, 1), order=1)
    np.testing.assert_allclose(pe[0, 1:], grid16.reshape(256, 48), rtol=1e-6)


def test_vivit_fe_to_fe_interpolates_temporal_posemb_and_restores_head(scenic_ref):
  src = ckpt.flatten(ckpt.load_scenic_checkpoint(scenic_ref / "vivit/factorized_encoder_token"))
  config = lib.read_config(scenic_ref / "vivit/factorized_encoder_token/config.json")
  config.dataset_configs.num_frames = 16  # 8 temporal tokens instead of 4
  config.init_from = dict(checkpoint_path=str(scenic_ref / "vivit/factorized_encoder_token"),
                          restore_output_proj=True)
  _, shapes = lib.param_shapes(config.model, 5, (1, 16, 16, 16, 3))
  fresh = ckpt.flatten(lib.random_like(shapes))
  out = ckpt.flatten(ckpt.init_from_pretrained(config, ckpt.unflatten(fresh)))
  assert out.keys() == src.keys()
  for k in src:
    if k != "TemporalTransformer/posembed_input/pos_embedding":
      np.testing.assert_array_equal(out[k], src[k], err_msg=k)
  old, new = src["TemporalTransformer/posembed_input/pos_embedding"], \
      out["TemporalTransformer/posembed_input/pos_embedding"]
  assert new.shape == (1, 9, 48)
  np.testing.assert_array_equal(new[0, 0], old[0, 0])
  np.testing.assert_allclose(new[0, [1, 8]], old[0, [1, 4]], rtol=1e-6)  # ends kept
  np.testing.assert_allclose(new[0, 1:], scipy.ndimage.zoom(old[0, 1:], (2, 1), order=1), rtol=1e-6)
  # Another number of classes: the head is re-initialised even when asked to restore it.
  _, shapes7 = lib.param_shapes(config.model, 7, (1, 16, 16, 16, 3))
  fresh7 = ckpt.flatten(lib.random_like(shapes7))
  out7 = ckpt.flatten(ckpt.init_from_pretrained(config, ckpt.unflatten(fresh7)))
  np.testing.assert_array_equal(out7["output_projection/kernel"], fresh7["output_projection/kernel"])


def test_wrong_width_lists_every_mismatch(scenic_ref):
  config = lib.vivit_config(hidden_size=32, mlp_dim=64)
  with pytest.raises(ckpt.CheckpointMismatchError) as e:
    _init(config, scenic_ref)
  paths = [p for p, _, _ in e.value.shape_mismatches]
  assert "embedding/kernel" in paths and "cls" in paths
  assert "Transformer/encoderblock_1/MlpBlock_0/Dense_0/kernel" in paths
  assert len(paths) == 2 + 2 + 2 * 16 + 1 + 1  # embedding, encoder_norm, 16 per block, posemb, cls
  assert "vit_token_16px" in str(e.value) and "init_from" in str(e.value)


def test_more_layers_in_checkpoint_than_model(scenic_ref):
  config = lib.vivit_config(num_layers=1)
  with pytest.raises(ckpt.CheckpointMismatchError, match=r"encoderblock_1 \(the checkpoint has more"):
    _init(config, scenic_ref)


def test_missing_inflation_method_is_named(scenic_ref):
  config = lib.vivit_config(temporal_encoding_config=dict(method="3d_conv"))
  with pytest.raises(ValueError, match=r"kernel_init_method=None cannot inflate"):
    _init(config, scenic_ref)
