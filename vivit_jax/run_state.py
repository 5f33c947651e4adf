"""The run's own state on disk: Orbax checkpoints `WORKDIR/checkpoints/<step>/state`.

(`vivit_jax.checkpoints` reads the other formats: Scenic, ViT, Hugging Face, params-only Orbax.)

One item, `state` = {'params', 'opt_state', 'step'}, saved asynchronously (training goes on
while the arrays are written), every `config.checkpoint_steps`, at the end of training and on
SIGTERM. Orbax writes each step to a temporary folder and renames it when complete, so a run
killed mid-write leaves at most a temporary folder that the next start removes; the newest
*complete* step is what a run resumes from. The data position is not stored: the training
iterator is a deterministic function of (seed, step), so `step` is enough to continue exactly.

A complete step can still be damaged later (a truncated copy, a bad disk): `restore_newest`
resumes from the newest step that restores completely, and sets each newer damaged step aside
as `<step>.damaged` (renamed, never deleted) with one warning line naming it. Evaluation
(`fall_back=False`) does not fall back: a damaged newest step raises `DamagedCheckpointError`,
whose message is one line naming the folder and what is wrong.

Pretrained weights (`config.init_from`) never go through this module: only our own run folder
is ever resumed from.
"""
import contextlib
import logging
import os
import signal
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from vivit_jax import checkpoints
from vivit_jax.checkpoints.errors import CheckpointFormatError, CheckpointMismatchError, first_line
from vivit_jax.checkpoints.params_io import STATE_ITEM as STATE  # the one name of the item

DAMAGED_SUFFIX = ".damaged"


class DamagedCheckpointError(CheckpointFormatError):
  """A run checkpoint that cannot be restored (truncated, corrupt or missing files); one line."""


def make_manager(workdir: str | epath.Path, *, max_to_keep: int | None = 3,
                 async_save: bool = True) -> ocp.CheckpointManager:
  """The run's `CheckpointManager` in `workdir/checkpoints` (created if missing)."""
  directory = absolute(workdir) / "checkpoints"
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      create=True,
      cleanup_tmp_directories=True,  # leftovers of a write that was killed
      enable_async_checkpointing=async_save,
  )
  return _RunCheckpointManager(directory, options=options,
                               item_handlers={STATE: ocp.StandardCheckpointHandler()})


class CheckpointSaveError(OSError):
  """Writing a checkpoint failed (disk full, quota, I/O error); the older steps are intact."""


class _RunCheckpointManager(ocp.CheckpointManager):
  """Orbax's manager whose failed writes name the step folder (its errors arrive asynchronously,
  at the next save or wait, behind a long trace)."""

  _saving: int | None = None

  def save(self, step, *args, **kwargs):
    self.wait_until_finished()  # the previous save's failure is reported as that step's
    self._saving = step
    with self._explained():
      return super().save(step, *args, **kwargs)

  def wait_until_finished(self):
    with self._explained():
      super().wait_until_finished()

  @contextlib.contextmanager
  def _explained(self):
    try:
      yield
    except OSError as e:
      if isinstance(e, CheckpointSaveError):
        raise
      folder = self.directory / str(self._saving)
      kept = [s for s in self.all_steps() if s != self._saving]
      what = f"{e.strerror} ({e.filename})" if e.strerror else _one_line(e)
      raise CheckpointSaveError(
          e.errno, f"cannot write checkpoint {folder}: {what}; training stopped. The previous "
          f"checkpoints {kept} in {self.directory} are intact: free space and rerun to resume "
          "from the newest") from e


def absolute(path: str | epath.Path) -> epath.Path:
  """A local path made absolute (Orbax requires it); URLs such as gs://... are kept."""
  path = str(path)
  return epath.Path(path if "://" in path else os.path.abspath(path))


def save(manager: ocp.CheckpointManager, step: int, state: dict, *, force: bool = False) -> None:
  """Starts an (async) save of `state` at `step`; a step already on disk is skipped."""
  if step in manager.all_steps():
    return
  manager.save(step, args=ocp.args.Composite(**{STATE: ocp.args.StandardSave(state)}),
               force=force)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: dict) -> dict:
  """Restores `step` into the shapes, dtypes and shardings of `abstract_state`.

  Raises:
    ValueError: listing every parameter whose name or shape does not fit the model (through
      `vivit_jax.checkpoints.match_params`), instead of Orbax's first structural error.
  """
  check_fits(manager, step, abstract_state)
  target = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), abstract_state)
  restored = manager.restore(
      step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(target)}))
  return restored[STATE]


