r"""Pictures of what a model does and how a run went.

Attention maps of a ViViT (Models 1 and 2) on video files:

  python -m vivit_jax.tools.visualize attention --config=configs/synthetic.py \
      --checkpoint=runs/demo --output_dir=/tmp/attention [--head=N] [--label_map=labels.json] \
      VIDEO...

Each video is read and processed as `vivit_jax.tools.predict` does (the test split's processing,
one central clip and crop), the model is applied with its attention weights sown
(`mutable=['intermediates']`), and the weights are rolled out over the layers
(`vivit_jax.viz.attention_maps`; heads averaged, or one head with `--head`). Model 2: the
spatial transformer's CLS attention per frame and the temporal transformer's attention over
frames; Model 1: the CLS attention over the space-time tokens, normalised per frame, and its
mass per frame. Per video (named by the file's stem) in `--output_dir`:
  STEM_attention.png   frames × [input, overlay], and the attention over frames
  STEM_attention.gif   the frames beside their overlays, animated
  STEM_spatial.npy     float32 [t', gh, gw]: per token-frame maps, each summing to 1
  STEM_temporal.npy    float32 [t']: attention over token-frames (absent for a spatial-only
                       baseline)
  STEM_attention.json  the top-5 classes, the frames each token-frame covers, the files
A video that cannot be read is reported on stderr and the others go on (exit status 1).

A run's report (training curves, confusion matrix, per-class accuracy, config):

  python -m vivit_jax.tools.visualize run WORKDIR [--output_dir=DIR] [--label_map=labels.json]

reads WORKDIR/metrics.jsonl, eval_results.json, confusion_matrix.json and config.json and
writes PNGs and one self-contained report.html (images embedded) into WORKDIR or `--output_dir`.
From Python: `draw_attention(videos, config=..., checkpoint=..., output_dir=...)` and
`vivit_jax.viz.run_report.write_report(workdir)`. See docs/visualize.md.
"""
import argparse
import json
import os
import sys
from typing import Iterator, Optional, Sequence, Union

import jax
import ml_collections
import numpy as np

from vivit_jax.tools import convert_checkpoint, predict
from vivit_jax.viz import attention_maps, drawing, run_report


def _unique_stems(videos: Sequence[str]) -> list[str]:
  """File stems, made unique (`a`, `a_2`, ...) when two videos share one."""
  seen: dict[str, int] = {}
  out = []
  for v in videos:
    stem = os.path.splitext(os.path.basename(v))[0] or "video"
    seen[stem] = seen.get(stem, 0) + 1
    out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
  return out


