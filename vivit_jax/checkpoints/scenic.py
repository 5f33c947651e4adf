"""Scenic checkpoints: one flax msgpack file holding a train state.

Two layouts exist:
  * released ViViT files (deprecated flax.optim): `optimizer/target` (the params),
    `optimizer/state`, `global_step`, `model_state`, `rng`, `accum_train_time`;
  * newer Scenic: `params`, `opt_state`, `global_step`, `model_state`, `rng`, `metadata`.
The file is decoded with msgpack only (flax's array extension type): nothing is unpickled.
"""
import logging
import re
from typing import Any

import msgpack
import numpy as np
from flax import serialization

from vivit_jax.checkpoints import files
from vivit_jax.checkpoints.errors import CheckpointFormatError, reading
from vivit_jax.checkpoints.tree import convert_pre_linen, flatten, unflatten

log = logging.getLogger(__name__)

_STEP_FILE = re.compile(r"^checkpoint_(\d+)$")
LAYOUTS = ("params (newer Scenic)", "optimizer/target (released flax.optim files)")


def resolve_checkpoint_file(path: str) -> str:
  """A file path as is; for a directory, its newest `checkpoint_<step>` (or `checkpoint`)."""
  path = str(path)
  if not files.exists(path):
    raise CheckpointFormatError(f"Scenic checkpoint not found: {path}")
  if not files.isdir(path):
    return path
  names = files.listdir(path)
  steps = sorted((int(m.group(1)), n) for n in names if (m := _STEP_FILE.match(n)))
  if steps:
    return files.join(path, steps[-1][1])
  if "checkpoint" in names:
    return files.join(path, "checkpoint")
  raise CheckpointFormatError(
      f"no Scenic checkpoint in directory {path}: expected files named checkpoint_<step> "
      f"(the newest is taken) or 'checkpoint'; found {names[:20]}")


def load_train_state(path: str) -> tuple[dict[str, Any], str]:
  """Decodes the msgpack train state. Returns `(state, file_read)`."""
  file = resolve_checkpoint_file(path)
  data = files.read_bytes(file)
  if data[:4] == files.NPZ_MAGIC:
    raise CheckpointFormatError(
        f"{file} is an .npz archive, not a Scenic msgpack checkpoint; ViT .npz files "
        "(vision_transformer/AugReg, big_vision) are read by vivit_jax.checkpoints.load_vit_params "
        "or init_from with checkpoint_format='big_vision'")
  try:
    state = serialization.msgpack_restore(data)
  except (ValueError, msgpack.exceptions.ExtraData, msgpack.exceptions.FormatError,
          msgpack.exceptions.StackError, TypeError) as e:
    hint = " (the file looks truncated: incomplete download or copy?)" if "incomplete" in str(e) else ""
    raise CheckpointFormatError(
        f"{file} ({len(data):,} bytes) is not a readable flax msgpack checkpoint{hint}: {e}") from e
  if not isinstance(state, dict):
    raise CheckpointFormatError(
        f"{file} decodes to a {type(state).__name__}, not a train state dict: not a Scenic checkpoint")
  return state, file


def params_from_train_state(state: dict[str, Any], source: str) -> dict[str, Any]:
  """The parameter tree of either layout."""
  if "params" in state and isinstance(state["params"], dict) and state["params"]:
    return state["params"]
  opt = state.get("optimizer")
  if isinstance(opt, dict) and isinstance(opt.get("target"), dict):
    return opt["target"]
  raise CheckpointFormatError(
      f"{source} holds no parameters: expected a train state with {' or '.join(LAYOUTS)}; "
      f"its top-level keys are {sorted(state)[:20]}")


def _to_numpy(tree):
  # msgpack decodes arrays as read-only views of the file's bytes; copy to owned, writable arrays.
  return {k: np.array(v) for k, v in flatten(tree).items()}


def load_scenic_checkpoint(path: str) -> dict[str, Any]:
  """Loads the parameters of a Scenic checkpoint (ViViT or ViT).

  Args:
    path: a checkpoint file (released files are named `checkpoint`), or a directory of
      `checkpoint_<step>` files (the newest is read); local or `gs://...` (any tf.io.gfile URL).

  Returns:
    Plain nested dicts of numpy arrays with Scenic's parameter names (pre-Linen module names,
    found in old ViT checkpoints, are converted to Linen's).
  """
  state, file = load_train_state(path)
  with reading(file, "Scenic checkpoint"):
    params = params_from_train_state(state, file)
    flat = _to_numpy(params)
    log.info("loaded %d arrays from %s (step %s)", len(flat), file, state.get("global_step"))
    return convert_pre_linen(unflatten(flat))

