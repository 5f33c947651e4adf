"""ViViT models: Scenic parity, every variant against a NumPy reference, the paper's sizes."""
import json

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import serialization, traverse_util

from tests import numpy_vivit
from vivit_jax import models
from vivit_jax.models import embed
from vivit_jax.models.remat import model_activation_bytes

SCENIC_CASES = ["spacetime_token", "factorized_encoder_token",
                "spacetime_token_legacy_optimizer_layout"]


def _scenic_case(scenic_ref, name):
  case = scenic_ref / "vivit" / name
  config = ml_collections.ConfigDict(json.loads((case / "config.json").read_text()))
  state = serialization.msgpack_restore((case / "checkpoint_2").read_bytes())
  params = state["params"] if "params" in state else state["optimizer"]["target"]
  ref = np.load(scenic_ref / "vivit" / name.replace("_legacy_optimizer_layout", "") /
                "reference.npz")
  return config, params, ref


@pytest.mark.parametrize("name", SCENIC_CASES)
def test_logits_match_scenic(scenic_ref, name):
  config, params, ref = _scenic_case(scenic_ref, name)
  model = models.build_model(config.model, config.dataset_configs.num_classes)
  logits = model.apply({"params": params}, ref["inputs"], train=False)
  np.testing.assert_allclose(logits, ref["logits"], atol=1e-5, rtol=0)
  prelogits = model.apply({"params": params}, ref["inputs"], train=False, return_prelogits=True)
  np.testing.assert_allclose(prelogits, ref["prelogits"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", SCENIC_CASES[:2])
def test_param_tree_is_scenics(scenic_ref, name):
  config, _, ref = _scenic_case(scenic_ref, name)
  model = models.build_model(config.model, config.dataset_configs.num_classes)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ref["inputs"], train=False))
  ours = {k: tuple(v.shape) for k, v in
          traverse_util.flatten_dict(flax.core.meta.unbox(shapes["params"]), sep="/").items()}
  theirs = {}
  for line in (scenic_ref / "vivit" / name / "param_tree.txt").read_text().splitlines():
    path, shape, _ = line.split("\t")
    theirs[path] = tuple(json.loads(shape.replace("(", "[").replace(",)", ")").replace(")", "]")))
  assert ours == theirs


def tiny_config(kind, classifier="gap", method="3d_conv", **extra):
  c = ml_collections.ConfigDict()
  c.hidden_size = 16
  c.patches = ml_collections.ConfigDict({"size": (4, 4, 2)})
  c.temporal_encoding_config = ml_collections.ConfigDict(
      {"method": method, "kernel_init_method": None, "n_sampled_frames": 4})
  c.attention_config = ml_collections.ConfigDict({"type": kind})
  c.classifier = classifier
  c.representation_size = None
  c.dropout_rate = 0.0
  c.attention_dropout_rate = 0.0
  c.stochastic_droplayer_rate = 0.0
  if kind == "factorized_encoder":
    c.spatial_transformer = ml_collections.ConfigDict(dict(num_layers=2, mlp_dim=24, num_heads=4))
    c.temporal_transformer = ml_collections.ConfigDict(dict(num_layers=1, mlp_dim=24, num_heads=2))
  else:
    c.num_layers, c.mlp_dim, c.num_heads = 2, 24, 4
  c.update(extra)
  return c


def _random_params(model, video, seed=0):
  """Init, then replace every leaf by noise so no zero-initialised weight hides a bug."""
  params = flax.core.meta.unbox(model.init(jax.random.PRNGKey(seed), video, train=False)["params"])
  leaves, treedef = jax.tree.flatten(params)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(
      treedef, [rng.normal(0, 0.3, l.shape).astype(np.float32) for l in leaves])


VARIANTS = [
    ("spacetime", "token", "3d_conv", {}),
    ("spacetime", "gap", "temporal_sampling", {}),
    ("spacetime", "0", "3d_conv", {"representation_size": 8}),
    ("factorized_encoder", "token", "3d_conv", {}),
    ("factorized_encoder", "gmp", "temporal_sampling", {}),
    ("factorized_encoder", "gap", "3d_conv", {"attention_config": {
        "type": "factorized_encoder", "spatial_only_baseline": True}}),
    ("factorized_self_attention_block", "gap", "3d_conv", {"attention_config": {
        "type": "factorized_self_attention_block", "attention_order": "time_space"}}),
    ("factorized_self_attention_block", "gsp", "3d_conv", {"attention_config": {
        "type": "factorized_self_attention_block", "attention_order": "space_time"}}),
    ("factorized_dot_product_attention", "gap", "3d_conv", {}),
    ("factorized_dot_product_attention", "gmp", "temporal_sampling", {}),
]


