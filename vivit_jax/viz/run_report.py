"""A run's report: training curves, confusion matrix and per-class accuracy as PNGs, and one
self-contained `report.html` (images embedded as base64) with the results and the config.

Reads what the trainer writes into WORKDIR: `metrics.jsonl` (metrics.MetricWriter),
`eval_results.json` and `confusion_matrix.json` (evaluate.py), `config.json` (train.py).
"""
import base64
import html
import json
import os
from typing import Callable, Optional

import numpy as np

from vivit_jax import evaluate, metrics
from vivit_jax.viz.drawing import matplotlib_pyplot

REPORT_FILE = "report.html"
# Curve name → which metrics.jsonl keys it draws. Train keys are logged every
# `log_summary_steps`, valid_/test_ ones at each evaluation.
CURVES: dict[str, tuple[str, Callable[[str], bool]]] = {
    "loss": ("loss", lambda k: k.endswith("loss") or k == "train_objective"),
    "accuracy": ("accuracy", lambda k: ("accuracy" in k or k.endswith(("top1", "top5")))
                 and k.startswith(("train_", "valid_", "test_"))),
    "learning_rate": ("learning rate", lambda k: k == "learning_rate"),
    "throughput": ("clips / s", lambda k: k == "clips_per_sec"),
}
MAX_ANNOTATED_CLASSES = 20  # counts written in the cells of smaller confusion matrices
MAX_NAMED_CLASSES = 50  # tick labels beyond this would be unreadable


def _read_json(path: str) -> Optional[dict]:
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def series(records: list[dict], select: Callable[[str], bool]) -> dict[str, tuple[list, list]]:
  """{key: (steps, values)} of the keys `select` picks (null values left out)."""
  out: dict[str, tuple[list, list]] = {}
  for r in records:
    for k, v in r.items():
      if k != "step" and select(k) and v is not None:
        out.setdefault(k, ([], []))
        out[k][0].append(int(r["step"]))
        out[k][1].append(float(v))
  return out


def plot_curve(path: str, lines: dict[str, tuple[list, list]], title: str, ylabel: str) -> str:
  plt = matplotlib_pyplot()
  fig, ax = plt.subplots(figsize=(6, 3.4))
  for name, (steps, values) in sorted(lines.items()):
    ax.plot(steps, values, marker="o" if len(steps) <= 5 else None, markersize=4, label=name)
  ax.set_title(title)
  ax.set_xlabel("step")
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  if ylabel == "learning rate":
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


def plot_confusion(path: str, matrix: np.ndarray, names: list[str], title: str) -> str:
  """Counts; cells coloured by the row's share (the true class's recall pattern)."""
  plt = matplotlib_pyplot()
  c = len(matrix)
  rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
  size = min(3 + 0.35 * c, 14)
  fig, ax = plt.subplots(figsize=(size + 1, size))
  im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
  if c <= MAX_ANNOTATED_CLASSES:
    for i in range(c):
      for j in range(c):
        if matrix[i, j]:
          ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                  color="white" if rows[i, j] > 0.5 else "black")
  if c <= MAX_NAMED_CLASSES:
    ax.set_xticks(range(c))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_yticks(range(c))
    ax.set_yticklabels(names, fontsize=7)
  ax.set_xlabel("predicted class")
  ax.set_ylabel("true class")
  ax.set_title(title)
  fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


def plot_class_accuracy(path: str, correct: np.ndarray, count: np.ndarray, names: list[str],
                        title: str) -> str:
  """Top-1 accuracy per class; classes without videos are left empty."""
  plt = matplotlib_pyplot()
  c = len(count)
  acc = np.where(count > 0, correct / np.maximum(count, 1), np.nan)
  fig, ax = plt.subplots(figsize=(min(3 + 0.3 * c, 16), 3.6))
  ax.bar(np.arange(c), np.nan_to_num(acc), color="tab:blue")
  ax.set_ylim(0, 1)
  ax.set_ylabel("top-1 accuracy")
  ax.set_title(title)
  if c <= MAX_NAMED_CLASSES:
    ax.set_xticks(range(c))
    ax.set_xticklabels([f"{n} ({int(k)})" for n, k in zip(names, count)], rotation=90,
                       fontsize=7)
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


def class_names(config: Optional[dict], label_map: Optional[str], heads: dict) -> dict:
  """{head: names}: from `label_map`, else the dataset's label_map.json (make_tfrecords and
  the synthetic set write one beside the records), else class indices."""
  from vivit_jax.tools import predict  # pylint: disable=g-import-not-at-top
  total = sum(len(h["class_count"]) for h in heads.values())
  if label_map is None and config:
    candidate = os.path.join(str((config.get("dataset_configs") or {}).get("base_dir") or ""),
                             "label_map.json")
    label_map = candidate if os.path.isfile(candidate) else None
  try:
    names = predict.read_label_map(label_map, total)
  except ValueError:
    names = [str(i) for i in range(total)]  # a label map of another dataset: indices
  out, offset = {}, 0
  for head, h in heads.items():
    out[head] = names[offset:offset + len(h["class_count"])]
    offset += len(h["class_count"])
  return out


