"""ViT image checkpoints in the three common containers, normalised to Scenic's names.

* Scenic msgpack train state (`params` or `optimizer/target`), as `load_scenic_checkpoint`.
* `vision_transformer` / AugReg `.npz`: parameters at the root with pre-Linen module names
  (`Transformer/encoderblock_0/MultiHeadDotProductAttention_1/...`, `MlpBlock_3`, `LayerNorm_2`)
  and the classifier called `head`.
* big_vision `.npz`: parameters under `params/` (or `opt/target/` in older files), a top-level
  `pos_embedding` that has no CLS slot (big_vision prepends the CLS token *after* adding
  position embeddings), optionally scanned layers (`Transformer/encoderblock/...` stacked on a
  leading depth axis).
The result always looks like a Scenic ViT: `embedding`, `cls` (if any),
`Transformer/{posembed_input, encoderblock_<i>, encoder_norm}`, `pre_logits`, `output_projection`.
A big_vision position embedding gets a zero CLS slot, which is exactly its behaviour (its CLS
token never receives a position embedding).
"""
import logging
from typing import Any

import numpy as np

from vivit_jax.checkpoints import files
from vivit_jax.checkpoints.errors import CheckpointFormatError, reading
from vivit_jax.checkpoints.scenic import load_scenic_checkpoint, resolve_checkpoint_file
from vivit_jax.checkpoints.tree import convert_pre_linen, flatten, unflatten

log = logging.getLogger(__name__)

CHECKPOINT_FORMATS = ("scenic", "big_vision", "vision_transformer")
_FORMAT_ALIASES = {"augreg": "vision_transformer", "vit": "vision_transformer"}


def _read_npz(path: str) -> dict[str, np.ndarray]:
  try:
    with files.open_binary(path) as f:
      with np.load(f, allow_pickle=False) as z:
        return {k: np.asarray(z[k]) for k in z.files}
  except Exception as e:  # pylint: disable=broad-except
    # BadZipFile, EOFError, ValueError (pickled objects refused), NotImplementedError (a zip
    # feature flag flipped), OSError, ...: all mean the file is damaged or not ours.
    raise CheckpointFormatError(
        f"{path} is not a readable .npz archive (truncated or corrupt?): {e}") from e


def _strip_container_prefix(flat: dict[str, np.ndarray]) -> tuple[dict, str]:
  """Returns (params, container name)."""
  for prefix, name in (("params/", "big_vision"), ("opt/target/", "big_vision (opt/target)")):
    sub = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
    if sub:
      return sub, name
  return flat, "vision_transformer"


def _unstack_scanned_layers(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """big_vision `scan_layers=True`: `Transformer/encoderblock/<p> [depth, ...]` → per layer."""
  scanned = "Transformer/encoderblock/"
  if not any(k.startswith(scanned) for k in flat):
    return flat
  out = {k: v for k, v in flat.items() if not k.startswith(scanned)}
  depths = {v.shape[0] for k, v in flat.items() if k.startswith(scanned)}
  if len(depths) != 1:
    raise CheckpointFormatError(f"scanned layers with different depths {sorted(depths)}")
  for k, v in flat.items():
    if k.startswith(scanned):
      for i in range(v.shape[0]):
        out[f"Transformer/encoderblock_{i}/{k[len(scanned):]}"] = v[i]
  return out


def vit_params_from_flat(flat: dict[str, np.ndarray], source: str) -> dict[str, Any]:
  """Normalises a flat ViT parameter dict of any container to Scenic's names."""
  flat, container = _strip_container_prefix(dict(flat))
  flat = _unstack_scanned_layers(flat)
  if "head/kernel" in flat:
    flat["output_projection/kernel"] = flat.pop("head/kernel")
    flat["output_projection/bias"] = flat.pop("head/bias")
  if "pos_embedding" in flat:  # big_vision: at top level, no CLS slot
    pe = flat.pop("pos_embedding")
    if pe.ndim != 3:
      raise CheckpointFormatError(f"{source}: pos_embedding has shape {pe.shape}, expected [1, n, d]")
    if "cls" in flat:
      pe = np.concatenate([np.zeros_like(pe[:, :1]), pe], axis=1)
    flat["Transformer/posembed_input/pos_embedding"] = pe
  params = convert_pre_linen(unflatten(flat))
  _check_is_vit(params, source)
  log.info("%s: %s ViT container, %d arrays", source, container, len(flatten(params)))
  return params


def _check_is_vit(params: dict[str, Any], source: str) -> None:
  enc = params.get("Transformer")
  ok = isinstance(enc, dict) and "encoderblock_0" in enc and "embedding" in params
  if not ok:
    raise CheckpointFormatError(
        f"{source} is not a ViT checkpoint: expected 'embedding/kernel' and "
        f"'Transformer/encoderblock_0/...' (optionally under 'params/' or 'opt/target/'); "
        f"found top-level names {sorted(params)[:20]}")


def load_vit_params(path: str, checkpoint_format: str = "auto") -> dict[str, Any]:
  """Loads a ViT image checkpoint from any of the three containers, with Scenic's names.

  Args:
    path: Scenic checkpoint file or directory, or an `.npz` file; local or `gs://`.
    checkpoint_format: 'auto' (look at the file), 'scenic', 'big_vision' or
      'vision_transformer' (alias 'augreg'). The file's content decides in the end: an `.npz`
      given as 'scenic' is still read as `.npz` (Scenic configs often say 'scenic' for both).
  """
  check_format(checkpoint_format)
  return load_pretrained_params(path, require_vit=True)


def check_format(checkpoint_format: str) -> None:
  """Validates `init_from.checkpoint_format` (the file's content decides how it is read)."""
  fmt = _FORMAT_ALIASES.get(checkpoint_format, checkpoint_format)
  if fmt not in CHECKPOINT_FORMATS + ("auto",):
    raise ValueError(f"config.init_from.checkpoint_format={checkpoint_format!r}; valid: "
                     f"{list(CHECKPOINT_FORMATS) + ['auto'] + list(_FORMAT_ALIASES)}")


def load_pretrained_params(path: str, require_vit: bool = False) -> dict[str, Any]:
  """Parameters of a pretrained ViT or ViViT from a Scenic msgpack checkpoint or a ViT `.npz`."""
  path = str(path)
  file = resolve_checkpoint_file(path)
  with files.open_binary(file) as f:
    is_npz = f.read(4) == files.NPZ_MAGIC
  if is_npz:
    flat = _read_npz(file)
    with reading(file, "ViT .npz checkpoint"):
      return vit_params_from_flat(flat, file)
  params = load_scenic_checkpoint(file)
  if "head" in params and "output_projection" not in params:
    params["output_projection"] = params.pop("head")
  if require_vit:
    _check_is_vit(params, file)
  return params