@pytest.mark.parametrize("kind,classifier,method,extra", VARIANTS)
def test_variant_matches_numpy_reference(kind, classifier, method, extra):
  config = tiny_config(kind, classifier, method, **extra)
  model = models.build_model(config, num_classes=5)
  video = np.random.default_rng(1).uniform(-1, 1, (2, 8, 16, 12, 3)).astype(np.float32)
  params = _random_params(model, video)
  ours = model.apply({"params": params}, video, train=False)
  ref = numpy_vivit.forward(jax.tree.map(np.asarray, params), video, config)
  assert ours.shape == (2, 5)
  np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=2e-4)


def _names(kind, classifier="gap", **extra):
  model = models.build_model(tiny_config(kind, classifier, **extra), 5)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 16, 16, 3)),
                                             train=False))
  return set(traverse_util.flatten_dict(flax.core.meta.unbox(shapes["params"]), sep="/"))


def test_model3_and_model4_parameter_names():
  m3 = _names("factorized_self_attention_block",
              attention_config={"type": "factorized_self_attention_block"})
  block = {n.split("/")[2] for n in m3 if n.startswith("Transformer/encoderblock_0/")}
  assert block == {"LayerNorm_time", "MultiHeadDotProductAttention_time", "LayerNorm_space",
                   "MultiHeadDotProductAttention_space", "LayerNorm_mlp", "MlpBlock"}
  m4 = _names("factorized_dot_product_attention")
  m1 = _names("spacetime", "token")
  assert m4 == m1 - {"cls"}
  m2 = _names("factorized_encoder", "token")
  assert {"cls_SpatialTransformer", "cls_TemporalTransformer"} <= m2
  assert {n.split("/")[0] for n in m2} == {"cls_SpatialTransformer", "cls_TemporalTransformer",
                                           "SpatialTransformer", "TemporalTransformer",
                                           "embedding", "output_projection"}


def test_every_parameter_has_logical_axes():
  model = models.build_model(tiny_config("spacetime", "token", representation_size=8), 5)
  boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 16, 16, 3)),
                                            train=False))["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, flax.linen.LogicallyPartitioned))
  assert leaves and all(isinstance(l, flax.linen.LogicallyPartitioned) for l in leaves)
  assert all(len(l.names) == l.value.ndim for l in leaves)
  specs = flax.traverse_util.flatten_dict(flax.linen.get_partition_spec(boxed), sep="/")
  assert tuple(specs["Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"]) == ("embed", "mlp")
  assert tuple(specs["Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"]) \
      == ("embed", "heads", "head_dim")
  assert tuple(specs["output_projection/kernel"]) == ("embed", "classes")


def test_unknown_attention_type_lists_valid_ones():
  with pytest.raises(ValueError, match="factorized_dot_product_attention") as e:
    models.build_model(tiny_config("joint_space_time"), 5)
  assert "joint_space_time" in str(e.value) and "spacetime" in str(e.value)


@pytest.mark.parametrize("kind", ["factorized_self_attention_block",
                                  "factorized_dot_product_attention"])
def test_token_classifier_rejected_for_models_3_and_4(kind):
  with pytest.raises(ValueError, match="no CLS token"):
    models.build_model(tiny_config(kind, "token"), 5)


def test_bad_values_name_the_field():
  with pytest.raises(ValueError, match="model.classifier='cls'"):
    models.build_model(tiny_config("spacetime", "cls"), 5)
  with pytest.raises(ValueError, match="model.attention_implementation"):
    models.build_model(tiny_config("spacetime", attention_implementation="flash"), 5)
  with pytest.raises(ValueError, match="model_dtype_str"):
    models.build_model(tiny_config("spacetime"), 5, dtype="float8")
  model = models.build_model(tiny_config("factorized_dot_product_attention", num_heads=3,
                                         hidden_size=18), 5)
  with pytest.raises(ValueError, match="num_heads=3 must be even"):
    model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 16, 16, 3)), train=False)