def draw_attention(videos: Union[str, Sequence[str]], *,
                   config: Union[str, ml_collections.ConfigDict], checkpoint: str,
                   output_dir: str, head: Optional[int] = None, label_map: Optional[str] = None,
                   top_k: int = 5, max_frames: int = 16, fps: Optional[float] = None
                   ) -> Iterator[dict]:
  """Draws the attention maps of each video (see the module docstring), one at a time.

  Yields per video `{"video", "top_k", "files": {"grid", "gif", "spatial", ["temporal"],
  "json"}}`, or `{"video", "error"}` for a video that cannot be drawn. The config, the
  checkpoint and the model variant are checked (and raise) before the first video is read.
  """
  if isinstance(config, str):
    config = convert_checkpoint.load_config(config)
  attention_maps.check_supported(config)
  predictor = predict.Predictor(config, checkpoint, label_map=label_map, single_view=True,
                                fps=predict.DEFAULT_FPS if fps is None else fps)
  os.makedirs(output_dir, exist_ok=True)
  apply = jax.jit(lambda p, x: attention_maps.apply_with_weights(predictor.model, p, x))
  videos = [videos] if isinstance(videos, str) else list(videos)
  for video, stem in zip(videos, _unique_stems(videos)):
    try:
      clip = predictor.views(video)[:1]  # one central clip and crop: [1, t, h, w, 3]
      _, intermediates = apply(predictor.params, clip)
      maps = attention_maps.video_maps(predictor.config, jax.device_get(intermediates),
                                       head=head)
      top = predictor.top_classes(predictor.probabilities(clip), top_k)
      out = lambda suffix, stem=stem: os.path.join(output_dir, stem + suffix)  # noqa: E731
      files = {"spatial": out("_spatial.npy")}
      np.save(files["spatial"], maps.spatial)
      if maps.temporal is not None:
        files["temporal"] = out("_temporal.npy")
        np.save(files["temporal"], maps.temporal)
      first = top if isinstance(top, list) else next(iter(top.values()))
      which = "heads averaged" if head is None else f"head {head}"
      files["grid"] = drawing.save_grid(
          out("_attention.png"), clip[0], maps, max_frames=max_frames,
          title=f"{os.path.basename(video)} ({which}): {drawing.frame_titles(first)}")
      files["gif"] = drawing.save_gif(out("_attention.gif"), clip[0], maps)
      files["json"] = out("_attention.json")
      with open(files["json"], "w", encoding="utf-8") as f:
        json.dump({"video": video, "attention_type": maps.attention_type, "head": head,
                   "frames": [{"frame": fr, "token_frame": tok} for fr, tok in maps.frames],
                   "top_k": top, "files": files}, f, indent=2)
      yield {"video": video, "top_k": top, "files": files}
    except Exception as e:  # pylint: disable=broad-except
      yield {"video": video, "error": predict._error_message(e)}  # pylint: disable=protected-access


def attention_command(args) -> int:
  results = draw_attention(args.videos, config=args.config, checkpoint=args.checkpoint,
                           output_dir=args.output_dir, head=args.head,
                           label_map=args.label_map, top_k=args.top_k,
                           max_frames=args.max_frames, fps=args.fps)
  failed = 0
  try:
    for r in results:
      if "error" in r:
        failed += 1
        print(f"{r['video']}: cannot draw it: {r['error']}", file=sys.stderr, flush=True)
      else:
        print(f"{r['video']}: " + ", ".join(r["files"][k] for k in ("grid", "gif", "spatial")),
              flush=True)
  except Exception as e:  # pylint: disable=broad-except
    # The config, the checkpoint, the label map or the model variant: nothing can be drawn.
    print(f"visualize attention: {predict._error_message(e)}", file=sys.stderr)  # pylint: disable=protected-access
    return 2
  return 1 if failed else 0


def run_command(args) -> int:
  try:
    path = run_report.write_report(args.workdir, args.output_dir, label_map=args.label_map)
  except (FileNotFoundError, ValueError) as e:
    print(f"visualize run: {e}", file=sys.stderr)
    return 2
  print(path, flush=True)
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  att = sub.add_parser("attention", help="attention maps of a model on video files")
  att.add_argument("videos", nargs="+", metavar="VIDEO")
  att.add_argument("--config", required=True, help="config file (file.py[:arg] or .json)")
  att.add_argument("--checkpoint", required=True,
                   help="run folder, Orbax params, Scenic or Hugging Face checkpoint")
  att.add_argument("--output_dir", required=True)
  att.add_argument("--head", type=int, default=None,
                   help="draw one attention head (default: heads averaged)")
  att.add_argument("--label_map", default=None)
  att.add_argument("--top_k", type=int, default=5)
  att.add_argument("--max_frames", type=int, default=16, help="frames shown in the PNG grid")
  att.add_argument("--fps", type=float, default=None,
                   help="frame rate videos are resampled to (default: predict's)")
  run = sub.add_parser("run", help="training curves, confusion matrix and config of a run")
  run.add_argument("workdir")
  run.add_argument("--output_dir", default=None, help="default: WORKDIR")
  run.add_argument("--label_map", default=None, help="class names: JSON {name: index} or list")
  args = parser.parse_args(argv)
  if args.command == "attention":
    return attention_command(args)
  return run_command(args)


if __name__ == "__main__":
  sys.exit(main())
