r"""Runs a ViViT on video files and prints the top classes of each.

  python -m vivit_jax.tools.predict --config=configs/k400_fe.py \
      --checkpoint=/ckpts/kinetics_400/vivit_base_16x2_fe/checkpoint \
      [--label_map=kinetics400_label_map.json] [--json] [--top_k=5] [--single_view] VIDEO...

Each video is decoded with PyAV at `--fps` (default 25), its short side resized to the config's
`dataset_configs.min_resize`, stored as JPEG frames as `tools/make_tfrecords` stores a dataset, and
processed by the pipeline's own test-split function: the same frame sampling, crops and scaling as
`--mode=eval` (num_test_clips × 3 crops with the Kinetics configs; `--single_view`: one central clip
and crop). Logits of the views are averaged as `config.eval_average` says.

`--checkpoint`: our run folder (the newest Orbax checkpoint in WORKDIR/checkpoints), a params-only
Orbax folder (`convert_checkpoint --to=orbax`), a Scenic checkpoint (file or folder of
`checkpoint_<step>`), or a Hugging Face folder (config.json + model.safetensors). It is checked
against the config's model, parameter by parameter, before any video is read.

Output: per video, its top-k classes and probabilities (class names from `--label_map`, a JSON
{name: index} as `make_tfrecords` writes or a list of names; else the class index). `--json`: one
JSON object per line, `{"video", "views", "top_k": [{"index", "label", "probability"}]}` (with
`class_splits`, `top_k` is {split name: list}); a video that cannot be read gives
`{"video", "error"}`, is reported on stderr and the others go on. Exit status 1 if any failed.

From Python: `vivit_jax.predict(videos, config=..., checkpoint=...)` returns the same dicts.
"""
import argparse
import json
import os
import sys
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import ml_collections
import numpy as np

DEFAULT_FPS = 25.0  # make_tfrecords' default: the frame rate the configs' strides assume.
JPEG_QSCALE = 2  # make_tfrecords' default.


def read_label_map(path: Optional[str], num_classes: int) -> list[str]:
  """Class names by index from a {name: index} JSON (make_tfrecords) or a list; else indices."""
  if not path:
    return [str(i) for i in range(num_classes)]
  with open(path) as f:
    data = json.load(f)
  if isinstance(data, dict):
    names = {int(i): name for name, i in data.items()}
  else:
    names = dict(enumerate(data))
  if sorted(names) != list(range(num_classes)):
    raise ValueError(f"--label_map {path} has {len(names)} classes with indices "
                     f"{min(names, default=None)}..{max(names, default=None)}; the config's model "
                     f"has {num_classes} (indices 0..{num_classes - 1})")
  return [names[i] for i in range(num_classes)]


def load_checkpoint_params(path: str, expected: Any) -> tuple[Any, str]:
  """Params of any supported checkpoint, matched to the `expected` shapes; (params, kind)."""
  from vivit_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from vivit_jax.checkpoints import files  # pylint: disable=g-import-not-at-top
  params = kind = None
  if files.isdir(path):
    names = files.listdir(path)
    if "config.json" in names and any(n.startswith(("model.safetensors", "pytorch_model.bin"))
                                      for n in names):
      _, params = checkpoints.import_hf(path)
      kind = "Hugging Face"
    else:
      try:
        params, kind = checkpoints.load_params(path), "Orbax"
      except checkpoints.CheckpointFormatError:
        pass  # Not Orbax: a Scenic folder of checkpoint_<step> files, or nothing readable.
  if params is None:
    params, kind = checkpoints.load_scenic_checkpoint(path), "Scenic"
  return checkpoints.match_params(expected, params, source=path), kind


