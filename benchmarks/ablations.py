r"""The paper's ablations in miniature: tokenisation, the four variants and the number of frames.

  python benchmarks/ablations.py --dataset=synthetic_order [--steps=800] [--json=FILE]
  python benchmarks/ablations.py --dataset=configs/k400_fe.py      # that config's dataset_configs
  python benchmarks/ablations.py --dataset=synthetic_order --only=variants --workdir=runs/abl

Trains and tests, one after the other with the real trainer (`vivit_jax.train.train_and_evaluate`),
small ViViTs (hidden 64, 4 heads, MLP 128, 2 layers; Model 2: 2 spatial + 2 temporal layers; 4×4
spatial patches per frame (`--patch_grid`), tubelets 2 frames long) from scratch with the training
recipe of `configs/synthetic.py` except the learning rate (AdamW at 5e-4 (`--learning_rate`; the
demo's 2e-3 leaves Models 2 and 3 at chance here), 50 warm-up steps, cosine decay,
batch 32), over the grid of the paper (Arnab et al., 2021):
  tokenisation  Model 1 on T frames: uniform sampling of T/2 frames (as many tokens as the
                tubelets), tubelets with random, filter-inflation and central-frame kernel init
                (paper Table 1);
  variants      Models 1-4 with central-frame tubelets, and Model 2 with its temporal transformer
                replaced by an average over tubelets (paper Table 2, last row) or, with 1-frame
                tubelets, over frames;
  frames        Model 1 with central-frame tubelets on T/4, T/2 and T frames at the dataset's
                stride and test views (on the synthetic sets: one central window) (paper Fig. 9,
                there with Model 2; see docs/ablations.md).
Model 1 with central-frame tubelets on T frames appears in all three groups and runs once. For each it reports the test top-1, the train top-1 over each quarter of the steps (how
fast it learnt), parameters, training FLOPs per clip (XLA's count
of the compiled train step, forward and backward, divided by the batch) and ms per train step (the
trainer's own timing, median over the run, compilation excluded) as one markdown table on stdout;
`--json` also writes every figure with the machine, date and command.

`--dataset` is 'synthetic_order' (default), 'synthetic_motion', or a config file (`FILE.py` or
`FILE.py:arg`) whose `dataset_configs` is used as it is (the training recipe stays the small one).
Each setting runs in `WORKDIR/<setting>`; a setting finished earlier with the same config is reused
(rerun after an interruption to finish the rest), a half-trained one resumes from its checkpoint.
`--tiny` shrinks everything (a 64-clip dataset, hidden 16, 2 steps) to check that the script runs.
"""
import argparse
import contextlib
import datetime
import functools
import hashlib
import importlib.util
import json
import logging
import os
import pathlib
import platform
import shutil
import statistics
import sys
import tempfile
import time

import jax
import ml_collections

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vivit_jax import config_check, config_lib, metrics, train  # pylint: disable=g-import-not-at-top
from vivit_jax.models import embed  # pylint: disable=g-import-not-at-top

RESULT_FILE = "ablation_cell.json"
DEFAULT_LEARNING_RATE = 5e-4
GROUPS = ("tokenisation", "variants", "frames")
# Kinetics-400 top-1 of ViViT-B in the paper (arXiv 2103.15691v2): Table 1 (input encoding, Model 1),
# Table 2 (model variants). Fig. 9 (number of frames, ViViT-L FE) has no numbers in the text.
PAPER_K400 = {
    "uniform frame sampling": 78.5, "tubelet (random init)": 73.2,
    "tubelet (filter inflation)": 77.6, "tubelet (central frame)": 79.2,
    "Model 1 spatio-temporal": 80.0, "Model 2 factorised encoder": 78.8,
    "Model 3 factorised self-attention": 77.4, "Model 4 factorised dot-product": 76.3,
    "Model 2 average-pool baseline": 75.8,
}
VARIANTS = (
    ("Model 1 spatio-temporal", "spacetime"),
    ("Model 2 factorised encoder", "factorized_encoder"),
    ("Model 3 factorised self-attention", "factorized_self_attention_block"),
    ("Model 4 factorised dot-product", "factorized_dot_product_attention"),
)
WIDTH = {"hidden_size": 64, "num_heads": 4, "mlp_dim": 128, "num_layers": 2}
TINY_WIDTH = {"hidden_size": 16, "num_heads": 2, "mlp_dim": 16, "num_layers": 1}


