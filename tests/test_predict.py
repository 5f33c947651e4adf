"""`python -m vivit_jax.tools.predict`: MP4 files written here with PyAV (and a broken one), JSON
out, probabilities equal to the test split's through make_tfrecords + build_dataset."""
import json
import subprocess
import sys

from flax.core import meta
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vivit_jax
from tests import data_fixtures as fx
from tests import test_data_convert as convert
from tests import train_procs
from tests.test_configs import load
from vivit_jax import checkpoints
from vivit_jax.data import build_dataset
from vivit_jax.data import synthetic
from vivit_jax.models import build_model
from vivit_jax.tools import make_tfrecords
from vivit_jax.tools import predict


def _config():
  """The demo's tiny model, tested on 2 clips × 3 crops of 8 frames at stride 2, 32² crops."""
  config = load("synthetic", "runlocal")
  dc = config.dataset_configs
  dc.num_test_clips, dc.do_three_spatial_crops, dc.min_resize = 2, True, 32
  return config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("predict")
  config = _config()
  model = build_model(config.model, 8)
  params = meta.unbox(model.init(jax.random.PRNGKey(1), jnp.zeros((1, 8, 32, 32, 3)),
                                 train=False)["params"])
  # A non-zero head (the fresh one is zero: every class would be equally likely).
  params["output_projection"]["kernel"] = jax.random.normal(
      jax.random.PRNGKey(2), params["output_projection"]["kernel"].shape)
  checkpoints.save_params(params, str(root / "ckpt"))
  (root / "in" / "a").mkdir(parents=True)
  (root / "in" / "b").mkdir()
  convert.write_mp4(root / "in" / "a" / "first.mp4", convert.moving_pattern(30), fps=25)
  convert.write_mp4(root / "in" / "b" / "second.mp4", convert.moving_pattern(20)[:, ::-1], fps=25)
  (root / "broken.mp4").write_text("not a video\n")
  (root / "labels.json").write_text(json.dumps({n: i for i, n in enumerate(synthetic.CLASS_NAMES)}))
  return root, config, model, params


def _reference(root, config, model, params) -> dict:
  """{class folder: probabilities} from the dataset path: make_tfrecords, then the test split."""
  out = root / "records"
  assert make_tfrecords.main([f"--input={root / 'in'}", f"--output_dir={out}", "--split=test",
                              "--num_shards=1", "--fps=25", "--min_resize=32"]) == 0
  dc = config.dataset_configs.copy_and_resolve_references()
  dc.base_dir, dc.tables, dc.synthetic = str(out), {"test": "test@1"}, None
  batch = fx.collect(build_dataset(dc, "test", 2))[0]
  assert batch["inputs"].shape == (2, 6, 8, 32, 32, 3)
  logits = model.apply({"params": params}, batch["inputs"].reshape((12, 8, 32, 32, 3)),
                       train=False).reshape(2, 6, 8).mean(axis=1)  # eval_average='logits'
  probs = np.asarray(jax.nn.softmax(logits))
  # The label of a record is its class folder: 'a' = 0, 'b' = 1 (the folders' sorted order).
  return {"ab"[int(k)]: p for k, p in zip(batch["label"][:, :2].argmax(-1), probs)}


