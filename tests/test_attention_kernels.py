"""Fused attention paths: padding + masking of ViViT's token counts, on CPU.

'cudnn' runs under `emulated_kernels()` with its exact padded, length-masked call handed to
XLA; 'splash' runs the real Pallas TPU kernel in interpret mode. Both must equal the plain
XLA attention (forward and gradients) on every variant at the real token counts: 3137
(Model 1), 197 and 17 (Model 2), 16 and 196 (Models 3 and 4).
"""
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from tests.test_models import tiny_config
from vivit_jax import models, sharding
from vivit_jax.models import attention

# 32 frames of 56×56 in 4×4×2 tubelets: t = 16 frames of n = 14·14 = 196 patches, as
# ViViT-B/16x2 on 32×224×224; widths are small (head_dim 64, one or two heads, one layer).
VIDEO_SHAPE = (1, 32, 56, 56, 3)
TOKENS = {
    "spacetime": [3137],
    "factorized_encoder": [197, 17],
    "factorized_self_attention_block": [16, 196],
    "factorized_dot_product_attention": [16, 196],
}


def _config(kind, implementation):
  heads = 2 if kind == "factorized_dot_product_attention" else 1
  extra = dict(hidden_size=64 * heads, patches={"size": (4, 4, 2)}, num_heads=heads,
               num_layers=1, mlp_dim=32, attention_implementation=implementation)
  if kind == "factorized_encoder":
    small = dict(num_layers=1, mlp_dim=32, num_heads=1)
    extra.update(spatial_transformer=small, temporal_transformer=small)
  classifier = "token" if kind in ("spacetime", "factorized_encoder") else "gap"
  return tiny_config(kind, classifier, **extra,
                     attention_config={"type": kind, "attention_order": "time_space"})


def _loss_and_grads(model, params, video):
  loss = lambda p: jnp.sum(model.apply({"params": p}, video, train=False) ** 2)  # noqa: E731
  return jax.jit(jax.value_and_grad(loss))(params)


def _video():
  return np.random.default_rng(1).uniform(-1, 1, VIDEO_SHAPE).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _xla_reference(kind):
  """(params, loss, grads) of the plain XLA model: noise parameters (shapes from eval_shape,
  so no eager init) with nothing zero-initialised to hide a bug."""
  model = models.build_model(_config(kind, "xla"), 5)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), _video(), train=False))
  leaves, treedef = jax.tree.flatten(flax.core.meta.unbox(shapes["params"]))
  rng = np.random.default_rng(0)
  params = jax.tree.unflatten(
      treedef, [rng.normal(0, 0.3, l.shape).astype(np.float32) for l in leaves])
  return (params, *_loss_and_grads(model, params, _video()))


@pytest.mark.parametrize("implementation", ["cudnn", "splash"])
@pytest.mark.parametrize("kind", models.ATTENTION_TYPES)
def test_fused_path_equals_xla_on_every_variant(kind, implementation):
  params, ref_loss, ref_grads = _xla_reference(kind)
  with attention.emulated_kernels():
    fused = models.build_model(_config(kind, implementation), 5)
    with attention.record_paths() as paths:
      loss, grads = _loss_and_grads(fused, params, _video())

  # The fused kernel really ran, on the padded real token counts.
  expected = [(implementation, n, attention.padded_length(implementation, n))
              for n in TOKENS[kind]]
  assert sorted((p.kernel, p.tokens, p.padded) for _, p in paths) == sorted(expected)
  assert all(p.padded > p.tokens for _, p in paths)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4),
               grads, ref_grads)


@pytest.mark.parametrize("implementation", ["explicit", "heads_major"])
@pytest.mark.parametrize("kind", models.ATTENTION_TYPES)
def test_unpadded_paths_equal_xla_on_every_variant(kind, implementation):
  """'explicit' (einsum, float32 softmax, einsum: the plain baseline of
  benchmarks/train_step.py) and 'heads_major' (CPU's 'auto' from 32 tokens on) run every
  attention of the model, unpadded, and equal XLA's, forward and gradients."""
  params, ref_loss, ref_grads = _xla_reference(kind)
  model = models.build_model(_config(kind, implementation), 5)
  with attention.record_paths() as paths:
    loss, grads = _loss_and_grads(model, params, _video())
  assert sorted((p.kernel, p.tokens, p.padded) for _, p in paths) == sorted(
      (implementation, n, n) for n in TOKENS[kind])
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4),
               grads, ref_grads)


@pytest.mark.parametrize("implementation", ["cudnn", "splash"])
@pytest.mark.parametrize("tokens", [197, 17])
def test_padding_is_masked(tokens, implementation):
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(2, tokens, 2, 64)), jnp.float32) for _ in range(3))
  ref = jax.nn.dot_product_attention(q, k, v, implementation="xla")
  with attention.emulated_kernels():
    out = attention.dot_product_attention(q, k, v, implementation=implementation)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  # Without the mask the zero-padded keys take weight: the test above can fail.
  padded = attention.padded_length(implementation, tokens)
  unmasked = attention.padded_attention(
      q, k, v, padded, lambda q, k, v, _: jax.nn.dot_product_attention(q, k, v))
  assert np.abs(np.asarray(unmasked - ref)).max() > 1e-2


