"""Checks the paths a run needs before the mesh, the model or the data are built.

A wrong path should cost seconds, not a model build and a traceback: `check_paths` looks at
the workdir, the checkpoint the run will read (resume, `init_from` or `eval_checkpoint_path`)
and the dataset tables of the splits the mode reads, and raises `UserInputError` naming the
field or file and how to fix it. Remote paths (`gs://...`) are left to the readers.
"""
import os
import re

import ml_collections

from vivit_jax.checkpoints.files import is_remote
from vivit_jax.data import fields
from vivit_jax.errors import UserInputError

# What shipped configs hold where the user must put a real path.
_PLACEHOLDER = re.compile(r"(^|/)path_to_|^/path/to/")


def is_placeholder(path: str) -> bool:
  return bool(_PLACEHOLDER.search(str(path)))


def _has_checkpoints(workdir: str) -> bool:
  folder = os.path.join(workdir, "checkpoints")
  return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


def _check_checkpoint_path(field: str, path: str, unset_hint: str) -> None:
  if is_placeholder(path):
    raise UserInputError(
        f"config.{field}={path!r} is the config file's placeholder. Set it: "
        f"--config.{field}=/path/to/checkpoint, or {unset_hint}")
  if not is_remote(path) and not os.path.exists(path):
    raise UserInputError(f"config.{field}: {path} does not exist. Fix the path, or {unset_hint}")


def _needed_splits(config: ml_collections.ConfigDict, mode: str) -> list[str]:
  splits = []
  if mode != "eval":
    splits.append("train")
    if config.get("log_eval_steps"):
      splits.append("validation")
  if mode != "train":
    splits.append("test")
  return splits


def _check_tables(config: ml_collections.ConfigDict, mode: str) -> None:
  data_cfg = config.dataset_configs
  if data_cfg.get("synthetic") or fields.is_device_dataset(config):
    return  # generated on first use, or made on the devices (no tables read)
  if data_cfg.get("tfds_name"):
    from vivit_jax.data import tfds_source  # pylint: disable=g-import-not-at-top  (TFDS)
    try:
      tfds_source.open_builder(data_cfg)
    except (FileNotFoundError, ValueError) as e:
      raise UserInputError(str(e)) from None
    return
  if data_cfg.get("tables") is None:
    return
  base_dir = data_cfg.get("base_dir") or ""
  if base_dir and not is_remote(base_dir) and not os.path.isdir(base_dir):
    raise UserInputError(
        f"config.dataset_configs.base_dir: {base_dir} is not a folder. Prepare the dataset "
        "there (docs/data.md: `python -m vivit_jax.tools.make_tfrecords`), point "
        "--config.dataset_configs.base_dir at it, or set $VIVIT_DATA_DIR")
  from vivit_jax.data import tfrecord  # pylint: disable=g-import-not-at-top  (TensorFlow)
  for split in _needed_splits(config, mode):
    spec = data_cfg.tables.get(split)
    if spec is None:
      raise UserInputError(f"config.dataset_configs.tables has no {split!r} entry, which "
                           f"--mode={mode} reads")
    if is_remote(base_dir) or is_remote(str(spec)):
      continue
    try:
      tfrecord.expand_file_spec(base_dir, spec)
    except (FileNotFoundError, ValueError) as e:
      raise UserInputError(f"config.dataset_configs.tables.{split}: {e}") from None


def check_paths(config: ml_collections.ConfigDict, workdir: str, mode: str) -> None:
  """Raises `UserInputError` for the first path of the run that cannot work."""
  workdir = str(workdir)
  if not is_remote(workdir):
    if os.path.exists(workdir) and not os.path.isdir(workdir):
      raise UserInputError(f"--workdir={workdir} is a file; give a folder (it is created if "
                           "missing)")
    parent = os.path.dirname(os.path.abspath(workdir))
    while not os.path.exists(parent):
      parent = os.path.dirname(parent)
    if not os.access(parent if not os.path.isdir(workdir) else workdir, os.W_OK):
      raise UserInputError(f"--workdir={workdir}: {parent} is not writable")
  resumes = not is_remote(workdir) and _has_checkpoints(workdir)
  resumes = resumes and (mode == "eval" or config.get("checkpoint", True))
  if mode == "eval" and not resumes:
    path = config.get("eval_checkpoint_path")
    if not path:
      raise UserInputError(
          f"--mode=eval: {workdir} holds no checkpoint and config.eval_checkpoint_path is not "
          "set. Give --config.eval_checkpoint_path=/path/to/checkpoint or a --workdir of a run")
    _check_checkpoint_path("eval_checkpoint_path", path, "evaluate a run's --workdir")
  init_path = (config.get("init_from") or {}).get("checkpoint_path")
  if mode != "eval" and not resumes and init_path:
    _check_checkpoint_path("init_from.checkpoint_path", init_path,
                           "train from scratch with --config.init_from.checkpoint_path=None")
  _check_tables(config, mode)
