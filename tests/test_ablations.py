"""benchmarks/ablations.py: the grid it builds, and a tiny end-to-end run (2 steps per setting)."""
import importlib.util
import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _ablations():
  spec = importlib.util.spec_from_file_location("ablations", REPO / "benchmarks" / "ablations.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_grid_of_a_config_files_dataset(monkeypatch, tmp_path):
  monkeypatch.setenv("VIVIT_DATA_DIR", str(tmp_path))
  ablations = _ablations()
  dc = ablations.dataset_configs_of(str(REPO / "configs" / "k400_fe.py"), tiny=False)
  assert (dc.num_frames, dc.crop_size, dc.base_dir) == (32, 224, str(tmp_path / "kinetics400"))
  cells = ablations.grid(dc, ablations.WIDTH)
  assert [c["name"] for c in cells] == [
      "uniform frame sampling", "tubelet (random init)", "tubelet (filter inflation)",
      "tubelet (central frame)", "Model 1 spatio-temporal", "Model 2 factorised encoder",
      "Model 3 factorised self-attention", "Model 4 factorised dot-product",
      "Model 2 average-pool baseline", "Model 2 frame average (1-frame tokens)",
      "Model 1 (8 frames)", "Model 1 (16 frames)", "Model 1 (32 frames)"]
  configs = [ablations.cell_config(c, dc, 300, tiny=False) for c in cells]  # all validate
  keys = [ablations.config_key(c) for c in configs]
  assert len(set(keys)) == 11  # Model 1, central frame, 32 frames appears in all 3 groups
  assert keys[3] == keys[4] == keys[12]
  assert [ablations.tokens_of(c) for c in configs[:2]] == ["16×16", "16×16"]  # 56×56 patches
  assert configs[0].model.temporal_encoding_config.n_sampled_frames == 16
  assert configs[8].model.attention_config.spatial_only_baseline
  assert configs[9].model.attention_config.spatial_only_baseline
  assert ablations.tokens_of(configs[9]) == "32×16" and configs[9].model.patches.size[2] == 1
  assert configs[10].dataset_configs.num_frames == 8 and configs[10].dataset_configs.stride == 2
  with pytest.raises(ValueError, match="'imagenet'.*synthetic_order"):
    ablations.dataset_configs_of("imagenet", tiny=False)


@pytest.mark.slow
def test_tiny_run_prints_the_table_and_reuses_finished_settings(monkeypatch, tmp_path, capsys):
  monkeypatch.setenv("VIVIT_DATA_DIR", str(tmp_path / "data"))
  ablations = _ablations()
  only = "uniform frame sampling,Model 2 average-pool baseline,Model 1 (4 frames)"
  args = ["--tiny", f"--only={only}", f"--workdir={tmp_path / 'runs'}",
          f"--json={tmp_path / 'ablations.json'}"]
  assert ablations.main(args) == 0
  table = capsys.readouterr().out.splitlines()
  assert table[0].startswith("| group | setting | tokens (t×n) | top-1 on synthetic_order (%) | train")
  assert table[2].startswith("| tokenisation | uniform frame sampling | 8×16 |")
  assert table[2].endswith("| 78.5 |") and table[3].endswith("| 75.8 |")
  assert table[4].startswith("| frames | Model 1 (4 frames) | 2×16 |")
  result = json.loads((tmp_path / "ablations.json").read_text())
  assert result["meta"]["steps"] == 2 and result["meta"]["dataset"] == "synthetic_order"
  rows = result["rows"]
  assert [r["name"] for r in rows] == only.split(",")
  for r in rows:
    assert r["steps"] == 2 and r["num_test_videos"] == 24 and 0 <= r["top1"] <= 1
    assert r["params"] > 1000 and r["train_gflops_per_clip"] > 0 and r["ms_per_step"] > 0
    assert not r["reused"] and [step for step, _ in r["train_accuracy"]] == [1, 2]
  # Model 1 on 2×16 tokens costs less than Model 1 on 8×16 (uniform sampling of 8 of 16 frames).
  assert rows[2]["train_gflops_per_clip"] < rows[0]["train_gflops_per_clip"] / 2
  assert (tmp_path / "data" / "synthetic_order_tiny" / "label_map.json").exists()

  assert ablations.main(args) == 0  # finished settings are reused, not trained again
  again = json.loads((tmp_path / "ablations.json").read_text())["rows"]
  assert all(r["reused"] for r in again)
  assert [r["train_accuracy"] for r in again] == [r["train_accuracy"] for r in rows]
  assert [r["top1"] for r in again] == [r["top1"] for r in rows]
  with pytest.raises(SystemExit, match="--only: unknown \\['Model 5'\\]"):
    ablations.main(["--tiny", "--only=Model 5"])
