r"""Converts checkpoints between Scenic, ViT image containers, Hugging Face and Orbax.

  python -m vivit_jax.tools.convert_checkpoint --from=scenic --to=orbax \
      --input=gs://.../vivit_base_k400/checkpoint --output=/tmp/k400_b16x2 [--config=configs/x.py]
  python -m vivit_jax.tools.convert_checkpoint --from=vit --to=orbax \
      --input=ViT-B_16.npz --output=/tmp/vivit_init --config=configs/x.py   # init_from surgery
  python -m vivit_jax.tools.convert_checkpoint --from=hf --to=orbax --input=hf_dir --output=out
  python -m vivit_jax.tools.convert_checkpoint --from=scenic --to=hf --input=ckpt_dir \
      --output=hf_out --num_frames=32 --image_size=224

`--config` is a Python file with `get_config()` (or a .json): with it, loaded weights are checked
name by name and shape by shape against the model it describes, and `--from=vit` runs the config's
`init_from` surgery (with `--input` as the checkpoint) to produce the ViViT's parameters.
Prints a summary: every array (path, shape, dtype) and the parameter count.
"""
import argparse
import importlib.util
import json
import os
import sys

import jax
import ml_collections
from flax.core import meta

from vivit_jax import checkpoints as ckpt
from vivit_jax import config_facts
from vivit_jax.checkpoints import hf
from vivit_jax.models import build_model

SOURCES = ("scenic", "hf", "vit")
TARGETS = ("orbax", "hf")
MODEL_CONFIG_FILE = "vivit_model_config.json"


def load_config(path: str) -> ml_collections.ConfigDict:
  """A config from a Python file with `get_config()` (`file.py:arg` passes `arg`) or a JSON file."""
  arg = None
  if ".py:" in path:
    path, arg = path.split(".py:", 1)
    path += ".py"
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--config file not found: {path}")
  if path.endswith(".json"):
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  spec = importlib.util.spec_from_file_location("_vivit_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"--config {path} has no get_config()")
  return module.get_config() if arg is None else module.get_config(arg)


def _num_classes(config, params=None) -> int:
  """The config's output width; a config without one takes the checkpoint's head."""
  ds = config.get("dataset_configs") or {}
  if ds.get("num_classes") is None and not ds.get("class_splits") and params is not None \
      and "output_projection" in params:
    return int(params["output_projection"]["bias"].shape[0])
  return config_facts.num_classes(config)


def model_params(config, num_classes: int, *, shapes_only: bool):
  """Fresh parameters of the config's model (or just their shapes), unboxed."""
  model = build_model(config.model, num_classes, dtype=config.get("model_dtype_str"))
  init = config_facts.init_fn(model, config_facts.input_shape(config))
  rng = jax.random.PRNGKey(int(config.get("rng_seed", 0)))
  tree = jax.eval_shape(init, rng) if shapes_only else jax.jit(init)(rng)
  return meta.unbox(tree)


def _produce(args, config):
  """Returns (params, model_config or None, description)."""
  if args.source == "hf":
    model_config, params = ckpt.import_hf(args.input)
    return params, model_config, "Hugging Face VivitForVideoClassification"
  if args.source == "scenic":
    params = ckpt.load_scenic_checkpoint(args.input)
    if config is not None:
      expected = model_params(config, _num_classes(config, params), shapes_only=True)
      params = ckpt.match_params(expected, params, source=args.input)
    return params, config, "Scenic checkpoint"
  if config is None:
    return ckpt.load_vit_params(args.input, args.checkpoint_format), None, "ViT image checkpoint"
  with config.unlocked():
    config.init_from = config.get("init_from") or ml_collections.ConfigDict()
    config.init_from.checkpoint_path = args.input
    if args.checkpoint_format != "auto":
      config.init_from.checkpoint_format = args.checkpoint_format
  fresh = model_params(config, _num_classes(config), shapes_only=False)
  params = ckpt.init_from_pretrained(config, fresh)
  return params, config, "ViViT initialised from a ViT image checkpoint (init_from)"


def run(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--from", dest="source", required=True, choices=SOURCES)
  p.add_argument("--to", dest="target", required=True, choices=TARGETS)
  p.add_argument("--input", required=True)
  p.add_argument("--output", required=True)
  p.add_argument("--config", default=None, help="Python config file (get_config()) or .json")
  p.add_argument("--checkpoint_format", default="auto",
                 help="for --from=vit: auto|scenic|big_vision|vision_transformer")
  p.add_argument("--num_frames", type=int, default=None, help="for --to=hf without --config")
  p.add_argument("--image_size", type=int, default=None, help="for --to=hf without --config")
  p.add_argument("--force", action="store_true", help="overwrite an existing --output (orbax)")
  args = p.parse_args(argv)

  if args.source == "hf" and args.target == "hf":
    p.error("--from=hf --to=hf: nothing to convert")
  config = load_config(args.config) if args.config else None
  params, model_config, what = _produce(args, config)
  print(f"read {what}: {args.input}")
  print(ckpt.tree_summary(params))
  if args.target == "orbax":
    if os.path.exists(args.output) and not args.force:
      raise FileExistsError(f"--output {args.output} exists (use --force to overwrite)")
    out = ckpt.save_params(params, args.output, force=args.force)
    if model_config is not None:
      model_cfg = model_config.model if "model" in model_config else model_config
      with open(os.path.join(out, MODEL_CONFIG_FILE), "w") as f:
        f.write(model_cfg.to_json(indent=2))
    print(f"wrote params-only Orbax checkpoint: {out}")
  else:
    if model_config is None:
      model_config = hf.infer_model_config(params)
    out = ckpt.export_hf(model_config, params, args.output, num_frames=args.num_frames,
                         image_size=args.image_size)
    print(f"wrote Hugging Face VivitForVideoClassification: {out}")
  return 0


def main():
  sys.exit(run())


if __name__ == "__main__":
  main()
