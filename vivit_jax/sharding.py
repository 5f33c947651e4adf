"""Device mesh, logical-axis rules and global batch assembly.

The model names its axes (`vivit_jax.models.partitioning`); this module maps those names to
the axes of a device mesh built from the config:

  config.mesh = (('data', -1), ('fsdp', 1), ('tensor', 1))   # -1: all remaining devices
  config.mesh = None                                         # `default_mesh`'s rule
  config.sharding_rules = (('embed', 'fsdp'), ...)           # optional, replaces the defaults

With the defaults, `data` and `fsdp` split the batch, `fsdp` additionally splits every
parameter along its `embed` axis (ZeRO-3 style) and `tensor` splits MLP hiddens and
attention heads (Megatron style). One device gives a 1x1x1 mesh and the same code path.
"""
import collections
from typing import Any, Iterable, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
from jax.experimental import mesh_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
DEFAULT_MESH = (("data", -1), ("fsdp", 1), ("tensor", 1))
# The default rule (`default_mesh`, used when `config.mesh` is unset) keeps the train state
# replicated while it takes at most this share of one device's memory; the rest is left to
# activations (ViViT-L's 3137-token Model 1 needs tens of GB of them at batch 8).
REPLICATED_STATE_SHARE = 0.1
# Batch axes of activations and inputs: split over every data-parallel mesh axis.
BATCH_AXES = ("data", "fsdp")