# --------------------------------------------------------------------------- configs


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """`FILE.py` or `FILE.py:arg` → its `get_config(arg)`."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"--dataset={spec}: no config file {path}")
  module_spec = importlib.util.spec_from_file_location("ablation_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def dataset_configs_of(spec: str, tiny: bool) -> ml_collections.ConfigDict:
  """`dataset_configs` for `--dataset`."""
  if spec in ("synthetic_order", "synthetic_motion"):
    task = spec.split("_", 1)[1]
    data_cfg = config_lib.synthetic_dataset(task)
    if tiny:  # Its own folder: a set generated with other settings is refused, not overwritten.
      data_cfg.base_dir += "_tiny"
      sizes = {"train": 64, "validation": 8, "test": 24}
      data_cfg.synthetic.update({f"num_{k}": v for k, v in sizes.items()})
      data_cfg.examples_per_subset = sizes
    return data_cfg
  if spec.endswith(".py") or ".py:" in spec:
    return load_config_file(spec).dataset_configs
  raise ValueError(f"--dataset={spec!r}: 'synthetic_order', 'synthetic_motion' or a config file "
                   "(configs/NAME.py[:arg])")


def small_model(attention_type: str, frame_size: int, width: dict, patch_grid: int, *,
                kernel_init: str | None = "central_frame_initializer",
                n_sampled_frames: int | None = None, average_pool: bool = False,
                tubelet_frames: int = 2) -> ml_collections.ConfigDict:
  """`config.model` of a small ViViT: `config_lib.vivit_model`'s layout at `width`.

  `patch_grid`² spatial patches per frame; tubelets `tubelet_frames` long, or uniform sampling
  of `n_sampled_frames` frames.
  """
  model = config_lib.vivit_model("B", attention_type)
  patch = max(1, frame_size // patch_grid)
  model.hidden_size = width["hidden_size"]
  layers = {k: width[k] for k in ("num_heads", "mlp_dim", "num_layers")}
  if attention_type == "factorized_encoder":
    model.spatial_transformer = dict(layers)
    model.temporal_transformer = dict(layers)
    model.attention_config.spatial_only_baseline = average_pool
  else:
    model.update(layers)
  if attention_type in ("factorized_self_attention_block", "factorized_dot_product_attention"):
    model.classifier = "gap"  # No CLS token in Models 3 and 4.
  if n_sampled_frames:
    model.patches.size = (patch, patch)
    model.temporal_encoding_config = {"method": "temporal_sampling",
                                      "n_sampled_frames": n_sampled_frames}
  else:
    model.patches.size = (patch, patch, tubelet_frames)
    model.temporal_encoding_config = {"method": "3d_conv", "kernel_init_method": kernel_init}
  return model


def grid(data_cfg: ml_collections.ConfigDict, width: dict, patch_grid: int = 4) -> list[dict]:
  """The settings: [{group, name, num_frames, model}] in table order."""
  frames, size = int(data_cfg.num_frames), int(data_cfg.crop_size)
  small = functools.partial(small_model, frame_size=size, width=width, patch_grid=patch_grid)
  if frames < 4 or frames % 4:
    raise ValueError(f"dataset_configs.num_frames={frames}: the grid needs a multiple of 4 "
                     "(T/4, T/2 and T frames; tubelets 2 frames long)")
  cells = [
      {"group": "tokenisation", "name": "uniform frame sampling", "num_frames": frames,
       "model": small("spacetime", n_sampled_frames=frames // 2)}]
  for name, init in (("random init", None), ("filter inflation", "average_frame_initializer"),
                     ("central frame", "central_frame_initializer")):
    cells.append({"group": "tokenisation", "name": f"tubelet ({name})", "num_frames": frames,
                  "model": small("spacetime", kernel_init=init)})
  for name, attention in VARIANTS:
    cells.append({"group": "variants", "name": name, "num_frames": frames,
                  "model": small(attention)})
  cells.append({"group": "variants", "name": "Model 2 average-pool baseline", "num_frames": frames,
                "model": small("factorized_encoder", average_pool=True)})
  # The same on 1-frame tokens: an average over frames (a 2-frame tubelet sees the order of its
  # own two frames, so averaging over tubelets still sees some order).
  cells.append({"group": "variants", "name": "Model 2 frame average (1-frame tokens)",
                "num_frames": frames,
                "model": small("factorized_encoder", average_pool=True, tubelet_frames=1)})
  for n in (frames // 4, frames // 2, frames):  # on Model 1 (the paper: Model 2)
    cells.append({"group": "frames", "name": f"Model 1 ({n} frames)", "num_frames": n,
                  "model": small("spacetime")})
  return cells


def cell_config(cell: dict, data_cfg: ml_collections.ConfigDict, steps: int, tiny: bool,
                learning_rate: float | None = None) -> ml_collections.ConfigDict:
  """configs/synthetic.py's training recipe, on `data_cfg` with `num_frames`, for `steps` steps."""
  config = load_config_file(str(REPO / "configs" / "synthetic.py"))
  config.experiment_name = "ablation"
  config.dataset_name = "ablation"
  config.dataset_configs = ml_collections.ConfigDict(data_cfg.to_dict())
  config.dataset_configs.num_frames = cell["num_frames"]
  config.model = cell["model"]
  config.num_training_steps = steps
  config.num_training_epochs = None
  config.lr_configs.warmup_steps = min(50, steps // 5)
  if learning_rate:
    config.lr_configs.base_learning_rate = learning_rate
  if tiny:
    config.batch_size = config.eval_batch_size = 8
  # One log every quarter of the run (the step-time median), one checkpoint, no validation.
  config.log_summary_steps = max(1, steps // 4)
  config.checkpoint_steps = steps
  config.log_eval_steps = None
  config_check.validate_config(config)
  return config


def config_key(config: ml_collections.ConfigDict) -> str:
  return hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- running


def tokens_of(config: ml_collections.ConfigDict) -> str:
  """'t×n': temporal positions × spatial tokens per position that the model sees."""
  model, data_cfg = config.model, config.dataset_configs
  fh, fw = tuple(model.patches.size)[:2]
  n = (data_cfg.crop_size // fh) * (data_cfg.crop_size // fw)
  if model.temporal_encoding_config.method == "temporal_sampling":
    t = len(embed.uniform_frame_indices(data_cfg.num_frames,
                                        model.temporal_encoding_config.n_sampled_frames))
  else:
    t = data_cfg.num_frames // model.patches.size[2]
  return f"{t}×{n}"


def train_accuracy_curve(workdir: pathlib.Path) -> list[list[float]]:
  """[[step, train top-1 over the steps since the previous log]] from `metrics.jsonl`."""
  return [[r["step"], r["train_accuracy"]] for r in metrics.read_metrics(str(workdir))
          if r.get("train_accuracy") is not None]


def run_cell(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Trains and tests one setting in `workdir` (or reuses its finished result)."""
  key = config_key(config)
  result_path, started_path = workdir / RESULT_FILE, workdir / "ablation_config.json"
  if result_path.exists():
    result = json.loads(result_path.read_text())
    if result.get("config_key") == key:
      return dict(result, reused=True, train_accuracy=train_accuracy_curve(workdir))
  if workdir.exists() and (not started_path.exists() or
                           json.loads(started_path.read_text()).get("config_key") != key):
    shutil.rmtree(workdir)  # Another setting's checkpoints would be resumed.
  workdir.mkdir(parents=True, exist_ok=True)
  started_path.write_text(json.dumps({"config_key": key, "config": config.to_dict()},
                                     default=str))
  start = time.time()
  with contextlib.redirect_stdout(sys.stderr):  # the trainer's summary line; stdout is the table
    state, summary = train.train_and_evaluate(config, str(workdir))
  wall = time.time() - start
  params = sum(x.size for x in jax.tree.leaves(state["params"]))
  rates = [r["steps_per_sec"] for r in metrics.read_metrics(str(workdir)) if "steps_per_sec" in r]
  flops = summary.get("flops_per_step")
  result = {
      "config_key": key,
      "top1": float(summary["test"]["top1"]),
      "num_test_videos": int(summary["test"].get("num_videos", 0)),
      "params": int(params),
      "train_gflops_per_clip": flops / config.batch_size / 1e9 if flops else None,
      "ms_per_step": 1000.0 / statistics.median(rates) if rates else None,
      "steps": int(summary["step"]),
      "wall_s": wall,
      "tokens": tokens_of(config),
  }
  result_path.write_text(json.dumps(result, indent=1))
  return dict(result, reused=False, train_accuracy=train_accuracy_curve(workdir))


def markdown(rows: list[dict], dataset: str) -> str:
  lines = [f"| group | setting | tokens (t×n) | top-1 on {dataset} (%) | train top-1 by quarter "
           "of the steps (%) | params | train GFLOPs per clip | ms per step | paper K400 top-1 (%) |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    flops = "—" if r["train_gflops_per_clip"] is None else f"{r['train_gflops_per_clip']:.4f}"
    ms = "—" if r["ms_per_step"] is None else f"{r['ms_per_step']:.0f}"
    paper = PAPER_K400.get(r["name"])
    curve = "/".join(f"{100 * acc:.0f}" for _, acc in r["train_accuracy"]) or "—"
    lines.append(f"| {r['group']} | {r['name']} | {r['tokens']} | {100 * r['top1']:.1f} | {curve} | "
                 f"{r['params'] / 1e3:.1f}k | {flops} | {ms} | "
                 f"{'—' if paper is None else paper} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dataset", default="synthetic_order")
  parser.add_argument("--steps", type=int, default=None, help="train steps per setting "
                      "(default 800; 2 with --tiny)")
  parser.add_argument("--json", default=None, help="also write the results here")
  parser.add_argument("--workdir", default=None,
                      help="one run folder per setting (default: a new temporary folder)")
  parser.add_argument("--only", default=None,
                      help=f"comma-separated groups {GROUPS} or setting names to run")
  parser.add_argument("--tiny", action="store_true", help="a few steps of tiny models on a "
                      "64-clip set: checks that the script works")
  parser.add_argument("--patch_grid", type=int, default=4,
                      help="frames are cut into N×N patches (default 4)")
  parser.add_argument("--learning_rate", type=float, default=DEFAULT_LEARNING_RATE,
                      help=f"base learning rate (default {DEFAULT_LEARNING_RATE}: at "
                      "configs/synthetic.py's 2e-3 Models 2 and 3 do not learn the order task "
                      "in 800 steps, docs/ablations.md)")
  parser.add_argument("--verbose", action="store_true", help="the trainer's INFO log on stderr")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
  steps = args.steps or (2 if args.tiny else 800)
  data_cfg = dataset_configs_of(args.dataset, args.tiny)
  cells = grid(data_cfg, TINY_WIDTH if args.tiny else WIDTH, args.patch_grid)
  if args.only:
    wanted = {w.strip() for w in args.only.split(",")}
    unknown = wanted - {c["group"] for c in cells} - {c["name"] for c in cells}
    if unknown:
      raise SystemExit(f"--only: unknown {sorted(unknown)}; groups {list(GROUPS)}, settings "
                       f"{[c['name'] for c in cells]}")
    cells = [c for c in cells if c["group"] in wanted or c["name"] in wanted]
  workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="vivit_ablations_"))
  started = datetime.datetime.now(datetime.timezone.utc)
  load_before = os.getloadavg()
  runs: dict[str, dict] = {}  # config key → result: equal settings run once
  rows = []
  for i, cell in enumerate(cells):
    config = cell_config(cell, data_cfg, steps, args.tiny, args.learning_rate)
    key = config_key(config)
    if key not in runs:
      folder = f"{len(runs):02d}_" + "".join(ch if ch.isalnum() else "_" for ch in cell["name"])
      print(f"[{i + 1}/{len(cells)}] {cell['group']}: {cell['name']} ({steps} steps) ...",
            file=sys.stderr, flush=True)
      runs[key] = run_cell(config, workdir / folder)
      r = runs[key]
      print(f"    top-1 {100 * r['top1']:.1f}%, {r['wall_s']:.0f} s"
            f"{' (reused)' if r['reused'] else ''}", file=sys.stderr, flush=True)
    rows.append(dict(runs[key], group=cell["group"], name=cell["name"],
                     num_frames=cell["num_frames"]))
  table = markdown(rows, args.dataset)
  print(table)
  total = time.time() - started.timestamp()
  meta = {
      "command": " ".join([os.path.basename(sys.executable), "benchmarks/ablations.py"] +
                          (argv if argv is not None else sys.argv[1:])),
      "dataset": args.dataset, "steps": steps, "tiny": args.tiny,
      "date_utc": started.strftime("%Y-%m-%d %H:%M"), "wall_s": total,
      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {jax.devices()[0].platform}",
      "load_average_before": load_before, "load_average_after": os.getloadavg(),
      "jax": jax.__version__, "workdir": str(workdir),
  }
  print(f"\n{len(runs)} runs, {total / 60:.1f} min; {meta['machine']}; load average "
        f"{load_before[0]:.1f} before, {meta['load_average_after'][0]:.1f} after; "
        f"{meta['date_utc']} UTC", flush=True)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
