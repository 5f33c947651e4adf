"""Attention maps (vivit_jax.viz.attention_maps, tools/visualize.py attention): weights sown
without touching the fast path, rollout numbers, maps of models whose attention is forced."""
import json
import subprocess
import sys

from flax.core import meta
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from tests import test_data_convert as convert
from tests import train_procs
from tests.test_configs import load
from tests.train_helpers import SHAPE, tiny_config
from vivit_jax import checkpoints, config_facts
from vivit_jax.models import attention
from vivit_jax.tools import visualize
from vivit_jax.viz import attention_maps

VIDEO = jnp.asarray(np.random.default_rng(0).normal(size=(1,) + SHAPE), jnp.float32)
FORCE = 60.0  # logit of the forced key: softmax puts all but e^-60 of the mass on it


def _model2():
  config = tiny_config()  # Model 2, 1 spatial + 1 temporal layer; 2 token-frames of 2×2 patches
  return config, config_facts.model(config)


def _model1():
  config = tiny_config(**{"model.attention_config": {"type": "spacetime"}})
  config.model.update(num_layers=1, mlp_dim=32, num_heads=2)
  return config, config_facts.model(config)


def _params(model, seed=0):
  return meta.unbox(model.init(jax.random.PRNGKey(seed), VIDEO, train=False)["params"])