class Predictor:
  """A config's model with a checkpoint's weights, and the test-split processing of its data."""

  def __init__(self, config: ml_collections.ConfigDict, checkpoint: str, *,
               label_map: Optional[str] = None, single_view: bool = False,
               fps: float = DEFAULT_FPS):
    import jax  # pylint: disable=g-import-not-at-top
    from vivit_jax import config_facts  # pylint: disable=g-import-not-at-top
    from vivit_jax.data import fields, pipeline  # pylint: disable=g-import-not-at-top

    self.config = config = config.copy_and_resolve_references()
    data_cfg = config.dataset_configs
    if single_view:
      data_cfg.num_test_clips, data_cfg.do_three_spatial_crops = 1, False
    self.clip_config = fields.ClipConfig.from_configs(data_cfg)
    self.fps = fps
    self.heads = config_facts.heads(config)._asdict()
    self.labels = read_label_map(label_map, config_facts.num_classes(config))
    self.average = config.get("eval_average", "logits")
    self.model = config_facts.model(config)
    self.params, self.checkpoint_kind = load_checkpoint_params(
        checkpoint, config_facts.abstract_params(config))
    # The test split's per-record function: sampling, crops and scaling exactly as in evaluation.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._process = tf.function(pipeline.make_process_fn(self.clip_config, "test", 0, 0))
    self._apply = jax.jit(lambda p, x: self.model.apply({"params": p}, x, train=False))

  def views(self, path: str) -> np.ndarray:
    """float32 [views, t, h, w, 3]: the test-split views of one video file."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from vivit_jax.data import tfrecord  # pylint: disable=g-import-not-at-top
    from vivit_jax.tools import make_tfrecords  # pylint: disable=g-import-not-at-top
    if not os.path.isfile(path):
      raise FileNotFoundError(f"no such file: {path}")
    cfg = self.clip_config
    frames = make_tfrecords.decode_resampled(path, self.fps, cfg.min_resize)
    jpegs = make_tfrecords.encode_jpegs(frames, JPEG_QSCALE)
    # A placeholder label (0 for every head): the processing needs one, the prediction does not.
    record = tfrecord.make_clip_example(jpegs, [0] * len(cfg.class_splits or (1,)))
    out = self._process(tf.constant(record), tf.constant(0, tf.int64), tf.constant(0, tf.int64))
    return out["inputs"].numpy()

  def probabilities(self, views: np.ndarray) -> dict[str, np.ndarray]:
    """[views, t, h, w, 3] → {head: class probabilities} ('' for a single head)."""
    from vivit_jax import evaluate  # pylint: disable=g-import-not-at-top
    from vivit_jax.models import split_logits  # pylint: disable=g-import-not-at-top
    logits = self._apply(self.params, views)[None]  # [1, views, classes]
    splits = self.heads["class_splits"]
    heads = split_logits(logits, splits, self.heads["split_names"]) if splits else {"": logits}
    # The views are averaged as in evaluation (`config.eval_average`), one rule in evaluate.py.
    scores = evaluate._head_scores  # pylint: disable=protected-access
    return {name: np.exp(np.asarray(scores(head, self.average)[1][0]))
            for name, head in heads.items()}

  def top_classes(self, probs: dict[str, np.ndarray], top_k: int = 5) -> Union[list, dict]:
    """`probabilities`' output as ranked [{index, label, probability}] ({head: list} with
    class_splits)."""
    offsets = np.cumsum((0,) + tuple(self.heads["class_splits"] or ()))
    ranked = {}
    for h, (name, p) in enumerate(probs.items()):
      order = np.argsort(-p, kind="stable")[:top_k]
      ranked[name] = [{"index": int(i), "label": self.labels[int(i) + int(offsets[h])],
                       "probability": float(p[i])} for i in order]
    return ranked[""] if "" in ranked else ranked

  def predict_file(self, path: str, top_k: int = 5) -> dict:
    views = self.views(path)
    return {"video": path, "views": int(views.shape[0]),
            "top_k": self.top_classes(self.probabilities(views), top_k)}


def _error_message(e: Exception) -> str:
  text = str(e).splitlines()[0] if str(e) else ""
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def predict(videos: Union[str, Sequence[str]], *, config: Union[str, ml_collections.ConfigDict],
            checkpoint: str, label_map: Optional[str] = None, top_k: int = 5,
            single_view: bool = False, fps: float = DEFAULT_FPS) -> list[dict]:
  """Top-k classes of each video (see the module docstring); unreadable videos give 'error'.

  Args:
    videos: a path or a list of paths.
    config: a ConfigDict, or a config file ('configs/k400_fe.py', 'file.py:arg' or a .json).
    checkpoint: our run folder, an Orbax params folder, a Scenic checkpoint or a Hugging Face
      folder.
    label_map: JSON {class name: index} or list of names.
    top_k: classes per video (per head with class_splits).
    single_view: one central clip and crop instead of the config's test views.
    fps: frame rate the video is resampled to before the config's frame sampling.
  """
  return list(iter_predictions(videos, config=config, checkpoint=checkpoint, label_map=label_map,
                               top_k=top_k, single_view=single_view, fps=fps))


def iter_predictions(videos, *, config, checkpoint, label_map=None, top_k=5, single_view=False,
                     fps=DEFAULT_FPS) -> Iterator[dict]:
  """`predict`, one video at a time (the model and checkpoint are loaded before the first)."""
  if isinstance(config, str):
    from vivit_jax.tools import convert_checkpoint  # pylint: disable=g-import-not-at-top
    config = convert_checkpoint.load_config(config)
  predictor = Predictor(config, checkpoint, label_map=label_map, single_view=single_view, fps=fps)
  for path in [videos] if isinstance(videos, str) else list(videos):
    try:
      yield predictor.predict_file(path, top_k)
    except Exception as e:  # pylint: disable=broad-except
      yield {"video": path, "error": _error_message(e)}


def format_result(result: Mapping[str, Any]) -> str:
  """Human-readable lines for one result."""
  if "error" in result:
    return f"{result['video']}: cannot read it: {result['error']}"
  lines = [f"{result['video']} ({result['views']} views)"]
  heads = result["top_k"] if isinstance(result["top_k"], dict) else {"": result["top_k"]}
  for name, ranked in heads.items():
    if name:
      lines.append(f"  {name}:")
    for rank, row in enumerate(ranked, 1):
      lines.append(f"  {rank}. {row['label']:<32s} {row['probability']:.4f}")
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("videos", nargs="+", metavar="VIDEO")
  parser.add_argument("--config", required=True, help="config file (file.py[:arg] or .json)")
  parser.add_argument("--checkpoint", required=True)
  parser.add_argument("--label_map", default=None)
  parser.add_argument("--json", action="store_true", help="one JSON object per line")
  parser.add_argument("--top_k", type=int, default=5)
  parser.add_argument("--single_view", action="store_true")
  parser.add_argument("--fps", type=float, default=DEFAULT_FPS)
  args = parser.parse_args(argv)
  results = iter_predictions(args.videos, config=args.config, checkpoint=args.checkpoint,
                             label_map=args.label_map, top_k=args.top_k,
                             single_view=args.single_view, fps=args.fps)
  failed = 0
  try:
    for result in results:
      failed += "error" in result
      if "error" in result:
        print(format_result(result), file=sys.stderr, flush=True)
      if args.json:
        print(json.dumps(result), flush=True)
      elif "error" not in result:
        print(format_result(result), flush=True)
  except Exception as e:  # pylint: disable=broad-except
    # The config, the checkpoint or the label map: nothing can be predicted.
    print(f"predict: {_error_message(e)}", file=sys.stderr)
    return 2
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
