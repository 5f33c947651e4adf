"""Hugging Face `VivitForVideoClassification` ⇄ our Model 1 (spacetime attention, CLS token).

Layout facts (transformers' modeling_vivit.py):
  * input `pixel_values [b, t, c, h, w]`; `tubelet_size = [ft, fh, fw]`; the Conv3d weight is
    `[d, c, ft, fh, fw]` and tokens come out time-major (t', h', w'), as ours;
  * Linear weights are `[out, in]`; q/k/v/o are `[heads*head_dim]`-wide, ours `[d, heads, head_dim]`;
  * the classifier reads the CLS token after the final LayerNorm (our classifier='token');
  * activation `hidden_act`: our MLP uses the tanh-approximated GELU (flax's `nn.gelu`), which is
    HF's 'gelu_fast' / 'gelu_new' / 'gelu_pytorch_tanh'. An exact-'gelu' model is refused on import
    (its logits would differ by ~1e-3) unless `allow_gelu_mismatch=True`; export writes 'gelu_fast'
    (what google/vivit-b-16x2-kinetics400 uses);
  * `layer_norm_eps` must be 1e-6 (ours), `qkv_bias` True.
Both the current parameter names (`vivit.layers.<i>.attention.q_proj`) and the older ones the hub
checkpoints use (`vivit.encoder.layer.<i>.attention.attention.query`) are read.
"""
import json
import logging
import os
import re
import shutil
import tempfile
from typing import Any, Mapping

import ml_collections
import numpy as np

from vivit_jax.checkpoints.errors import CheckpointFormatError, CheckpointMismatchError, reading
from vivit_jax.checkpoints.tree import flatten, unboxed_flat, unflatten

log = logging.getLogger(__name__)