def _force(transformer: dict, token: int) -> None:
  """Makes every query of the first block of `transformer` attend to `token` (an index into
  its sequence, CLS = 0), given that all other tokens enter the block as zeros.

  Token `token` gets a position embedding `e`; the key projection maps LayerNorm(e) to a
  constant vector and LayerNorm(0) = 0 to 0; every query is the same constant, so the logit of
  `token` is FORCE and all others 0.
  """
  pos = transformer["posembed_input"]["pos_embedding"]
  d = pos.shape[-1]
  e = np.zeros(d, np.float32)
  e[: d // 2] = 1.0  # LayerNorm(e) = ±1
  ln_e = (e - e.mean()) / e.std()
  transformer["posembed_input"]["pos_embedding"] = np.zeros_like(pos)
  transformer["posembed_input"]["pos_embedding"][0, token] = e
  mhsa = transformer["encoderblock_0"]["MultiHeadDotProductAttention_0"]
  _, heads, head_dim = mhsa["key"]["kernel"].shape
  mhsa["key"]["kernel"] = np.broadcast_to(ln_e[:, None, None] / d, (d, heads, head_dim)).copy()
  mhsa["key"]["bias"] = np.zeros((heads, head_dim), np.float32)
  mhsa["query"]["kernel"] = np.zeros((d, heads, head_dim), np.float32)
  # key of `token` = 1 in every entry; logit = q · k / sqrt(head_dim) = FORCE.
  mhsa["query"]["bias"] = np.full((heads, head_dim), FORCE / np.sqrt(head_dim), np.float32)


def _zero(tree: dict, *names) -> None:
  for name in names:
    tree[name] = np.zeros_like(tree[name])


def _maps(config, model, params, head=None):
  _, inter = attention_maps.apply_with_weights(model, params, VIDEO)
  return attention_maps.video_maps(config, jax.device_get(inter), head=head)


def test_sowing_leaves_outputs_params_and_the_training_path_alone():
  config, model = _model2()
  params = _params(model)
  with attention.record_paths() as fast:
    plain = model.apply({"params": params}, VIDEO, train=False, return_prelogits=True)
  with attention.record_paths() as sown:
    out, state = model.apply({"params": params}, VIDEO, train=False, return_prelogits=True,
                             mutable=["intermediates"])
  np.testing.assert_allclose(out, plain, rtol=1e-5, atol=1e-6)
  assert {p.kernel for _, p in fast} == {"xla"}  # the dispatch, untouched
  assert [(site, p.kernel, p.reason) for site, p in sown] == [
      ("SpatialTransformer/encoderblock_0/MultiHeadDotProductAttention_0", "explicit",
       "attention weights sown"),
      ("TemporalTransformer/encoderblock_0/MultiHeadDotProductAttention_0", "explicit",
       "attention weights sown")]
  assert set(state) == {"intermediates"}
  w = state["intermediates"]["SpatialTransformer"]["encoderblock_0"][
      "MultiHeadDotProductAttention_0"]["attention_weights"][0]
  assert w.shape == (2, 2, 5, 5)  # [frames, heads, CLS + 2×2 patches, same]
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
  # The parameter tree of init is unchanged by the sow (no new collection, same leaves).
  init = model.init(jax.random.PRNGKey(0), VIDEO, train=False)
  assert set(init) == {"params"}
  assert jax.tree.structure(meta.unbox(init["params"])) == jax.tree.structure(params)


def test_rollout_of_identity_attention_is_the_identity():
  eye = np.broadcast_to(np.eye(6), (3, 4, 6, 6))
  for residual in (True, False):
    np.testing.assert_array_equal(attention_maps.rollout([eye] * 3, residual=residual),
                                  np.broadcast_to(np.eye(6), (3, 6, 6)))


def test_rollout_is_the_product_of_residual_mixed_head_averaged_layers():
  rng = np.random.default_rng(1)
  ws = [rng.dirichlet(np.ones(5), size=(2, 3, 5)) for _ in range(3)]  # [b, heads, l, l] rows sum 1

  def mixed(w):
    return (w + np.eye(5)) / 2  # rows still sum to 1

  expected = mixed(ws[2].mean(1)) @ mixed(ws[1].mean(1)) @ mixed(ws[0].mean(1))
  np.testing.assert_allclose(attention_maps.rollout(ws), expected, rtol=1e-12)
  one_head = mixed(ws[1][:, 2]) @ mixed(ws[0][:, 2])
  np.testing.assert_allclose(attention_maps.rollout(ws[:2], head=2), one_head, rtol=1e-12)
  with pytest.raises(ValueError, match=r"--head=3: this transformer has 3 heads \(0..2\)"):
    attention_maps.rollout(ws, head=3)


@pytest.mark.parametrize("token", [0, 3])
def test_model2_forced_spatial_and_temporal_attention(token):
  config, model = _model2()
  params = _params(model)
  _zero(params["embedding"], "kernel", "bias")  # every patch token enters as 0
  _force(params["SpatialTransformer"], 1 + token)
  # The frames enter the temporal transformer as 0: only the forced frame's position differs.
  _zero(params["SpatialTransformer"]["encoder_norm"], "scale", "bias")
  _force(params["TemporalTransformer"], 1 + 1)  # token-frame 1
  maps = _maps(config, model, params)
  assert maps.spatial.shape == (2, 2, 2) and maps.temporal.shape == (2,)
  for frame in maps.spatial:
    assert frame.reshape(-1)[token] > 0.999, frame
  np.testing.assert_allclose(maps.temporal, [0.0, 1.0], atol=1e-3)
  assert maps.frames == [(0, 0), (1, 0), (2, 1), (3, 1)]  # tubelets of 2 frames


def test_model1_forced_attention_lands_on_its_frame_and_patch():
  config, model = _model1()
  params = _params(model)
  _zero(params["embedding"], "kernel", "bias")
  frame, patch = 1, 2
  _force(params["Transformer"], 1 + frame * 4 + patch)  # CLS, then time-major 2 × 4 tokens
  maps = _maps(config, model, params)
  np.testing.assert_allclose(maps.temporal, [0.0, 1.0], atol=1e-3)
  assert maps.spatial[frame].reshape(-1)[patch] > 0.999
  # The other frame holds almost no mass, but its map is still normalised on its own.
  np.testing.assert_allclose(maps.spatial[0].sum(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("make", [_model1, _model2])
@pytest.mark.parametrize("head", [None, 1])
def test_maps_are_normalised_per_frame(make, head):
  config, model = make()
  maps = _maps(config, model, _params(model, seed=3), head=head)
  assert maps.spatial.shape == (2, 2, 2)
  assert (maps.spatial >= 0).all() and (maps.temporal >= 0).all()
  np.testing.assert_allclose(maps.spatial.sum(axis=(1, 2)), 1.0, rtol=1e-5)
  np.testing.assert_allclose(maps.temporal.sum(), 1.0, rtol=1e-5)


def test_models_3_and_4_are_refused_by_name(tmp_path, capsys):
  config = tiny_config(**{"model.attention_config": {"type": "factorized_self_attention_block"}})
  path = tmp_path / "config.json"
  path.write_text(config.to_json())
  assert visualize.main(["attention", f"--config={path}", "--checkpoint=/nowhere",
                         f"--output_dir={tmp_path}", "v.mp4"]) == 2
  assert capsys.readouterr().err.strip() == (
      "visualize attention: ValueError: attention maps are drawn for Models 1 and 2 "
      "(model.attention_config.type in ['spacetime', 'factorized_encoder']), not "
      "'factorized_self_attention_block'")


def test_cli_writes_grid_gif_and_maps_per_video(tmp_path):
  config = load("synthetic", "runlocal")  # the demo's model, random weights
  model = config_facts.model(config)
  params = meta.unbox(model.init(jax.random.PRNGKey(1), jnp.zeros((1, 8, 32, 32, 3)),
                                 train=False)["params"])
  checkpoints.save_params(params, str(tmp_path / "ckpt"))
  convert.write_mp4(tmp_path / "clip.mp4", convert.moving_pattern(30), fps=25)
  (tmp_path / "broken.mp4").write_text("not a video\n")
  out = subprocess.run(
      [sys.executable, "-m", "vivit_jax.tools.visualize", "attention",
       f"--config={train_procs.REPO}/configs/synthetic.py:runlocal",
       f"--checkpoint={tmp_path / 'ckpt'}", f"--output_dir={tmp_path / 'out'}", "--head=1",
       str(tmp_path / "clip.mp4"), str(tmp_path / "broken.mp4")],
      env=train_procs.worker_env(), capture_output=True, text=True, timeout=300)
  assert out.returncode == 1, out.stderr[-3000:]  # the broken file failed, the other went on
  assert f"{tmp_path / 'broken.mp4'}: cannot draw it: " in out.stderr
  o = tmp_path / "out"
  spatial, temporal = np.load(o / "clip_spatial.npy"), np.load(o / "clip_temporal.npy")
  assert spatial.shape == (4, 4, 4) and temporal.shape == (4,)  # 8 frames / 2, 32² / 8²
  np.testing.assert_allclose(spatial.sum(axis=(1, 2)), 1.0, rtol=1e-5)
  meta_json = json.loads((o / "clip_attention.json").read_text())
  assert meta_json["head"] == 1 and len(meta_json["top_k"]) == 5
  assert [f["token_frame"] for f in meta_json["frames"]] == [0, 0, 1, 1, 2, 2, 3, 3]
  with Image.open(o / "clip_attention.gif") as gif:
    assert gif.n_frames == 8 and gif.width == 2 * gif.height  # frame | overlay
  with Image.open(o / "clip_attention.png") as png:
    pixels = np.asarray(png.convert("RGB"))
  assert pixels.std() > 10  # a picture, not a blank canvas
  assert not list(o.glob("broken*"))


def test_a_fused_kernel_stays_the_training_path_and_sowing_takes_the_softmax():
  config = tiny_config(**{"model.attention_implementation": "cudnn"})
  with attention.emulated_kernels():  # cuDNN's padding and masking, run by XLA on the CPU
    model = config_facts.model(config)
    params = _params(model)
    with attention.record_paths() as fused:
      plain = model.apply({"params": params}, VIDEO, train=False, return_prelogits=True)
    with attention.record_paths() as sown:
      out, _ = model.apply({"params": params}, VIDEO, train=False, return_prelogits=True,
                           mutable=["intermediates"])
  assert [p.kernel for _, p in fused] == ["cudnn", "cudnn"]
  assert [p.kernel for _, p in sown] == ["explicit", "explicit"]
  np.testing.assert_allclose(out, plain, rtol=1e-5, atol=1e-6)
