"""`init_from`: initialise a ViViT from a pretrained ViT image model or another ViViT.

Follows Scenic's fine-tuning semantics (scenic/projects/vivit/model_utils.py) field by field:

* `init_from.checkpoint_path`, `checkpoint_format` ('scenic', 'big_vision', 'vision_transformer';
  the file's content decides between msgpack and .npz);
* position embeddings (`restore_positional_embedding`, default True): copied when the sizes agree;
  otherwise the CLS slot is kept (or created from the target's own init) and the grid is changed
  by `positional_embed_size_change`: 'resize' (bilinear, scipy.ndimage.zoom order 1, over a
  square grid), 'tile' (the spatial grid repeated over time, time-major), 'resize_tile' (resize
  to one frame's grid, then tile). A TemporalTransformer's 1D embedding is linearly interpolated;
* the input embedding (`restore_input_embedding`, default True): a 2D ViT kernel `[fh, fw, c, d]`
  is inflated to the tubelet kernel `[ft, fh, fw, c, d]` by
  `model.temporal_encoding_config.kernel_init_method`: 'central_frame_initializer' (the 2D kernel
  at tap ft//2, zeros elsewhere), 'average_frame_initializer' (kernel/ft at every tap),
  'average_arp_frame_initializer' (kernel times the approximate-rank-pooling weight of each tap,
  Bilen et al. PAMI 2017 eq. 3, divided by ft);
* the ViT `Transformer` goes to `Transformer` (Models 1, 3, 4) or `SpatialTransformer` (Model 2);
  a ViViT's `SpatialTransformer`/`TemporalTransformer` go to theirs. Model 3 receives the ViT
  attention in both `MultiHeadDotProductAttention_space` and `_time`
  (`init_from.init_spatial_transformer` / `init_temporal_transformer`, default True; with
  `model.attention_config.attention_kernel_init_method='zero'` and
  `init_temporal_transformer=False` the temporal attention starts as the identity);
* the classifier `output_projection` is restored only with `init_from.restore_output_proj=True`
  and equal numbers of classes, else it keeps the fresh (zero) init; `pre_logits` only when the
  target has `model.representation_size`.

Deliberate differences from Scenic (documented in docs/checkpoints.md):
  1. Model 2 from a ViT: the ViT's `cls` initialises `cls_SpatialTransformer` (Scenic drops it and
     keeps the fresh value, zero by default).
  2. Model 3: `init_from.init_temporal_layer_norm=True` copies the ViT's first LayerNorm into
     `LayerNorm_time` (Scenic logs that it does but does not).
  3. big_vision `.npz`: its top-level `pos_embedding` is used (Scenic skips it), see vit.py.
  4. Problems are collected and raised as one CheckpointMismatchError (Scenic asserts on the first).
"""
import logging
from typing import Any

import ml_collections
import numpy as np
import scipy.ndimage

from vivit_jax.checkpoints.errors import CheckpointMismatchError
from vivit_jax.checkpoints.tree import dtype_of, flatten, replace_values, shape_of, unboxed_flat
from vivit_jax.checkpoints.vit import check_format, load_pretrained_params
from vivit_jax.models.embed import TUBELET_INITIALIZERS

log = logging.getLogger(__name__)

POSEMB_SIZE_CHANGES = ("resize", "tile", "resize_tile")
_TRANSFORMERS = ("Transformer", "SpatialTransformer", "TemporalTransformer")


# ----------------------------------------------------------------------------- position embeddings
def resize_grid(grid: np.ndarray, n_out: int) -> np.ndarray:
  """`[n_in, d]` square grid → `[n_out, d]` square grid, bilinear (scipy zoom, order 1)."""
  g_in, g_out = _square_side(len(grid)), _square_side(n_out)
  grid = grid.reshape(g_in, g_in, -1)
  grid = scipy.ndimage.zoom(grid, (g_out / g_in, g_out / g_in, 1), order=1)
  return grid.reshape(g_out * g_out, -1)


def _square_side(n: int) -> int:
  side = int(round(np.sqrt(n)))
  if side * side != n:
    raise ValueError(f"position embedding of {n} tokens is not a square grid; 'resize' needs "
                     "square grids (use 'tile', or equal sizes)")
  return side


