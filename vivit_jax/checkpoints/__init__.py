"""Checkpoints: Scenic ViViT/ViT files, init_from surgery, Hugging Face interop, Orbax params.

Public API (names fixed; see docs/checkpoints.md):
  load_scenic_checkpoint(path) -> params
  init_from_pretrained(config, params) -> params
  import_hf(path) -> (model_config, params);  export_hf(model_config, params, out_dir)
  match_params(expected, found, *, source) -> params  (raises CheckpointMismatchError)
  save_params(params, path);  load_params(path) -> params
"""
from vivit_jax.checkpoints.errors import CheckpointFormatError, CheckpointMismatchError
from vivit_jax.checkpoints.params_io import load_params, save_params
from vivit_jax.checkpoints.scenic import load_scenic_checkpoint
from vivit_jax.checkpoints.surgery import init_from_pretrained
from vivit_jax.checkpoints.tree import flatten, match_params, tree_summary, unflatten
from vivit_jax.checkpoints.vit import load_vit_params


def import_hf(path, **kwargs):
  """See `vivit_jax.checkpoints.hf.import_hf` (needs torch/transformers only for .bin files)."""
  from vivit_jax.checkpoints import hf  # pylint: disable=g-import-not-at-top
  return hf.import_hf(path, **kwargs)


def export_hf(model_config, params, out_dir, **kwargs):
  """See `vivit_jax.checkpoints.hf.export_hf` (needs torch and transformers)."""
  from vivit_jax.checkpoints import hf  # pylint: disable=g-import-not-at-top
  return hf.export_hf(model_config, params, out_dir, **kwargs)


__all__ = ["CheckpointFormatError", "CheckpointMismatchError", "export_hf", "flatten",
           "import_hf", "init_from_pretrained", "load_params", "load_scenic_checkpoint",
           "load_vit_params", "match_params", "save_params", "tree_summary", "unflatten"]
