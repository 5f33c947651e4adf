"""Attention maps drawn over frames: a PNG grid (frames × [image, overlay]) and a GIF."""
from typing import Optional, Sequence

import numpy as np

from vivit_jax.viz.attention_maps import AttentionMaps

COLORMAP = "jet"
ALPHA = 0.5  # weight of the heat map over the frame
GIF_HEIGHT = 160  # px per panel; the pipeline's small crops are upscaled to this
GIF_MS_PER_FRAME = 200


def matplotlib_pyplot():
  """pyplot on the Agg backend (files only; no display needed)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def displayable(clip: np.ndarray) -> np.ndarray:
  """A processed clip `[t, h, w, 3]` (any scaling) as float RGB in [0, 1]."""
  clip = np.asarray(clip, np.float32)
  lo, hi = float(clip.min()), float(clip.max())
  return (clip - lo) / max(hi - lo, 1e-8)


def overlay(frame: np.ndarray, heat: np.ndarray) -> np.ndarray:
  """`frame [h, w, 3]` in [0, 1] blended with `heat [gh, gw]` (scaled to its max), smoothly
  upsampled to the frame."""
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  h, w = frame.shape[:2]
  scaled = heat / max(float(heat.max()), 1e-12)
  up = np.asarray(Image.fromarray(scaled.astype(np.float32), mode="F").resize(
      (w, h), Image.BILINEAR))
  colored = colormaps[COLORMAP](np.clip(up, 0.0, 1.0))[..., :3]
  return (1 - ALPHA) * frame + ALPHA * colored


def _shown(maps: AttentionMaps, max_frames: int) -> list[tuple[int, int]]:
  frames = maps.frames
  if len(frames) <= max_frames:
    return frames
  pick = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
  return [frames[i] for i in pick]


def save_grid(path: str, clip: np.ndarray, maps: AttentionMaps, *, title: str = "",
              max_frames: int = 16) -> str:
  """Columns: frames; rows: the frame, the frame with its map, and the temporal weights."""
  plt = matplotlib_pyplot()
  clip = displayable(clip)
  shown = _shown(maps, max_frames)
  rows = 3 if maps.temporal is not None else 2
  fig = plt.figure(figsize=(1.3 * len(shown) + 0.6, 1.4 * rows + 0.5))
  grid = fig.add_gridspec(rows, len(shown), height_ratios=[1, 1, 0.8][:rows])
  for col, (f, tok) in enumerate(shown):
    for row, image in enumerate((clip[f], overlay(clip[f], maps.spatial[tok]))):
      ax = fig.add_subplot(grid[row, col])
      ax.imshow(image)
      ax.set_xticks([])
      ax.set_yticks([])
      if col == 0:
        ax.set_ylabel(("input", "attention")[row], fontsize=8)
    fig.axes[-2].set_title(f"frame {f}", fontsize=8)
  if maps.temporal is not None:
    bar = fig.add_subplot(grid[2, :])
    bar.bar(np.arange(len(maps.temporal)), maps.temporal, color="tab:orange")
    covers = {}
    for f, tok in maps.frames:
      covers.setdefault(tok, []).append(f)
    bar.set_xticks(np.arange(len(maps.temporal)))
    bar.set_xticklabels([f"{min(v)}" if len(v) == 1 else f"{min(v)}-{max(v)}"
                         for _, v in sorted(covers.items())])
    bar.set_xlabel("attention over time (frames of each token)", fontsize=8)
    bar.tick_params(labelsize=7)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


def save_gif(path: str, clip: np.ndarray, maps: AttentionMaps, *,
             max_frames: Optional[int] = None) -> str:
  """An animated GIF: each clip frame beside its attention overlay, looping."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  clip = displayable(clip)
  shown = _shown(maps, max_frames or len(maps.frames))
  images = []
  for f, tok in shown:
    pair = np.concatenate([clip[f], overlay(clip[f], maps.spatial[tok])], axis=1)
    img = Image.fromarray((np.clip(pair, 0, 1) * 255).astype(np.uint8))
    scale = max(1, GIF_HEIGHT // img.height)
    images.append(img.resize((img.width * scale, img.height * scale), Image.NEAREST))
  images[0].save(path, save_all=True, append_images=images[1:], duration=GIF_MS_PER_FRAME,
                 loop=0)
  return path


def frame_titles(predictions: Sequence[dict], k: int = 3) -> str:
  return ", ".join(f"{p['label']} {p['probability']:.2f}" for p in predictions[:k])