def test_tubelet_initializers_act_on_time():
  shape = (3, 4, 4, 3, 8)
  central = np.asarray(embed.central_frame_initializer()(jax.random.PRNGKey(0), shape))
  assert np.all(central[0] == 0) and np.all(central[2] == 0) and np.any(central[1] != 0)
  average = np.asarray(embed.average_frame_initializer()(jax.random.PRNGKey(0), shape))
  np.testing.assert_array_equal(average[0], average[1])
  np.testing.assert_array_equal(average[0], average[2])
  assert np.std(average) > 0


@pytest.mark.parametrize("t,n", [(32, 8), (16, 2), (8, 4), (4, 8), (30, 7)])
def test_uniform_frame_sampling_is_scenics(t, n):
  if n >= t:
    expected = np.arange(t)
  else:  # Scenic: jnp.arange(t/(n+1), t, t/(n+1)), rounded, clipped
    expected = np.minimum(np.round(np.arange(t / (n + 1), t, t / (n + 1))), t - 1)
  np.testing.assert_array_equal(embed.uniform_frame_indices(t, n), expected)


def _drop_path_model3(rate):
  return models.build_model(tiny_config(
      "factorized_self_attention_block", stochastic_droplayer_rate=rate,
      attention_config={"type": "factorized_self_attention_block"}), 5)


def test_stochastic_depth_in_model3():
  video = np.random.default_rng(0).normal(size=(4, 8, 16, 16, 3)).astype(np.float32)
  model = _drop_path_model3(1.0)  # layer 1 of 2 is always dropped in training
  params = _random_params(model, video)
  changed = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 5.0 if "encoderblock_1" in jax.tree_util.keystr(path) else x, params)
  run = lambda p, m=model: m.apply({"params": p}, video, train=True,
                                   rngs={"dropout": jax.random.PRNGKey(3)})
  np.testing.assert_allclose(run(params), run(changed), atol=1e-5)
  # At evaluation every layer runs, so the change shows.
  assert not np.allclose(model.apply({"params": params}, video, train=False),
                         model.apply({"params": changed}, video, train=False), atol=1e-3)
  # With rate 0, training is deterministic (dropout is 0 here): only drop-path adds randomness.
  still = _drop_path_model3(0.0)
  a = still.apply({"params": params}, video, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
  b = still.apply({"params": params}, video, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
  np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", models.ATTENTION_TYPES)
def test_dropout_and_drop_path_are_active_in_training(kind):
  extra = {"attention_config": {"type": kind}}
  config = tiny_config(kind, dropout_rate=0.1, attention_dropout_rate=0.1,
                       stochastic_droplayer_rate=0.5, **extra)
  model = models.build_model(config, 5)
  video = np.random.default_rng(0).normal(size=(2, 8, 16, 16, 3)).astype(np.float32)
  params = _random_params(model, video)
  run = lambda seed: model.apply({"params": params}, video, train=True,
                                 rngs={"dropout": jax.random.PRNGKey(seed)})
  assert not np.allclose(run(0), run(1))
  e1 = model.apply({"params": params}, video, train=False)
  np.testing.assert_array_equal(e1, model.apply({"params": params}, video, train=False))


def test_bfloat16_activations_stay_close_and_params_float32():
  config = tiny_config("factorized_encoder", "token")
  video = np.random.default_rng(0).uniform(-1, 1, (2, 8, 16, 16, 3)).astype(np.float32)
  f32 = models.build_model(config, 5)
  bf16 = models.build_model(config, 5, dtype="bfloat16")
  params = _random_params(f32, video)
  boxed = jax.eval_shape(lambda: bf16.init(jax.random.PRNGKey(0), video, train=False))
  assert {l.dtype for l in jax.tree.leaves(flax.core.meta.unbox(boxed))} == {np.dtype("float32")}
  out32 = f32.apply({"params": params}, video, train=False)
  out16 = bf16.apply({"params": params}, video, train=False)
  assert out16.dtype == jnp.float32  # the head runs in float32
  scale = float(jnp.abs(out32).max())
  np.testing.assert_allclose(out16, out32, atol=0.05 * scale)
  assert not np.array_equal(out16, out32)  # bf16 really was used


def _saved_bytes(remat):
  config = tiny_config("spacetime", "token", remat=remat, num_layers=4, hidden_size=64, mlp_dim=256)
  model = models.build_model(config, 5)
  video = jnp.zeros((8, 8, 32, 32, 3))
  params = flax.core.meta.unbox(jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), video, train=False))["params"])
  return model_activation_bytes(model, params, video)


