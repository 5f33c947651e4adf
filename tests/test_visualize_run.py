"""The run report (vivit_jax.viz.run_report, tools/visualize.py run) from a real short training
run, the per-class results evaluation writes for it, and the report rendered by Chromium."""
import base64
import json
import re
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from tests import train_helpers as th
from vivit_jax import evaluate, train
from vivit_jax.tools import visualize
from vivit_jax.viz import run_report

NUM_EVAL = 10  # fake_data_fn's videos per evaluation split
PICTURES = ("loss", "accuracy", "learning_rate", "throughput", "confusion_matrix",
            "per_class_accuracy")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """6 steps of the tiny Model 2, validation at step 3, then the test split (2 views)."""
  workdir = tmp_path_factory.mktemp("run")
  config = th.tiny_config(log_eval_steps=3, checkpoint_steps=0)
  train.train_and_evaluate(config, str(workdir), data_fn=th.fake_data_fn,
                           devices=jax.devices()[:1])
  return workdir, config


def test_confusion_matrix_sums_to_the_evaluated_videos(run):
  workdir, _ = run
  results = json.loads((workdir / "eval_results.json").read_text())
  classes = json.loads((workdir / "confusion_matrix.json").read_text())
  assert classes["split"] == "test" and classes["step"] == 6
  assert sorted(classes["by_split"]) == ["test", "validation"]
  for split, entry in classes["by_split"].items():
    head = entry["heads"][""]
    cm = np.asarray(head["confusion_matrix"])
    assert cm.shape == (th.NUM_CLASSES, th.NUM_CLASSES)
    assert cm.sum() == entry["num_videos"] == NUM_EVAL == results["by_split"][split]["num_videos"]
    np.testing.assert_array_equal(cm.sum(axis=1), head["class_count"])
    np.testing.assert_array_equal(np.diag(cm), head["class_correct"])
    assert np.trace(cm) / NUM_EVAL == pytest.approx(results["by_split"][split]["top1"])


def test_config_json_is_the_config_that_ran(run):
  workdir, config = run
  assert json.loads((workdir / "config.json").read_text()) == json.loads(
      config.to_json_best_effort())


def test_report_holds_every_curve_and_the_class_pictures(run, tmp_path, capsys):
  workdir, _ = run
  assert visualize.main(["run", str(workdir), f"--output_dir={tmp_path}"]) == 0
  assert capsys.readouterr().out.strip() == str(tmp_path / "report.html")
  page = (tmp_path / "report.html").read_text()
  images = dict(re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page))
  assert sorted(images) == sorted(PICTURES)
  for name, data in images.items():
    assert base64.b64decode(data) == (tmp_path / f"{name}.png").read_bytes()  # embedded
  assert '"num_classes": 4' in page  # the config
  assert "<td>test</td>" in page and "<td>validation</td>" in page
  # The curves draw what metrics.jsonl holds.
  records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  loss = run_report.series(records, run_report.CURVES["loss"][1])
  assert {"train_loss", "train_objective", "valid_loss", "test_loss"} <= set(loss)
  assert loss["train_loss"][0] == [1, 2, 3, 4, 5, 6] and loss["valid_loss"][0] == [3]
  acc = run_report.series(records, run_report.CURVES["accuracy"][1])
  assert {"train_accuracy", "valid_top1", "test_top1", "test_mean_class_accuracy"} <= set(acc)
  assert not (workdir / "report.html").exists()  # --output_dir was given


def test_report_of_a_missing_or_empty_run_fails_clearly(tmp_path, capsys):
  assert visualize.main(["run", str(tmp_path / "nope")]) == 2
  assert capsys.readouterr().err.strip() == f"visualize run: no such run folder: {tmp_path}/nope"
  assert visualize.main(["run", str(tmp_path)]) == 2
  assert capsys.readouterr().err.strip() == (
      f"visualize run: nothing to report in {tmp_path}: no metrics.jsonl or eval_results.json")


def test_confusion_matrix_of_one_batch_by_hand():
  # 4 videos (the last one padding), 3 classes: 0→0, 1→2, 2→2, padding 0→1 (not counted).
  logits = jnp.array([[5.0, 0, 0], [0, 1, 3], [0, 0, 1], [0, 9, 0]])
  sums = evaluate.eval_step_metrics(logits, jnp.array([0, 1, 2, 0]),
                                    jnp.array([1.0, 1, 1, 0]))
  np.testing.assert_array_equal(sums["confusion_matrix"], [[1, 0, 0], [0, 0, 1], [0, 0, 1]])
  heads = evaluate.eval_step_metrics(jnp.concatenate([logits, logits[:, :2]], axis=1),
                                     jnp.array([[0, 0], [1, 1], [2, 1], [0, 0]]),
                                     jnp.array([1.0, 1, 1, 0]), class_splits=[3, 2],
                                     split_names=["noun", "verb"])
  per_head = evaluate.class_results(heads)
  assert sorted(per_head) == ["noun", "verb"]
  # verb logits [5, 0], [0, 1], [0, 0] (a tie: the lower class, as top-1 accuracy ranks it).
  assert per_head["verb"]["confusion_matrix"] == [[1, 0], [1, 1]]
  assert per_head["verb"]["class_correct"] == [1, 1]
  assert per_head["noun"]["class_count"] == [1, 1, 1]


def _colored_pixels(png) -> int:
  """Pixels with clearly unequal RGB channels: plots, not text on white."""
  rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
  return int(((rgb.max(-1) - rgb.min(-1)) > 60).sum())


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (apt-get install -y chromium); "
                           "docs/visualize.md has the command to check by hand")
def test_report_renders_its_images_in_headless_chromium(run, tmp_path):
  workdir, _ = run
  page = run_report.write_report(str(workdir), str(tmp_path / "report"))
  no_images = tmp_path / "no_images.html"
  no_images.write_text(re.sub(r'src="data:[^"]+"', 'src=""', open(page).read()))

  def shot(html, png):
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", "--window-size=1100,2400", f"--screenshot={png}",
                    f"file://{html}"], check=True, capture_output=True, timeout=120)
    return png

  rendered = _colored_pixels(shot(page, tmp_path / "report.png"))
  blank = _colored_pixels(shot(no_images, tmp_path / "no_images.png"))
  # Text and tables are black, grey and white; only the broken-image icons have colour.
  assert blank < 2000, blank
  assert rendered > 20000, rendered  # the curves and the confusion matrix are drawn