DEFAULT_RULES = (
    # Parameters.
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("head_dim", None),
    ("classes", None),
    # Activations.
    ("batch", BATCH_AXES),
    ("length", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
)


def mesh_shape(mesh_config: Sequence[tuple[str, int]] | None,
               num_devices: int | None = None) -> tuple[int, ...]:
  """Checks `config.mesh` and returns the sizes of `MESH_AXES` for `num_devices`.

  Without `num_devices` only the form is checked (names, sizes, at most one -1), and a -1
  axis is returned as -1: the config checker calls this before any device exists.
  """
  try:
    mesh_config = tuple((name, size) for name, size in (mesh_config or DEFAULT_MESH))
  except (TypeError, ValueError):
    raise ValueError(f"config.mesh={mesh_config!r}: must be pairs (axis_name, size), e.g. "
                     "(('data', -1), ('fsdp', 1))") from None
  names = [name for name, _ in mesh_config]
  for name in names:
    if name not in MESH_AXES:
      raise ValueError(f"config.mesh={mesh_config}: unknown axis {name!r}; valid axes: "
                       f"{list(MESH_AXES)}")
  if len(set(names)) != len(names):
    raise ValueError(f"config.mesh={mesh_config}: an axis is named twice")
  sizes = dict(mesh_config)
  for name in MESH_AXES:
    sizes.setdefault(name, 1)
  free = [n for n, s in sizes.items() if s == -1]
  if len(free) > 1 or any(isinstance(s, bool) or not isinstance(s, int) or s == 0 or s < -1
                          for s in sizes.values()):
    raise ValueError(f"config.mesh={mesh_config}: sizes must be positive integers, with at "
                     "most one size -1")
  if num_devices is None:
    return tuple(sizes[n] for n in MESH_AXES)
  fixed = int(np.prod([s for s in sizes.values() if s != -1]))
  if free:
    if num_devices % fixed:
      raise ValueError(f"config.mesh={mesh_config}: {num_devices} devices are not divisible "
                       f"by the fixed axes' product {fixed}")
    sizes[free[0]] = num_devices // fixed
  shape = tuple(sizes[n] for n in MESH_AXES)
  if int(np.prod(shape)) != num_devices:
    raise ValueError(f"config.mesh={mesh_config} needs {int(np.prod(shape))} devices; "
                     f"{num_devices} are available (use -1 for one axis to fill them)")
  return shape


def make_mesh(mesh_config: Sequence[tuple[str, int]] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over `devices` (default: all devices of all processes).

  Args:
    mesh_config: `((axis_name, size), ...)`; one size may be -1 (all remaining devices).
      Axis names must come from `MESH_AXES`; missing ones get size 1.
    devices: the devices to use (tests pass a subset).

  Raises:
    ValueError: naming `config.mesh` when the names or sizes do not fit the device count.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  hosts = len({d.process_index for d in devices})
  if hosts > 1 and shape == (hosts, len(devices) // hosts, 1) and shape[1] > 1:
    # FSDP within each host, data across hosts (`default_mesh`): one host's devices per row.
    device_array = mesh_utils.create_hybrid_device_mesh(
        (1, shape[1], 1), (hosts, 1, 1), devices, process_is_granule=True)
  elif len(devices) == len(jax.devices()):
    # Lays the axes out along the physical topology (ICI rings on TPU; host-major across hosts).
    device_array = mesh_utils.create_device_mesh(shape, devices)
  else:
    device_array = np.asarray(devices).reshape(shape)
  return Mesh(device_array, MESH_AXES)


def default_mesh(state_bytes: int, device_bytes: int | None, num_devices: int,
                 num_processes: int = 1) -> tuple[tuple, str]:
  """The mesh for an unset `config.mesh`: data parallel across hosts, and FSDP across the
  chips of each host when the train state does not fit replicated.

  Args:
    state_bytes: parameters + optimizer state + gradients, unsharded.
    device_bytes: one device's memory (None: unknown, e.g. CPU).
    num_devices, num_processes: of the whole job.

  Returns:
    (mesh config for `make_mesh`, the reason in words).
  """
  budget = None if device_bytes is None else REPLICATED_STATE_SHARE * device_bytes
  state = f"params + gradients + optimizer state {format_bytes(state_bytes)}"
  if budget is None:
    return DEFAULT_MESH, f"{state}, device memory unknown: replicated, data parallel"
  share = f"{REPLICATED_STATE_SHARE:.0%} of {format_bytes(device_bytes)} per device"
  if state_bytes <= budget:
    return DEFAULT_MESH, f"{state} <= {share}: replicated, data parallel"
  chips = num_devices // num_processes
  return ((("data", num_processes), ("fsdp", chips), ("tensor", 1)),
          f"{state} > {share}: FSDP over each host's {chips} devices, data parallel across "
          f"{num_processes} host(s)")


def format_bytes(n: float | None) -> str:
  """`1.50 GiB`, `320.0 MiB`, ...; 'unknown' for None."""
  if n is None:
    return "unknown"
  for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
    if abs(n) >= size:
      return f"{n / size:.2f} {unit}"
  return f"{int(n)} B"


def device_memory_bytes(device: jax.Device) -> int | None:
  """Memory of one accelerator (its allocator's limit); None where jax does not say (CPU)."""
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


def logical_rules(config_rules: Iterable[Sequence[Any]] | None = None) -> tuple:
  """The logical-axis → mesh-axis rules: `config.sharding_rules` if given, else the defaults.

  Rules for names the config leaves out fall back to the defaults, so a config only lists
  what it changes (e.g. `(('embed', None),)` turns FSDP off while keeping the batch split).
  """
  overrides = {}
  for rule in config_rules or ():
    if len(rule) != 2:
      raise ValueError(f"config.sharding_rules entry {rule!r}: expected (logical_name, mesh_axes)")
    name, target = rule
    targets = (target,) if isinstance(target, str) or target is None else tuple(target)
    for t in targets:
      if t is not None and t not in MESH_AXES:
        raise ValueError(f"config.sharding_rules[{name!r}] = {target!r}: unknown mesh axis "
                         f"{t!r}; valid: {list(MESH_AXES)} or None")
    overrides[name] = target if isinstance(target, str) or target is None else tuple(target)
  rules = [(name, overrides.pop(name, target)) for name, target in DEFAULT_RULES]
  rules.extend(overrides.items())
  return tuple(rules)


def param_shardings(boxed_tree: Any, mesh: Mesh, rules: Sequence) -> Any:
  """`NamedSharding`s for a tree of `nn.LogicallyPartitioned` leaves (or their abstract shapes).

  Unboxed leaves (plain arrays, scalars) are replicated.
  """
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def opt_state_shardings(abstract_opt_state: Any, params: Any, shardings: Any,
                        mesh: Mesh) -> Any:
  """Shardings for an optimizer state: a leaf shaped like a parameter shares its sharding.

  Optax states hold parameter-shaped trees (moments, accumulated gradients) whose tree paths
  end with the parameter's path; everything else (counts, scalars) is replicated. Matching by
  path suffix and shape works for any optax chain without knowing its state classes.
  """
  by_path = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    by_path[_keys(path)] = (tuple(np.shape(leaf)), path)
  sharding_of = {
      _keys(path): s for path, s in jax.tree_util.tree_leaves_with_path(
          shardings, is_leaf=lambda x: isinstance(x, NamedSharding))}
  replicated = NamedSharding(mesh, P())

  def pick(path, leaf):
    keys = _keys(path)
    for start in range(len(keys)):
      hit = by_path.get(keys[start:])
      if hit is not None and hit[0] == tuple(np.shape(leaf)):
        return sharding_of[keys[start:]]
    return replicated

  return jax.tree_util.tree_map_with_path(pick, abstract_opt_state)


def _keys(path) -> tuple:
  out = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        out.append(getattr(k, attr))
        break
    else:
      out.append(str(k))
  return tuple(out)


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  """Leading (batch) axis split over the data-parallel mesh axes, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh) -> int:
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles one global `jax.Array` per key from every process's local batch.

  Each process passes its own `[b_local, ...]` arrays; the result is `[b_local *
  process_count, ...]`, split over the batch axes of the mesh, process 0's examples first.
  """
  out = {}
  for key, local in local_batch.items():
    local = np.asarray(local)
    shape = (local.shape[0] * jax.process_count(),) + local.shape[1:]
    out[key] = jax.make_array_from_process_local_data(
        batch_sharding(mesh, local.ndim), local, shape)
  return out


def prefetch_to_device(local_batches: Iterable[Mapping[str, np.ndarray]], mesh: Mesh,
                       size: int, dtypes: Mapping[str, Any]) -> Iterator[dict[str, jax.Array]]:
  """Global batches from local ones, with `size` of them already sent to the devices.

  `dataset_configs.prefetch_to_device`: the copy of batch n + 1 .. n + size to the devices
  runs while step n computes (device_put is asynchronous), so the step rarely waits on one.
  `size=0` sends each batch when it is asked for. Keys missing from `dtypes` are dropped.
  Batches of global `jax.Array`s (made on the devices) are passed through as they are.
  """
  def put(local):
    if all(isinstance(v, jax.Array) for v in local.values()):
      return {k: local[k] for k in dtypes}  # made on the devices already (synthetic_device)
    return global_batch({k: np.asarray(local[k], dtype) for k, dtype in dtypes.items()}, mesh)

  queue = collections.deque()
  batches = iter(local_batches)
  for local in batches:
    queue.append(put(local))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def shard_description(tree: Any) -> dict[str, str]:
  """`{param_path: partition spec}` of a tree of sharded arrays, for logs and tests."""
  return {
      "/".join(str(k) for k in _keys(path)): str(leaf.sharding.spec)
      for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
      if isinstance(getattr(leaf, "sharding", None), NamedSharding)}
