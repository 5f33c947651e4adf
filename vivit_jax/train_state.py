"""The train state and its layout: shapes, the mesh that fits it, shardings, creation in place.

The state is a plain dict {'params', 'opt_state', 'step'}; its shapes come from `jax.eval_shape`
(nothing allocated), its shardings from the model's logical axes (`sharding.py`), and it is
born sharded (`jax.jit(init, out_shardings=...)`). Used by the trainer and by `--dry_run`.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.core import meta

from vivit_jax import config_facts, sharding


def local_batch_size(global_size: int, mesh: jax.sharding.Mesh, name: str) -> int:
  """This host's share of a global batch; the batch must split evenly over the data axes."""
  if global_size % jax.process_count() or global_size % sharding.data_parallel_size(mesh):
    raise ValueError(
        f"config.{name}={global_size} must be divisible by the number of processes "
        f"({jax.process_count()}) and by the data-parallel mesh size "
        f"({sharding.data_parallel_size(mesh)} = data x fsdp)")
  return global_size // jax.process_count()


def abstract_train_state(model: nn.Module, tx: optax.GradientTransformation, input_shape):
  """Shapes of the train state, allocating nothing.

  Returns:
    (abstract_state, boxed_abstract_params): the boxed params carry the logical axis names.
  """
  boxed = jax.eval_shape(config_facts.init_fn(model, input_shape), jax.random.PRNGKey(0))
  params = meta.unbox(boxed)
  return {"params": params, "opt_state": jax.eval_shape(tx.init, params),
          "step": jax.ShapeDtypeStruct((), jnp.int32)}, boxed


def state_shardings(abstract_state, boxed, mesh, rules) -> dict:
  """Shardings of the train state: params by their logical axes, optimizer state like them."""
  param_sh = sharding.param_shardings(boxed, mesh, rules)
  return {
      "params": param_sh,
      "opt_state": sharding.opt_state_shardings(abstract_state["opt_state"],
                                                abstract_state["params"], param_sh, mesh),
      "step": sharding.replicated(mesh),
  }


def make_run_mesh(config: ml_collections.ConfigDict, abstract_state, devices=None
                  ) -> tuple[jax.sharding.Mesh, str]:
  """`config.mesh`, or when it is unset `sharding.default_mesh`'s rule for this train state.

  Returns:
    (mesh, where its shape came from in words)
  """
  if config.get("mesh"):
    return sharding.make_mesh(config.mesh, devices), "config.mesh"
  devices = list(jax.devices() if devices is None else devices)
  mesh_config, reason = sharding.default_mesh(
      replicated_state_bytes(abstract_state), sharding.device_memory_bytes(devices[0]),
      len(devices), len({d.process_index for d in devices}))
  return sharding.make_mesh(mesh_config, devices), reason


def replicated_state_bytes(abstract_state) -> int:
  """Bytes one device holds for the step when nothing is sharded: parameters, their
  gradients (a second copy during the step) and the optimizer state."""
  nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))  # noqa: E731
  return 2 * nbytes(abstract_state["params"]) + nbytes(abstract_state["opt_state"])


def create_state(model: nn.Module, tx: optax.GradientTransformation, input_shape, rng,
                 mesh, rules, *, abstract=None):
  """The train state born sharded on its devices, and its shardings: `(state, shardings)`.

  `abstract` is `abstract_train_state(...)` when the caller has it already (saves a trace).
  """
  abstract_state, boxed = abstract or abstract_train_state(model, tx, input_shape)
  shardings = state_shardings(abstract_state, boxed, mesh, rules)
  init_params = config_facts.init_fn(model, input_shape)

  def init_state(rng):
    params = meta.unbox(init_params(rng))
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}

  return jax.jit(init_state, out_shardings=shardings)(rng), shardings


def fresh_state_from_params(params, tx, shardings):
  """A state at step 0 around given (e.g. pretrained) params, laid out as `shardings`."""
  params = jax.device_put(params, shardings["params"])
  return jax.jit(
      lambda p: {"params": p, "opt_state": tx.init(p), "step": jnp.zeros((), jnp.int32)},
      out_shardings=shardings, donate_argnums=0)(params)