@pytest.mark.parametrize("policy", ["full", "dots_saveable", True])
def test_remat_lowers_temp_memory_and_keeps_gradients(policy):
  plain, remat = _saved_bytes("none"), _saved_bytes(policy)
  # 4 blocks, 8 clips of 257 tokens: 147 MB kept without remat; 5 MB ('full'), 58 MB ('dots').
  assert remat < 0.5 * plain, (policy, remat, plain)
  config = tiny_config("spacetime", "token")
  video = np.random.default_rng(0).normal(size=(2, 8, 16, 16, 3)).astype(np.float32)
  m0 = models.build_model(config, 5)
  m1 = models.build_model(tiny_config("spacetime", "token", remat=policy), 5)
  params = _random_params(m0, video)
  g0 = jax.grad(lambda p: m0.apply({"params": p}, video, train=False).sum())(params)
  g1 = jax.grad(lambda p: m1.apply({"params": p}, video, train=False).sum())(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), g0, g1)


def test_remat_full_keeps_less_than_dots_saveable():
  full, dots = _saved_bytes("full"), _saved_bytes("dots_saveable")
  assert full < 0.2 * dots, (full, dots)


def test_remat_policy_named_in_error():
  with pytest.raises(ValueError, match=r"model.remat='dots'; valid: \['none', 'full'"):
    models.build_model(tiny_config("spacetime", "token", remat="dots"), 5)


def test_attention_implementation_xla_equals_default():
  video = np.random.default_rng(0).normal(size=(2, 8, 16, 16, 3)).astype(np.float32)
  m0 = models.build_model(tiny_config("spacetime", "token"), 5)
  m1 = models.build_model(tiny_config("spacetime", "token", attention_implementation="xla"), 5)
  params = _random_params(m0, video)
  np.testing.assert_allclose(m0.apply({"params": params}, video, train=False),
                             m1.apply({"params": params}, video, train=False), atol=1e-6)


def test_epic_kitchens_multihead_split():
  model = models.build_model(tiny_config("factorized_encoder", "token"), 300 + 97)
  video = jnp.zeros((2, 8, 16, 16, 3))
  params = _random_params(model, video)
  assert params["output_projection"]["kernel"].shape == (16, 397)
  logits = model.apply({"params": params}, video, train=False)
  heads = models.split_logits(logits, [300, 97], ["noun", "verb"])
  assert list(heads) == ["noun", "verb"]
  assert heads["noun"].shape == (2, 300) and heads["verb"].shape == (2, 97)
  np.testing.assert_array_equal(heads["verb"], logits[:, 300:])
  with pytest.raises(ValueError, match="sum to 400"):
    models.split_logits(logits, [300, 100])


def test_output_projection_is_zero_initialised():
  model = models.build_model(tiny_config("spacetime", "token"), 5)
  params = flax.core.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 16, 16, 3)),
                                           train=False)["params"])
  assert not np.any(params["output_projection"]["kernel"])


def test_sharded_apply_equals_single_device():
  """Activation constraints and parameter names drive a (data, fsdp, tensor) mesh."""
  from jax.sharding import Mesh, NamedSharding
  devices = np.array(jax.devices()[:8]).reshape(2, 2, 2)
  mesh = Mesh(devices, ("data", "fsdp", "tensor"))
  rules = (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "tensor"),
           ("heads", "tensor"), ("act_mlp", "tensor"), ("act_heads", "tensor"))
  model = models.build_model(tiny_config("spacetime", "token"), 5)
  video = np.random.default_rng(0).normal(size=(4, 8, 16, 16, 3)).astype(np.float32)
  boxed = model.init(jax.random.PRNGKey(0), video, train=False)["params"]
  expected = model.apply({"params": boxed}, video, train=False)
  shardings = flax.linen.logical_to_mesh_sharding(flax.linen.get_partition_spec(boxed), mesh, rules)
  params = jax.device_put(flax.core.meta.unbox(boxed), shardings)
  k = params["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"]
  assert isinstance(k.sharding, NamedSharding) and tuple(k.sharding.spec) == ("fsdp", "tensor")

  @jax.jit
  def apply(p, v):
    with flax.linen.logical_axis_rules(rules):
      return model.apply({"params": p}, v, train=False)
  with mesh:
    out = apply(params, video)
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_uniform_frame_sampling_inside_jit():
  # The trainer traces the model under jax.jit: the sampled indices must still be concrete.
  frames = jax.jit(lambda v: v[embed.uniform_frame_indices(16, 8)])(jnp.arange(16.0))
  np.testing.assert_array_equal(frames, [2, 4, 5, 7, 9, 11, 12, 14])