TANH_GELUS = ("gelu_fast", "gelu_new", "gelu_pytorch_tanh", "gelu_python_tanh")
_OLD_NAMES = (  # hub checkpoints (transformers < 5) → current names
    (r"\.encoder\.layer\.", ".layers."),
    (r"\.attention\.attention\.(query|key|value)\.",
     lambda m: f".attention.{m.group(1)[0]}_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
)
_LAYER = "vivit.layers.{i}."


def _modernise(name: str) -> str:
  for pattern, repl in _OLD_NAMES:
    name = re.sub(pattern, repl, name)
  return name


# ----------------------------------------------------------------------------- reading
def _read_state_dict(path: str) -> dict[str, np.ndarray]:
  if os.path.isdir(path):
    names = os.listdir(path)
    if "model.safetensors" in names:
      return _read_safetensors([os.path.join(path, "model.safetensors")])
    if "model.safetensors.index.json" in names:
      with open(os.path.join(path, "model.safetensors.index.json")) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
      return _read_safetensors([os.path.join(path, s) for s in shards])
    if "pytorch_model.bin" in names:
      return _read_torch_bin(os.path.join(path, "pytorch_model.bin"))
    raise CheckpointFormatError(
        f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
  if path.endswith(".safetensors"):
    return _read_safetensors([path])
  if path.endswith(".bin") or path.endswith(".pt"):
    return _read_torch_bin(path)
  raise CheckpointFormatError(f"{path}: expected a Hugging Face model directory or a "
                              ".safetensors / pytorch_model.bin file")


def _read_safetensors(paths: list[str]) -> dict[str, np.ndarray]:
  from safetensors import SafetensorError  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  out = {}
  for p in paths:
    try:
      out.update(load_file(p))
    except (SafetensorError, OSError) as e:
      raise CheckpointFormatError(f"{p} is not a readable safetensors file: {e}") from e
    except TypeError:  # bfloat16 has no numpy dtype: go through torch
      from safetensors.torch import load_file as load_torch  # pylint: disable=g-import-not-at-top
      out.update({k: v.float().numpy() for k, v in load_torch(p).items()})
  return out


def _read_torch_bin(path: str) -> dict[str, np.ndarray]:
  import torch  # pylint: disable=g-import-not-at-top
  # weights_only: tensors and containers only, no arbitrary objects are unpickled.
  sd = torch.load(path, map_location="cpu", weights_only=True)
  return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}


def _as_numpy_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  out = {}
  for k, v in state_dict.items():
    if hasattr(v, "detach"):  # torch tensor
      v = v.detach().cpu()
      v = v.float().numpy() if v.is_floating_point() else v.numpy()
    out[k] = np.asarray(v)
  return out


# ----------------------------------------------------------------------------- import
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _download(repo_id: str) -> str:
  """A hub model id (e.g. google/vivit-b-16x2-kinetics400) → local snapshot (uses the HF cache)."""
  try:
    from huggingface_hub import snapshot_download  # pylint: disable=g-import-not-at-top
    return snapshot_download(repo_id, allow_patterns=["config.json", "*.safetensors",
                                                      "*.safetensors.index.json"])
  except Exception as e:  # offline, unknown repo, ...: say what was tried
    raise CheckpointFormatError(
        f"{repo_id!r} is neither a local path nor a downloadable Hugging Face model: {e}") from e

def hf_config_to_model_config(hf: Mapping[str, Any], *, allow_gelu_mismatch: bool = False,
                              source: str = "") -> ml_collections.ConfigDict:
  """VivitConfig (as a dict) → our `model` config (+ `num_classes`, `video_size`)."""
  act = hf.get("hidden_act", "gelu_fast")
  if act not in TANH_GELUS:
    msg = (f"{source}: hidden_act={act!r}; vivit_jax's MLP uses the tanh-approximated GELU "
           f"(HF {list(TANH_GELUS)})")
    if not allow_gelu_mismatch:
      raise ValueError(msg + "; logits would differ (~1e-3). Pass allow_gelu_mismatch=True "
                       "to import anyway (fine-tuning absorbs the difference)")
    log.warning("%s; importing anyway", msg)
  eps = float(hf.get("layer_norm_eps", 1e-6))
  if abs(eps - 1e-6) > 1e-12:
    raise ValueError(f"{source}: layer_norm_eps={eps}; vivit_jax's LayerNorms use 1e-6")
  if not hf.get("qkv_bias", True):
    raise ValueError(f"{source}: qkv_bias=False is not supported (Scenic ViViT has q/k/v biases)")
  ft, fh, fw = (int(s) for s in hf.get("tubelet_size", (2, 16, 16)))
  size = hf.get("image_size", 224)
  h, w = (size, size) if isinstance(size, int) else tuple(size)
  return ml_collections.ConfigDict(dict(
      attention_config=dict(type="spacetime"),
      classifier="token",
      hidden_size=int(hf.get("hidden_size", 768)),
      num_heads=int(hf.get("num_attention_heads", 12)),
      num_layers=int(hf.get("num_hidden_layers", 12)),
      mlp_dim=int(hf.get("intermediate_size", 3072)),
      patches=dict(size=(fh, fw, ft)),
      temporal_encoding_config=dict(method="3d_conv"),
      representation_size=None,
      dropout_rate=float(hf.get("hidden_dropout_prob", 0.0)),
      attention_dropout_rate=float(hf.get("attention_probs_dropout_prob", 0.0)),
      stochastic_droplayer_rate=0.0,
      num_classes=None,
      video_size=(int(hf.get("num_frames", 32)), int(h), int(w)),
  ))


def _weight_table(num_layers: int, d: int, heads: int) -> list[tuple]:
  """Every tensor of a Model 1: `(hf name, our flat name, hf → ours, ours → hf)`.

  The one mapping both directions use. HF Linear weights are `[out, in]`, ours `[in, out]`;
  HF's q/k/v/o are `heads*head_dim` wide, ours `[d, heads, head_dim]`; HF's Conv3d weight is
  `[d, c, ft, fh, fw]`, ours `[ft, fh, fw, c, d]`.
  """
  hd = d // heads
  same = (lambda x: x, lambda x: x)
  linear = (lambda w: w.T, lambda k: k.T)
  rows = [
      ("vivit.embeddings.cls_token", "cls", *same),
      ("vivit.embeddings.position_embeddings", "Transformer/posembed_input/pos_embedding", *same),
      ("vivit.embeddings.patch_embeddings.projection.weight", "embedding/kernel",
       lambda w: w.transpose(2, 3, 4, 1, 0), lambda k: k.transpose(4, 3, 0, 1, 2)),
      ("vivit.embeddings.patch_embeddings.projection.bias", "embedding/bias", *same),
      ("vivit.layernorm.weight", "Transformer/encoder_norm/scale", *same),
      ("vivit.layernorm.bias", "Transformer/encoder_norm/bias", *same),
      ("classifier.weight", "output_projection/kernel", *linear),
      ("classifier.bias", "output_projection/bias", *same),
  ]
  for i in range(num_layers):
    hf, ours = _LAYER.format(i=i), f"Transformer/encoderblock_{i}/"
    attn = ours + "MultiHeadDotProductAttention_0/"
    for hf_ln, our_ln in (("layernorm_before", "LayerNorm_0"), ("layernorm_after", "LayerNorm_1")):
      rows.append((f"{hf}{hf_ln}.weight", f"{ours}{our_ln}/scale", *same))
      rows.append((f"{hf}{hf_ln}.bias", f"{ours}{our_ln}/bias", *same))
    for name in ("query", "key", "value"):
      rows.append((f"{hf}attention.{name[0]}_proj.weight", f"{attn}{name}/kernel",
                   lambda w: w.T.reshape(d, heads, hd), lambda k: k.reshape(k.shape[0], -1).T))
      rows.append((f"{hf}attention.{name[0]}_proj.bias", f"{attn}{name}/bias",
                   lambda b: b.reshape(heads, hd), lambda b: b.reshape(-1)))
    rows.append((f"{hf}attention.o_proj.weight", f"{attn}out/kernel",
                 lambda w: w.T.reshape(heads, hd, d), lambda k: k.reshape(-1, k.shape[-1]).T))
    rows.append((f"{hf}attention.o_proj.bias", f"{attn}out/bias", *same))
    for j, fc in enumerate(("fc1", "fc2")):
      rows.append((f"{hf}mlp.{fc}.weight", f"{ours}MlpBlock_0/Dense_{j}/kernel", *linear))
      rows.append((f"{hf}mlp.{fc}.bias", f"{ours}MlpBlock_0/Dense_{j}/bias", *same))
  return rows


def state_dict_to_params(sd: Mapping[str, np.ndarray], model_cfg: ml_collections.ConfigDict,
                         source: str) -> dict[str, Any]:
  """HF tensors → our nested params (every HF tensor must be used)."""
  sd = {_modernise(k): v for k, v in sd.items()}
  sd = {k: v for k, v in sd.items() if not k.startswith("vivit.pooler.")}  # unused by the classifier
  table = _weight_table(model_cfg.num_layers, model_cfg.hidden_size, model_cfg.num_heads)
  missing = [hf for hf, *_ in table if hf not in sd]
  if missing:
    raise CheckpointFormatError(f"{source}: missing tensor {missing[0]!r}"
                                + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
  flat = {ours: np.ascontiguousarray(to_ours(sd[hf]), dtype=np.float32)
          for hf, ours, to_ours, _ in table}
  # config.json and the tensors must agree, or the returned config would not build this model.
  d = model_cfg.hidden_size
  expected = {"embedding/bias": (d,), "Transformer/encoder_norm/scale": (d,)}
  for i in range(model_cfg.num_layers):
    mlp = f"Transformer/encoderblock_{i}/MlpBlock_0/"
    expected[mlp + "Dense_0/kernel"] = (d, model_cfg.mlp_dim)
    expected[mlp + "Dense_1/kernel"] = (model_cfg.mlp_dim, d)
  wrong = [(k, shape, tuple(flat[k].shape)) for k, shape in expected.items()
           if tuple(flat[k].shape) != shape]
  if wrong:
    raise CheckpointMismatchError(source, shape_mismatches=wrong,
                                  note="(config.json and the weights disagree)")
  unused = sorted(set(sd) - {hf for hf, *_ in table})
  if unused:
    raise CheckpointMismatchError(source, unused=unused,
                                  note="(tensors that a ViViT Model 1 with this config has no "
                                       "place for: more layers than config.num_hidden_layers?)")
  return unflatten(flat)


def import_hf(path, *, hf_config: Mapping[str, Any] | None = None,
              allow_gelu_mismatch: bool = False) -> tuple[ml_collections.ConfigDict, dict]:
  """Imports a Hugging Face `VivitForVideoClassification` into our Model 1.

  Args:
    path: a model directory (`config.json` + `model.safetensors`, sharded safetensors or
      `pytorch_model.bin`), a `.safetensors` file, a hub id such as
      'google/vivit-b-16x2-kinetics400' (downloaded through huggingface_hub's cache when it is
      not a local path), or an in-memory state dict (tensors or arrays).
    hf_config: the VivitConfig as a dict (or a `transformers.VivitConfig`); read from
      `path/config.json` when omitted.
    allow_gelu_mismatch: import a model trained with exact GELU anyway.

  Returns:
    `(model_config, params)`: `model_config` is the `model` part of a Scenic-style config for
    `vivit_jax.models.build_model`, plus two fields of ours: `num_classes` and
    `video_size = (frames, height, width)` the position embeddings were made for.
    `params` are nested dicts of float32 numpy arrays with Scenic names.
  """
  if isinstance(path, Mapping):
    source, sd = "<state dict>", _as_numpy_state_dict(path)
  else:
    source = str(path)
    if not os.path.exists(source) and _HUB_ID.fullmatch(source):
      source = _download(source)
    if not os.path.exists(source):
      raise CheckpointFormatError(f"Hugging Face checkpoint not found: {source}")
    with reading(source, "Hugging Face checkpoint"):
      sd = _read_state_dict(source)
  if hf_config is None:
    cfg_file = os.path.join(source if os.path.isdir(source) else os.path.dirname(source),
                            "config.json")
    if not os.path.isfile(cfg_file):
      raise CheckpointFormatError(f"{source}: no config.json beside the weights; pass hf_config=")
    with reading(cfg_file, "Hugging Face config.json"), open(cfg_file) as f:
      hf_config = json.load(f)
  elif hasattr(hf_config, "to_dict"):
    hf_config = hf_config.to_dict()
  with reading(source, "Hugging Face ViViT checkpoint"):
    if not isinstance(hf_config, Mapping):
      raise CheckpointFormatError(f"{source}: config.json holds a {type(hf_config).__name__}, "
                                  "not an object")
    if hf_config.get("model_type", "vivit") != "vivit":
      raise CheckpointFormatError(f"{source}: model_type={hf_config.get('model_type')!r}, "
                                  "expected 'vivit' (VivitForVideoClassification)")
    model_cfg = hf_config_to_model_config(hf_config, allow_gelu_mismatch=allow_gelu_mismatch,
                                   source=source)
    params = state_dict_to_params(sd, model_cfg, source)
    model_cfg.num_classes = int(params["output_projection"]["bias"].shape[0])
  return model_cfg, params


# ----------------------------------------------------------------------------- export
def params_to_state_dict(params: Mapping[str, Any], num_layers: int) -> dict[str, np.ndarray]:
  """Our Model 1 params → HF tensors (current transformers names)."""
  flat = {k: np.asarray(v, dtype=np.float32) for k, v in unboxed_flat(params).items()}
  d, heads, _ = flat["Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"].shape
  return {hf: np.ascontiguousarray(to_hf(flat[ours]))
          for hf, ours, _, to_hf in _weight_table(num_layers, d, heads)}


def _video_size(config, num_frames, image_size) -> tuple[int, int, int]:
  model_cfg = config.model if "model" in config else config
  ds = config.get("dataset_configs") if "model" in config else None
  vs = model_cfg.get("video_size")
  if num_frames is None:
    num_frames = (ds or {}).get("num_frames") or (vs[0] if vs else None)
  if image_size is None:
    crop = (ds or {}).get("crop_size")
    image_size = crop or ((vs[1], vs[2]) if vs else None)
  if num_frames is None or image_size is None:
    raise ValueError("export_hf needs the input size the position embeddings were made for: "
                     "pass num_frames= and image_size=, or a full config with "
                     "dataset_configs.num_frames and dataset_configs.crop_size")
  h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
  return int(num_frames), int(h), int(w)


def export_hf(config, params: Mapping[str, Any], out_dir: str, *, num_frames: int | None = None,
              image_size: int | tuple[int, int] | None = None) -> str:
  """Writes our Model 1 as a `transformers` VivitForVideoClassification directory.

  Args:
    config: the `model` config (as from `import_hf`), or a full config (its `model` and
      `dataset_configs.num_frames` / `crop_size` are used).
    params: our parameters (arrays or flax boxes).
    out_dir: created (written to a temporary sibling, then renamed; must not exist yet).
    num_frames, image_size: input size; default from the config (see above).

  Returns: `out_dir`. Load it with `VivitForVideoClassification.from_pretrained(out_dir)`.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  model_cfg = config.model if "model" in config else config
  kind = model_cfg.get("attention_config", {}).get("type", "spacetime")
  problems = []
  if kind != "spacetime":
    problems.append(f"attention_config.type={kind!r} (HF has only 'spacetime', Model 1)")
  if model_cfg.get("classifier", "gap") != "token":
    problems.append(f"classifier={model_cfg.get('classifier')!r} (HF classifies the CLS token: 'token')")
  if model_cfg.get("representation_size") is not None:
    problems.append("representation_size is set (HF has no pre_logits layer)")
  if model_cfg.get("temporal_encoding_config", {}).get("method", "3d_conv") != "3d_conv":
    problems.append("temporal_encoding_config.method must be '3d_conv' (tubelets)")
  if problems:
    raise ValueError("export_hf: this model cannot be expressed as VivitForVideoClassification: "
                     + "; ".join(problems))
  t, h, w = _video_size(config, num_frames, image_size)
  fh, fw, ft = tuple(model_cfg.patches.size)
  num_classes = int(np.shape(params["output_projection"]["bias"])[0])
  channels = int(np.shape(params["embedding"]["kernel"])[3])
  hf_cfg = transformers.VivitConfig(
      image_size=[h, w] if h != w else h, num_frames=t, tubelet_size=[ft, fh, fw],
      num_channels=channels, hidden_size=int(model_cfg.hidden_size), num_hidden_layers=int(model_cfg.num_layers),
      num_attention_heads=int(model_cfg.num_heads), intermediate_size=int(model_cfg.mlp_dim),
      hidden_act="gelu_fast", layer_norm_eps=1e-6, qkv_bias=True,
      hidden_dropout_prob=float(model_cfg.get("dropout_rate", 0.0)),
      attention_probs_dropout_prob=float(model_cfg.get("attention_dropout_rate", 0.0)),
      num_labels=num_classes)
  model = transformers.VivitForVideoClassification(hf_cfg)
  sd = {k: torch.from_numpy(v) for k, v in params_to_state_dict(params, model_cfg.num_layers).items()}
  expected = model.state_dict()
  bad = [(k, tuple(expected[k].shape), tuple(v.shape)) for k, v in sd.items()
         if k in expected and tuple(expected[k].shape) != tuple(v.shape)]
  missing, unused = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
  if bad or missing or unused:
    raise CheckpointMismatchError(f"export to {out_dir}", bad, missing, unused,
                                  note=f"(input size {t}x{h}x{w}: does it match the params?)")
  model.load_state_dict(sd, strict=True)
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir):
    raise FileExistsError(f"{out_dir} exists; export_hf does not overwrite")
  os.makedirs(os.path.dirname(out_dir), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".tmp-", dir=os.path.dirname(out_dir))
  try:
    model.save_pretrained(tmp, safe_serialization=True)
    os.rename(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  log.info("exported HF VivitForVideoClassification to %s", out_dir)
  return out_dir


def infer_model_config(params: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """Model 1 `model` config read off the parameter shapes (for export without a config file)."""
  flat = flatten(dict(params))
  if "cls" not in flat or "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel" \
      not in flat or np.ndim(flat.get("embedding/kernel")) != 5:
    raise ValueError("cannot infer a Model 1 config (spacetime, CLS token, tubelets) from these "
                     "params; pass the config")
  d, heads, _ = np.shape(flat["Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"])
  ft, fh, fw, _, _ = np.shape(flat["embedding/kernel"])
  layers = len({k.split("/")[1] for k in flat if k.startswith("Transformer/encoderblock_")})
  return ml_collections.ConfigDict(dict(
      attention_config=dict(type="spacetime"), classifier="token", hidden_size=int(d),
      num_heads=int(heads), num_layers=layers,
      mlp_dim=int(np.shape(flat["Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"])[1]),
      patches=dict(size=(int(fh), int(fw), int(ft))), temporal_encoding_config=dict(method="3d_conv"),
      representation_size=None))