def test_splash_on_a_sharded_mesh_equals_xla():
  """Inside a (data, fsdp, tensor) mesh the kernel runs per device slice (shard_map)."""
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(4, 197, 2, 64)), jnp.float32) for _ in range(3))
  mesh = Mesh(np.asarray(jax.devices()[:8]).reshape(2, 2, 2), sharding.MESH_AXES)
  rules = sharding.logical_rules()
  loss = lambda impl: jax.jit(jax.value_and_grad(  # noqa: E731
      lambda q: jnp.sum(attention.dot_product_attention(q, k, v, implementation=impl) ** 2)))
  ref_loss, ref_grad = loss("xla")(q)
  with attention.emulated_kernels(), jax.set_mesh(mesh), flax.linen.logical_axis_rules(rules):
    assert attention._kernel_spec(4, 2) == jax.sharding.PartitionSpec(
        ("data", "fsdp"), "tensor", None, None)
    out_loss, out_grad = loss("splash")(q)
  np.testing.assert_allclose(out_loss, ref_loss, rtol=1e-5)
  np.testing.assert_allclose(out_grad, ref_grad, atol=1e-4)


def test_splash_block_sizes_for_vivit_token_counts():
  assert attention.splash_blocks(3137) == (3584, 512)
  assert attention.splash_blocks(197) == (256, 256)
  assert attention.splash_blocks(196) == (256, 256)
  assert attention.splash_blocks(17) == (128, 128)
  assert attention.splash_blocks(16) == (128, 128)
  assert attention.padded_length("cudnn", 3137) == 3200
  assert attention.padded_length("cudnn", 197) == 256
  assert attention.padded_length("xla", 197) == 197


@pytest.mark.parametrize("platform,dtype,tokens,kernel", [
    ("tpu", jnp.bfloat16, 3137, "splash"),
    ("tpu", jnp.float32, 197, "splash"),
    ("tpu", jnp.bfloat16, 17, "xla"),      # short temporal attention: padding costs more
    ("gpu", jnp.bfloat16, 3137, "cudnn"),
    ("gpu", jnp.float16, 197, "cudnn"),
    ("gpu", jnp.float32, 3137, "xla"),     # cuDNN flash takes half precision only
    ("gpu", jnp.bfloat16, 16, "xla"),
    ("cpu", jnp.bfloat16, 3137, "heads_major"),
    ("cpu", jnp.float32, 49, "heads_major"),
    ("cpu", jnp.float32, 17, "xla"),       # temporal attention: XLA is faster there
])
@pytest.mark.parametrize("implementation", [None, "auto"])
def test_auto_picks_the_platforms_kernel(implementation, platform, dtype, tokens, kernel):
  q = jax.ShapeDtypeStruct((2, tokens, 12, 64), dtype)
  path = attention.choose_path(implementation, q, platform=platform)
  assert path.kernel == kernel
  assert path.padded == attention.padded_length(kernel, tokens)
  # Attention dropout in training keeps the explicit softmax whatever was asked.
  assert attention.choose_path("splash", q, dropout=True, platform=platform).kernel == "explicit"


def test_unavailable_kernels_fail_with_one_line():
  cases = [
      (dict(value="cudnn", platform="cpu"), "needs a GPU; this machine's jax platform is 'cpu'"),
      (dict(value="cudnn", dtype="float32", platform="gpu"),
       "takes model_dtype_str in ['bfloat16', 'float16'], not 'float32'"),
      (dict(value="splash", platform="gpu"), "needs a TPU"),
      (dict(value="flash"), "valid: [None, 'auto', 'xla', 'cudnn', 'splash', 'explicit', 'heads_major']"),
  ]
  for kwargs, message in cases:
    with pytest.raises(ValueError) as e:
      attention.check_implementation(**kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)
  # The model checks it when it is built (config_check builds the model too).
  with pytest.raises(ValueError, match="model.attention_implementation='cudnn' needs a GPU"):
    models.build_model(tiny_config("spacetime", attention_implementation="cudnn"), 5)
  attention.check_implementation("splash", "bfloat16", platform="tpu")
  attention.check_implementation("auto", "float32", platform="cpu")


def test_each_choice_is_logged_once(caplog, monkeypatch):
  monkeypatch.setattr(attention, "_LOGGED", set())  # another test may have logged this choice
  q = jnp.zeros((1, 33, 1, 8))
  caplog.set_level("INFO")
  for _ in range(3):
    jax.eval_shape(lambda q: attention.dot_product_attention(q, q, q, implementation="auto"), q)
  lines = [r.getMessage() for r in caplog.records
           if "attention_implementation" in r.getMessage()]
  assert lines == ["attention_implementation='auto' → heads_major: 33 tokens (auto: batched "
                   "matmuls on CPU)"]


def _relative_error(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


@pytest.mark.skipif(jax.default_backend() != "gpu",
                    reason="the real cuDNN kernel needs an NVIDIA GPU (run with JAX_PLATFORMS=cuda)")
@pytest.mark.parametrize("kind", models.ATTENTION_TYPES)
def test_cudnn_on_gpu_equals_xla_in_bfloat16(kind):
  """The real kernel (not emulated) on the real token counts, against XLA in the same dtype."""
  params, _, _ = _xla_reference(kind)
  results = {}
  for implementation in ("xla", "cudnn"):
    config = _config(kind, implementation)
    model = models.build_model(config, 5, dtype="bfloat16")
    with attention.record_paths() as paths:
      results[implementation] = _loss_and_grads(model, params, _video())
    kernels = {p.kernel for _, p in paths}
    assert kernels == {implementation}, (implementation, kernels)
  (ref_loss, ref_grads), (loss, grads) = results["xla"], results["cudnn"]
  assert _relative_error(loss, ref_loss) < 2e-2
  errors = jax.tree.leaves(jax.tree.map(_relative_error, grads, ref_grads))
  assert max(errors) < 5e-2, errors
