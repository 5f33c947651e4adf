"""Params-only Orbax checkpoints (what `convert_checkpoint --to=orbax` writes).

`load_params` also reads the train loop's checkpoints: an Orbax CheckpointManager directory
`WORKDIR/checkpoints/<step>/state/` whose item `state` is `{'params', 'opt_state', 'step', ...}`;
only `params` is read from it.
"""
import logging
import os
import re
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from vivit_jax.checkpoints import files
from vivit_jax.checkpoints.errors import CheckpointFormatError, reading
from vivit_jax.checkpoints.tree import flatten, unflatten, is_box

log = logging.getLogger(__name__)

_METADATA = "_METADATA"
STATE_ITEM = "state"  # the train state item of a run step (`vivit_jax.run_state` saves it)


def save_params(params: Any, path: str, *, force: bool = False) -> str:
  """Writes `params` (nested dicts of arrays; boxes are unwrapped) as an Orbax checkpoint dir.

  Orbax writes to a temporary directory and renames it when complete, so a failed save leaves
  nothing half-written at `path`. Returns the absolute path.
  """
  path = str(path) if files.is_remote(path) else os.path.abspath(path)
  # numpy or (possibly sharded) jax arrays both go to Orbax as they are; only boxes are opened.
  plain = unflatten({k: v.unbox() if is_box(v) else v for k, v in flatten(dict(params)).items()})
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, plain, force=force)
  checkpointer.wait_until_finished()
  return path


def _item_dir(path: str) -> str:
  """The directory holding the params tree: a params-only dir, or a train-loop state item."""
  if not files.isdir(path):
    raise CheckpointFormatError(f"Orbax checkpoint directory not found: {path}")
  names = files.listdir(path)
  if _METADATA in names:
    return path
  if STATE_ITEM in names:
    return _item_dir(files.join(path, STATE_ITEM))
  if "checkpoints" in names:
    return _item_dir(files.join(path, "checkpoints"))
  steps = sorted(int(n) for n in names if re.fullmatch(r"\d+", n))
  if steps:
    return _item_dir(files.join(path, str(steps[-1])))
  raise CheckpointFormatError(
      f"{path} is not an Orbax checkpoint: expected a params-only checkpoint directory (with "
      f"{_METADATA}), a train-loop step directory with item '{STATE_ITEM}', or a directory of "
      f"numbered steps; found {names[:20]}")


def load_params(path: str) -> dict[str, Any]:
  """Reads params as nested dicts of numpy arrays (host memory, no sharding).

  Accepts the directory `save_params` wrote, or a train-loop checkpoint: `WORKDIR`,
  `WORKDIR/checkpoints` (newest step), `WORKDIR/checkpoints/<step>` or `.../<step>/state`.
  """
  path = str(path) if files.is_remote(path) else os.path.abspath(path)
  item = _item_dir(path)
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    tree = checkpointer.metadata(item).item_metadata.tree
  except Exception as e:  # orbax raises several types for unreadable metadata
    raise CheckpointFormatError(f"cannot read Orbax metadata of {item}: {e}") from e
  is_state_item = item.rstrip("/").endswith("/" + STATE_ITEM)
  with reading(item, "Orbax checkpoint"):
    if not isinstance(tree, dict):
      raise CheckpointFormatError(f"{item}: the stored tree is a {type(tree).__name__}, not a dict")
    partial = isinstance(tree.get("params"), dict) and (is_state_item or len(tree) > 1)
    if is_state_item and not partial:
      raise CheckpointFormatError(f"{item}: a train state without 'params' (keys {sorted(tree)})")
    wanted = {"params": tree["params"]} if partial else tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
    restored = checkpointer.restore(
        item, args=ocp.args.PyTreeRestore(item=wanted, restore_args=restore_args,
                                          partial_restore=partial))
  log.info("loaded params from %s", item)
  return restored["params"] if partial else restored