def tile_grid(grid: np.ndarray, n_out: int) -> np.ndarray:
  """`[n, d]` → `[n_out, d]`: the whole grid repeated (time-major tokens)."""
  if n_out % len(grid):
    raise ValueError(f"cannot tile a position embedding of {len(grid)} tokens to {n_out} tokens "
                     "(not a multiple)")
  return np.concatenate([grid] * (n_out // len(grid)), axis=0)


def interpolate_1d(grid: np.ndarray, n_out: int) -> np.ndarray:
  """`[n, d]` → `[n_out, d]`, linear along tokens (the temporal transformer's embedding)."""
  return scipy.ndimage.zoom(grid, (n_out / len(grid), 1), order=1)


def _frames_in_target(config) -> int:
  te = config.model.get("temporal_encoding_config", ml_collections.ConfigDict())
  method = te.get("method", "3d_conv")
  if method == "temporal_sampling":
    return int(te.n_sampled_frames)
  num_frames = config.get("dataset_configs", {}).get("num_frames")
  if num_frames is None:
    raise ValueError("positional_embed_size_change='resize_tile' needs "
                     "config.dataset_configs.num_frames (frames per clip)")
  return int(num_frames) // int(config.model.patches.size[2])


def adapt_posemb(restored: np.ndarray, fresh: np.ndarray, config, *, restored_has_cls: bool,
                 target_has_cls: bool, temporal: bool) -> np.ndarray:
  """Position embedding `[1, n, d]` of the checkpoint → the target's `[1, m, d]`."""
  if restored.shape == fresh.shape:
    return restored
  grid = restored[0, 1:] if restored_has_cls else restored[0]
  if target_has_cls:
    cls_slot = restored[:, :1] if restored_has_cls else fresh[:, :1]
  else:
    cls_slot = fresh[:, :0]
  n = fresh.shape[1] - int(target_has_cls)
  if len(grid) != n:
    how = config.init_from.get("positional_embed_size_change", "tile")
    if temporal:
      grid = interpolate_1d(grid, n)
    elif how == "resize":
      grid = resize_grid(grid, n)
    elif how == "tile":
      grid = tile_grid(grid, n)
    elif how == "resize_tile":
      frames = _frames_in_target(config)
      grid = tile_grid(resize_grid(grid, n // frames), n)
    else:
      raise ValueError(f"init_from.positional_embed_size_change={how!r}; "
                       f"valid: {list(POSEMB_SIZE_CHANGES)}")
  return np.concatenate([cls_slot, grid[None].astype(fresh.dtype)], axis=1)


# ----------------------------------------------------------------------------- input embedding
def average_arp_weights(t: int) -> np.ndarray:
  """Approximate rank pooling weights α_1..α_t (Bilen et al., PAMI 2017, eq. 3).

  α_i = 2(t - i + 1) - (t + 1)(H_t - H_{i-1}), H_k the k-th harmonic number.
  """
  i = np.arange(1, t + 1)
  harmonic = np.concatenate([[0.0], np.cumsum(1.0 / i)])  # H_0..H_t
  return 2.0 * (t - i + 1) - (t + 1) * (harmonic[t] - harmonic[i - 1])


def inflate_kernel(kernel_2d: np.ndarray, ft: int, method: str | None) -> np.ndarray:
  """2D patch kernel `[fh, fw, c, d]` → tubelet kernel `[ft, fh, fw, c, d]`."""
  if method == "central_frame_initializer":
    out = np.zeros((ft,) + kernel_2d.shape, dtype=np.float64)
    out[ft // 2] = kernel_2d
    return out
  tiled = np.broadcast_to(kernel_2d[None], (ft,) + kernel_2d.shape).astype(np.float64)
  if method == "average_frame_initializer":
    return tiled / ft
  if method == "average_arp_frame_initializer":
    return tiled * (average_arp_weights(ft) / ft).reshape(ft, 1, 1, 1, 1)
  raise ValueError(
      f"model.temporal_encoding_config.kernel_init_method={method!r} cannot inflate a 2D ViT "
      f"patch kernel {kernel_2d.shape} to a tubelet; valid: {list(TUBELET_INITIALIZERS)}")


# ----------------------------------------------------------------------------- the transfer
class _Transfer:
  """Collects the new values (flat paths) and every problem, then raises once."""

  def __init__(self, config, fresh: dict[str, Any], source: str):
    self.config = config
    self.fresh = fresh
    self.source = source
    self.out: dict[str, Any] = {}
    self.mismatches: list[tuple[str, tuple, tuple]] = []
    self.unused: list[str] = []

  def put(self, path: str, value) -> None:
    if path not in self.fresh:
      self.unused.append(path)
      return
    value = np.asarray(value)
    want = shape_of(self.fresh[path])
    if tuple(value.shape) != want:
      self.mismatches.append((path, want, tuple(value.shape)))
      return
    self.out[path] = value.astype(dtype_of(self.fresh[path]))

  def put_tree(self, prefix: str, subtree) -> None:
    if not isinstance(subtree, dict):
      self.put(prefix, subtree)
      return
    for k, v in flatten(subtree).items():
      self.put(f"{prefix}/{k}", v)

  def has(self, path: str) -> bool:
    return path in self.fresh or any(p.startswith(path + "/") for p in self.fresh)

  def raise_if_problems(self) -> None:
    if self.mismatches or self.unused:
      raise CheckpointMismatchError(
          self.source, self.mismatches, (), self.unused,
          note="(while initialising the model from it with init_from; is init_from.checkpoint_path "
               "the right model for this config?)")


def _init_blocks(tr: _Transfer, dest: str, block: str, restored: dict[str, Any]) -> None:
  """One encoder block of the checkpoint → block `dest/block` of the target."""
  cfg = tr.config
  kind = cfg.model.get("attention_config", {}).get("type", "spacetime")
  if not tr.has(f"{dest}/{block}"):
    tr.unused.append(f"{dest}/{block} (the checkpoint has more layers than the model)")
    return
  if kind != "factorized_self_attention_block":
    tr.put_tree(f"{dest}/{block}", restored)
    return
  init_from = cfg.init_from
  for name, sub in restored.items():
    if tr.has(f"{dest}/{block}/{name}"):  # Model 3 → Model 3
      tr.put_tree(f"{dest}/{block}/{name}", sub)
    elif name == "MultiHeadDotProductAttention_0":
      if init_from.get("init_spatial_transformer", True):
        tr.put_tree(f"{dest}/{block}/MultiHeadDotProductAttention_space", sub)
      if init_from.get("init_temporal_transformer", True):
        tr.put_tree(f"{dest}/{block}/MultiHeadDotProductAttention_time", sub)
    elif name == "LayerNorm_0":
      tr.put_tree(f"{dest}/{block}/LayerNorm_space", sub)
      if init_from.get("init_temporal_layer_norm", False):
        tr.put_tree(f"{dest}/{block}/LayerNorm_time", sub)
    elif name == "LayerNorm_1":
      tr.put_tree(f"{dest}/{block}/LayerNorm_mlp", sub)
    elif name == "MlpBlock_0":
      tr.put_tree(f"{dest}/{block}/MlpBlock", sub)
    else:
      tr.unused.append(f"{dest}/{block}/{name}")


def _init_transformer(tr: _Transfer, name: str, restored: dict[str, Any], *,
                      restored_has_cls: bool, target_has_cls: bool) -> None:
  cfg = tr.config
  kind = cfg.model.get("attention_config", {}).get("type", "spacetime")
  main = "SpatialTransformer" if kind == "factorized_encoder" else "Transformer"
  temporal = name == "TemporalTransformer"
  dest = name if temporal else main
  if not tr.has(dest):
    log.info("init_from: skipping %s (the target model has no %s)", name, dest)
    return
  for key, sub in restored.items():
    if key == "posembed_input":
      if cfg.init_from.get("restore_positional_embedding", True):
        path = f"{dest}/posembed_input/pos_embedding"
        if path not in tr.fresh:
          tr.unused.append(path)
          continue
        fresh = np.asarray(tr.fresh[path])
        try:
          pe = adapt_posemb(np.asarray(sub["pos_embedding"]), fresh, cfg,
                            restored_has_cls=restored_has_cls, target_has_cls=target_has_cls,
                            temporal=temporal)
        except ValueError as e:
          raise ValueError(f"init_from {tr.source}: {path}: {e}") from e
        tr.put(path, pe)
    elif key.startswith("encoderblock"):
      _init_blocks(tr, dest, key, sub)
    else:
      tr.put_tree(f"{dest}/{key}", sub)


def _init_embedding(tr: _Transfer, restored: dict[str, Any]) -> None:
  cfg = tr.config
  if not cfg.init_from.get("restore_input_embedding", True):
    return
  kernel, fresh = np.asarray(restored["kernel"]), tr.fresh.get("embedding/kernel")
  if fresh is not None and kernel.shape != shape_of(fresh):
    want = shape_of(fresh)
    if kernel.ndim == 4 and len(want) == 5 and want[1:] == kernel.shape:
      method = cfg.model.get("temporal_encoding_config", {}).get("kernel_init_method")
      kernel = inflate_kernel(kernel, want[0], method)
    else:
      tr.mismatches.append(("embedding/kernel", want, kernel.shape))
      tr.put("embedding/bias", restored["bias"])
      return
  tr.put("embedding/kernel", kernel)
  tr.put("embedding/bias", restored["bias"])


def transfer(config, fresh_flat: dict[str, Any], restored: dict[str, Any],
             source: str) -> dict[str, np.ndarray]:
  """The flat parameters to overwrite in the target (only those taken from the checkpoint)."""
  tr = _Transfer(config, fresh_flat, source)
  restored_has_cls = any(k == "cls" or k.startswith("cls_") for k in restored)
  target_has_cls = config.model.get("classifier", "gap") == "token"
  said = ((config.init_from.get("model_config") or {}).get("model") or {}).get("classifier")
  if said is not None and (said == "token") != restored_has_cls:
    log.warning("init_from.model_config.model.classifier=%r but the checkpoint %s a CLS token; "
                "going by the checkpoint", said, "has" if restored_has_cls else "has no")
  for key, value in restored.items():
    if key == "output_projection":
      if config.init_from.get("restore_output_proj", False):
        want = shape_of(fresh_flat["output_projection/kernel"])
        if shape_of(value["kernel"]) == want:
          tr.put_tree(key, value)
        else:
          log.warning("init_from: not restoring output_projection %s: the model has %s "
                      "(another number of classes); it is re-initialised",
                      shape_of(value["kernel"]), want)
    elif key == "pre_logits":
      if config.model.get("representation_size") is not None and isinstance(value, dict) and value:
        tr.put_tree(key, value)
    elif key in _TRANSFORMERS:
      _init_transformer(tr, key, value, restored_has_cls=restored_has_cls,
                        target_has_cls=target_has_cls)
    elif key == "embedding":
      _init_embedding(tr, value)
    elif key == "cls" and "cls_SpatialTransformer" in fresh_flat:
      tr.put("cls_SpatialTransformer", value)  # fix 1 (see module docstring)
    elif tr.has(key):
      tr.put_tree(key, value)
    else:
      log.info("init_from: skipping %s (in the checkpoint, not in the model)", key)
  tr.raise_if_problems()
  return tr.out


def init_from_pretrained(config: ml_collections.ConfigDict, params: Any) -> Any:
  """Initialises the target model's parameters from `config.init_from`.

  Args:
    config: the full Scenic-style config; uses `config.model` (the target) and `config.init_from`
      (`checkpoint_path`, `checkpoint_format`, `positional_embed_size_change`,
      `restore_positional_embedding`, `restore_input_embedding`, `restore_output_proj`,
      `init_spatial_transformer`, `init_temporal_transformer`, `init_temporal_layer_norm`,
      `model_config`) and, for 'resize_tile', `config.dataset_configs.num_frames`.
    params: the freshly initialised parameters of the target model (nested dicts; leaves plain
      arrays or flax boxes such as `nn.LogicallyPartitioned`).

  Returns:
    The same tree structure: leaves taken from the checkpoint are replaced by numpy arrays of the
    target's dtype (inside the same box if the leaf was boxed); all other leaves are the objects
    passed in, untouched. Shard the result afterwards.

  Raises:
    CheckpointFormatError: the checkpoint cannot be read.
    CheckpointMismatchError: some checkpoint parameters do not fit the model (all listed).
  """
  init_from = config.get("init_from")
  if init_from is None or not init_from.get("checkpoint_path"):
    raise ValueError("config.init_from.checkpoint_path is required for init_from_pretrained")
  path = str(init_from.checkpoint_path)
  check_format(init_from.get("checkpoint_format", "scenic"))
  restored = load_pretrained_params(path)
  fresh = unboxed_flat(params)
  new = transfer(config, fresh, restored, path)
  log.info("init_from %s: %d of %d arrays restored; kept fresh: %s", path, len(new), len(fresh),
           sorted(set(fresh) - set(new)))
  return replace_values(params, new)


__all__ = ["init_from_pretrained", "transfer", "adapt_posemb", "inflate_kernel",
           "average_arp_weights", "resize_grid", "tile_grid", "interpolate_1d"]