def _img(path: str, alt: str) -> str:
  with open(path, "rb") as f:
    data = base64.b64encode(f.read()).decode("ascii")
  return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _results_table(results: dict) -> str:
  by_split = results.get("by_split") or {results.get("split", "?"): results}
  keys = [k for k in ("step", "num_videos", "num_views", "top1", "top5", "mean_class_accuracy",
                      "loss") if any(k in e for e in by_split.values())]
  cell = lambda v: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
  head = "".join(f"<th>{k}</th>" for k in ["split"] + keys)
  rows = "".join("<tr><td>" + html.escape(s) + "</td>" +
                 "".join(f"<td>{cell(e.get(k))}</td>" for k in keys) + "</tr>"
                 for s, e in sorted(by_split.items()))
  return f"<table><tr>{head}</tr>{rows}</table>"


def write_report(workdir: str, output_dir: Optional[str] = None, *,
                 label_map: Optional[str] = None) -> str:
  """Writes the PNGs and `report.html` into `output_dir` (default `workdir`); the report's path.

  Raises:
    FileNotFoundError: `workdir` does not exist, or holds neither metrics.jsonl nor
      eval_results.json.
  """
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"no such run folder: {workdir}")
  records = metrics.read_metrics(workdir)
  results = _read_json(os.path.join(workdir, evaluate.RESULTS_FILE))
  classes = _read_json(os.path.join(workdir, evaluate.CLASS_RESULTS_FILE))
  config = _read_json(os.path.join(workdir, "config.json"))
  if not records and results is None:
    raise FileNotFoundError(f"nothing to report in {workdir}: no metrics.jsonl or "
                            f"{evaluate.RESULTS_FILE}")
  out_dir = output_dir or workdir
  os.makedirs(out_dir, exist_ok=True)
  name = (config or {}).get("experiment_name") or os.path.basename(os.path.abspath(workdir))
  sections = [f"<h1>{html.escape(str(name))}</h1>",
              f"<p>run folder <code>{html.escape(os.path.abspath(workdir))}</code></p>"]

  sections.append("<h2>Training</h2>")
  for curve, (ylabel, select) in CURVES.items():
    lines = series(records, select)
    if lines:
      path = plot_curve(os.path.join(out_dir, f"{curve}.png"), lines, curve.replace("_", " "),
                        ylabel)
      sections.append(_img(path, curve))
    else:
      sections.append(f"<p>{curve}: not in metrics.jsonl</p>")

  sections.append("<h2>Evaluation</h2>")
  sections.append(_results_table(results) if results else
                  f"<p>no {evaluate.RESULTS_FILE}: the run was not evaluated</p>")
  if classes:
    names = class_names(config, label_map, classes["heads"])
    split = classes.get("split")
    for head, h in classes["heads"].items():
      suffix, label = (f"_{head}", f" ({head})") if head else ("", "")
      cm = np.asarray(h["confusion_matrix"])
      sections.append(_img(plot_confusion(
          os.path.join(out_dir, f"confusion_matrix{suffix}.png"), cm, names[head],
          f"confusion matrix{label}: {split}, {int(cm.sum())} videos"), f"confusion_matrix{suffix}"))
      sections.append(_img(plot_class_accuracy(
          os.path.join(out_dir, f"per_class_accuracy{suffix}.png"),
          np.asarray(h["class_correct"]), np.asarray(h["class_count"]), names[head],
          f"per-class accuracy{label}: {split}"), f"per_class_accuracy{suffix}"))
  elif results:
    sections.append(f"<p>no {evaluate.CLASS_RESULTS_FILE}: this evaluation wrote no per-class "
                    "results</p>")

  sections.append("<h2>Config</h2>")
  sections.append(f"<pre>{html.escape(json.dumps(config, indent=2, sort_keys=True), quote=False)}</pre>"
                  if config else "<p>no config.json in the run folder</p>")
  page = ("<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
          f"<title>{html.escape(str(name))}: run report</title><style>"
          "body{font-family:sans-serif;margin:2em;max-width:1100px}"
          "img{max-width:100%}figure{margin:0.5em 0}"
          "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:0.2em 0.6em}"
          "pre{background:#f6f6f6;padding:1em;font-size:12px;overflow:auto}"
          "</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n")
  path = os.path.join(out_dir, REPORT_FILE)
  with open(path, "w", encoding="utf-8") as f:
    f.write(page)
  return path