def restore_newest(manager: ocp.CheckpointManager, abstract_state: dict, *,
                   fall_back: bool = True) -> tuple[int | None, dict | None]:
  """Restores the newest step that restores completely; returns `(step, state)`.

  Args:
    manager: the run's manager.
    abstract_state: shapes, dtypes and shardings to restore into (see `restore`).
    fall_back: when the newest step is damaged, try older ones (training). False (evaluation):
      the newest step must restore.

  Returns:
    `(None, None)` when the run has no checkpoint.

  Raises:
    DamagedCheckpointError: the newest step is damaged and `fall_back` is False, or every step
      is damaged (nothing is renamed then: the run does not silently start again from step 0).
    CheckpointMismatchError: the checkpoint is readable but does not fit the model.
  """
  damaged = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      state = restore(manager, step, abstract_state)
    except CheckpointMismatchError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      # TensorStore, JSON and file errors of every kind: what matters is that it is unreadable.
      error = DamagedCheckpointError(
          f"checkpoint {manager.directory / str(step)} is damaged: {_one_line(e)}")
      if not fall_back:
        raise error from e
      damaged.append((step, error))
      continue
    for bad_step, error in damaged:
      aside = _set_aside(manager, bad_step)
      logging.warning("%s; set aside as %s, resuming from step %d", error, aside, step)
    if damaged:
      manager.reload()
    return step, state
  if damaged:
    raise DamagedCheckpointError(
        f"no checkpoint of {manager.directory} restores: "
        + "; ".join(str(error) for _, error in damaged))
  return None, None


def _one_line(error: Exception) -> str:
  text = first_line(error)
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _set_aside(manager: ocp.CheckpointManager, step: int) -> epath.Path:
  """Renames a damaged step to `<step>.damaged` (Orbax no longer lists it; nothing is lost)."""
  source = manager.directory / str(step)
  target = manager.directory / f"{step}{DAMAGED_SUFFIX}"
  n = 1
  while target.exists():
    n += 1
    target = manager.directory / f"{step}{DAMAGED_SUFFIX}{n}"
  if jax.process_index() == 0:
    source.rename(target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"vivit_jax set aside checkpoint {step}")
  return target


def check_fits(manager: ocp.CheckpointManager, step: int, abstract_state: dict) -> None:
  """Compares the stored parameter tree with the model's before restoring anything."""
  stored = manager.item_metadata(step)[STATE]
  found = _shapes(stored["params"])
  expected = _shapes(abstract_state["params"])
  if found == expected:
    return
  source = str(manager.directory / str(step))
  # match_params raises with the full list; a ValueError here is a fallback if it does not.
  checkpoints.match_params(expected, found, source=source)
  raise CheckpointMismatchError(source, note="the parameter trees differ")


def _shapes(tree: Any) -> dict:
  """Nested dict of `ShapeDtypeStruct`s: what match_params compares (names and shapes)."""
  def leaf(x):
    return jax.ShapeDtypeStruct(tuple(x.shape), np.dtype(x.dtype))
  return jax.tree.map(leaf, _as_dict(tree), is_leaf=lambda x: hasattr(x, "shape"))


def _as_dict(tree: Any) -> Any:
  if hasattr(tree, "items"):
    return {k: _as_dict(v) for k, v in tree.items()}
  return tree


class SigtermFlag:
  """Set when the process receives SIGTERM (preemption); the loop saves and stops.

  On several processes every host must agree on the step at which to stop, so there the
  loop uses `jax.experimental.multihost_utils.reached_preemption_sync_point` instead.
  """

  def __init__(self):
    self._event = threading.Event()
    self._previous = None
    # Several processes: JAX's preemption service owns SIGTERM; replacing its handler would
    # leave the hosts unable to agree on a step.
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping")
    self._event.set()

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      try:
        return multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # no preemption service (e.g. explicit initialize without it)
        return False
    return self._event.is_set()

  def restore_handler(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