@pytest.mark.slow
def test_cli_json_matches_the_test_split_and_survives_a_broken_file(setup):
  root, config, model, params = setup
  videos = [root / "in" / "a" / "first.mp4", root / "broken.mp4", root / "in" / "b" / "second.mp4"]
  out = subprocess.run(
      [sys.executable, "-m", "vivit_jax.tools.predict",
       f"--config={train_procs.REPO}/configs/synthetic.py:runlocal",
       f"--checkpoint={root / 'ckpt'}", f"--label_map={root / 'labels.json'}", "--json",
       *[str(v) for v in videos]],
      env=train_procs.worker_env(), capture_output=True, text=True, timeout=300)
  assert out.returncode == 1, out.stderr[-3000:]  # One video failed, the others went on.
  assert f"{root / 'broken.mp4'}: cannot read it: InvalidDataError" in out.stderr
  lines = [json.loads(x) for x in out.stdout.strip().splitlines()]
  assert [r["video"] for r in lines] == [str(v) for v in videos]
  assert set(lines[1]) == {"video", "error"} and lines[1]["error"].startswith("InvalidDataError")
  del lines[1]
  # The CLI used configs/synthetic.py:runlocal (1 view); the same model with the setup's views:
  for r in lines:
    assert r["views"] == 1 and len(r["top_k"]) == 5
  reference = _reference(root, config, model, params)
  results = vivit_jax.predict([str(videos[0]), str(videos[2])], config=config,
                              checkpoint=str(root / "ckpt"), label_map=str(root / "labels.json"))
  for folder, r in zip("ab", results):
    assert r["views"] == 6
    probs = [row["probability"] for row in r["top_k"]]
    assert probs == sorted(probs, reverse=True)
    expected = reference[folder]
    top = np.argsort(-expected)[:5]
    assert [row["index"] for row in r["top_k"]] == top.tolist()
    assert [row["label"] for row in r["top_k"]] == [synthetic.CLASS_NAMES[i] for i in top]
    np.testing.assert_allclose(probs, expected[top], rtol=1e-4, atol=1e-6)


def test_single_view_and_the_text_output(setup, capsys):
  root, config, _, _ = setup
  rc = predict.main([f"--config={train_procs.REPO}/configs/synthetic.py:runlocal",
                     f"--checkpoint={root / 'ckpt'}", "--top_k=3", "--single_view",
                     str(root / "in" / "a" / "first.mp4")])
  assert rc == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0] == f"{root / 'in' / 'a' / 'first.mp4'} (1 views)"
  assert [line.split()[0] for line in lines[1:]] == ["1.", "2.", "3."]
  assert all(line.split()[1].isdigit() for line in lines[1:])  # No label map: class indices.


def test_scenic_checkpoint_and_clear_errors(setup, scenic_ref, capsys):
  root = setup[0]
  folder = scenic_ref / "vivit" / "spacetime_token"
  config = load("synthetic", "runlocal")
  fixture = json.loads((folder / "config.json").read_text())
  config.model = type(config.model)(fixture["model"])
  config.dataset_configs.update(num_classes=5, num_frames=8, crop_size=16, min_resize=16)
  p = predict.Predictor(config, str(folder))
  assert p.checkpoint_kind == "Scenic"
  result = p.predict_file(str(root / "in" / "a" / "first.mp4"), top_k=5)
  assert sorted(row["index"] for row in result["top_k"]) == [0, 1, 2, 3, 4]
  assert abs(sum(row["probability"] for row in result["top_k"]) - 1.0) < 1e-5
  # The same weights as a Hugging Face folder give the same prediction.
  hf_dir = checkpoints.export_hf(config, p.params, str(root / "hf"))
  hf = predict.Predictor(config, hf_dir)
  assert hf.checkpoint_kind == "Hugging Face"
  again = hf.predict_file(str(root / "in" / "a" / "first.mp4"), top_k=5)
  assert [r["index"] for r in again["top_k"]] == [r["index"] for r in result["top_k"]]
  np.testing.assert_allclose([r["probability"] for r in again["top_k"]],
                             [r["probability"] for r in result["top_k"]], rtol=1e-4)
  missing = root / "no_such_checkpoint"
  assert predict.main([f"--config={train_procs.REPO}/configs/synthetic.py:runlocal",
                       f"--checkpoint={missing}", str(root / "in" / "a" / "first.mp4")]) == 2
  assert f"Scenic checkpoint not found: {missing}" in capsys.readouterr().err
  (root / "short_map.json").write_text(json.dumps(["x", "y"]))
  with pytest.raises(ValueError, match=r"--label_map .*short_map.json has 2 classes.*has 8"):
    predict.read_label_map(str(root / "short_map.json"), 8)
  wrong = load("k400_st", "runlocal")  # Model 1: the Model 2 checkpoint does not fit it.
  with pytest.raises(checkpoints.CheckpointMismatchError):
    predict.Predictor(wrong, str(root / "ckpt"))
