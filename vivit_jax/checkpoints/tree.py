"""Parameter trees as flat `{'a/b/c': array}` dicts, boxes, and the name/shape matcher."""
import re
from typing import Any, Callable, Mapping

import jax
import numpy as np
from flax.core import meta

from vivit_jax.checkpoints.errors import CheckpointMismatchError

SEP = "/"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested dicts → `{'a/b/c': leaf}`. Empty sub-dicts vanish (they hold no parameters)."""
  flat = {}
  for key, value in tree.items():
    key = str(key)
    if SEP in key:
      raise ValueError(f"parameter name {prefix + key!r} contains {SEP!r}")
    path = prefix + key
    if isinstance(value, Mapping):
      flat.update(flatten(value, path + SEP))
    else:
      flat[path] = value
  return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """`{'a/b/c': leaf}` → nested plain dicts."""
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    *parents, leaf = path.split(SEP)
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
      if not isinstance(node, dict):
        raise ValueError(f"{path!r}: {p!r} is both a leaf and a sub-tree")
    node[leaf] = value
  return tree


def is_box(x) -> bool:
  return isinstance(x, meta.AxisMetadata)


def unboxed_flat(tree: Mapping[str, Any]) -> dict[str, Any]:
  """Flat dict of plain values: `nn.LogicallyPartitioned` (or any flax box) is unwrapped."""
  return {k: (v.unbox() if is_box(v) else v) for k, v in flatten(_to_dict(tree)).items()}


def _to_dict(tree):
  # FrozenDict and other mappings → dict; boxes and arrays untouched.
  if isinstance(tree, Mapping):
    return {k: _to_dict(v) for k, v in tree.items()}
  return tree


def replace_values(tree: Mapping[str, Any], new_flat: Mapping[str, Any]) -> dict[str, Any]:
  """`tree` with the leaves named in `new_flat` replaced; boxes keep their axis names."""
  out = {}
  for path, old in flatten(_to_dict(tree)).items():
    if path not in new_flat:
      out[path] = old
    elif is_box(old):
      out[path] = old.replace_boxed(new_flat[path])
    else:
      out[path] = new_flat[path]
  return unflatten(out)


def shape_of(x) -> tuple:
  if is_box(x):
    x = x.unbox()
  return tuple(np.shape(x)) if not hasattr(x, "shape") else tuple(x.shape)


def dtype_of(x):
  if is_box(x):
    x = x.unbox()
  return getattr(x, "dtype", None)


def count_params(tree: Mapping[str, Any]) -> int:
  return int(sum(np.prod(shape_of(v), dtype=np.int64) for v in flatten(_to_dict(tree)).values()))


def match_params(expected: Mapping[str, Any], found: Mapping[str, Any], *, source: str,
                 cast: bool = True) -> dict[str, Any]:
  """Checks every name and shape of `found` against `expected`; returns `found` as nested dicts.

  Args:
    expected: the model's parameters (arrays, `jax.ShapeDtypeStruct`s or flax boxes).
    found: parameters read from `source` (plain arrays).
    source: what `found` came from (a file name), named in the error.
    cast: convert each found array to the expected dtype where the expected leaf has one
      (e.g. the float64 kernels some Scenic surgery produced → float32).

  Raises:
    CheckpointMismatchError: listing ALL shape mismatches (path, expected, found), missing
      and unused paths in one error.
  """
  exp = flatten(_to_dict(expected))
  got = flatten(_to_dict(found))
  mismatches = [(p, shape_of(exp[p]), shape_of(got[p]))
                for p in sorted(exp.keys() & got.keys()) if shape_of(exp[p]) != shape_of(got[p])]
  missing = sorted(exp.keys() - got.keys())
  unused = sorted(got.keys() - exp.keys())
  if mismatches or missing or unused:
    exp_kind, got_kind = describe_variant(exp), describe_variant(got)
    note = (f"the checkpoint holds a {got_kind}, the model is a {exp_kind}"
            if exp_kind != got_kind else "")
    raise CheckpointMismatchError(source, mismatches, missing, unused, note=note)
  out = {}
  for p, v in got.items():
    if is_box(v):
      v = v.unbox()
    want = dtype_of(exp[p])
    if cast and want is not None and getattr(v, "dtype", None) != want:
      v = np.asarray(v).astype(want)
    out[p] = v
  return unflatten(out)


def describe_variant(flat: Mapping[str, Any]) -> str:
  """Which kind of model a flat parameter dict belongs to, from its names (for error messages)."""
  if any(k.startswith("SpatialTransformer/") for k in flat):
    return "ViViT factorized_encoder (Model 2)"
  if any("MultiHeadDotProductAttention_space" in k for k in flat):
    return "ViViT factorized_self_attention_block (Model 3)"
  if len(shape_of(flat.get("embedding/kernel", ()))) == 4:
    return "ViT image model or ViViT with temporal_sampling (2D patch kernel)"
  if any(k.startswith("Transformer/") for k in flat):
    return "ViViT spacetime / factorized_dot_product_attention (Model 1 or 4)"
  return "model of unknown kind"


def tree_summary(tree: Mapping[str, Any]) -> str:
  """One line per parameter (`path shape dtype`) and a total, for logs and the CLI."""
  flat = flatten(_to_dict(tree))
  width = max((len(p) for p in flat), default=0)
  lines = [f"{p:<{width}}  {str(shape_of(v)):<22} {dtype_of(v)}" for p, v in sorted(flat.items())]
  lines.append(f"{len(flat)} arrays, {count_params(tree):,} parameters")
  return "\n".join(lines)


def map_leaves(fn: Callable, tree):
  """`jax.tree.map` that treats flax boxes as leaves."""
  return jax.tree.map(fn, tree, is_leaf=is_box)


__all__ = ["flatten", "unflatten", "unboxed_flat", "replace_values", "match_params",
           "count_params", "tree_summary", "shape_of", "map_leaves", "convert_pre_linen"]


_NUMBERED = re.compile(r"^(.*)_(\d+)$")


def convert_pre_linen(tree: Mapping[str, Any]) -> dict[str, Any]:
  """Renames pre-Linen module names to Linen's: per-type counters instead of one global one.

  Pre-Linen flax numbered submodules by creation order across all types, so a ViT block is
  `LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3`; Linen counts per type:
  `LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0`. Within each dict,
  names `<type>_<n>` are renumbered 0, 1, ... per type in order of n. Linen trees are unchanged.
  """
  if not isinstance(tree, Mapping):
    return tree
  groups: dict[str, list[tuple[int, str]]] = {}
  for key in tree:
    m = _NUMBERED.match(key)
    if m:
      groups.setdefault(m.group(1), []).append((int(m.group(2)), key))
  rename = {}
  for prefix, items in groups.items():
    for new_index, (_, key) in enumerate(sorted(items)):
      rename[key] = f"{prefix}_{new_index}"
  return {rename.get(k, k): convert_pre_linen(v) for k, v in tree.items()}
