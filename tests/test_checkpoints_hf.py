"""Hugging Face VivitForVideoClassification ⇄ our Model 1: logits agree both ways."""
import json
import re

import numpy as np
import pytest
import torch  # torch and transformers come with the `test` extra
import transformers

from tests import ckpt_testlib as lib
from vivit_jax import checkpoints as ckpt
from vivit_jax.models import build_model

VIDEO = (2, 4, 16, 12, 3)  # non-square frames catch h/w mix-ups


def _hf_logits(model, video: np.ndarray) -> np.ndarray:
  with torch.no_grad():  # HF wants [b, t, c, h, w]
    return model(torch.from_numpy(video).permute(0, 1, 4, 2, 3)).logits.numpy()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  cfg = transformers.VivitConfig(
      image_size=[16, 12], num_frames=4, tubelet_size=[2, 4, 3], hidden_size=32,
      num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=6)
  torch.manual_seed(0)
  model = transformers.VivitForVideoClassification(cfg).eval()
  with torch.no_grad():  # HF zero-inits cls and position embeddings: make every tensor count
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.1)
  path = tmp_path_factory.mktemp("hf") / "vivit_tiny"
  model.save_pretrained(path)
  return path, model


def test_import_matches_hf_logits_and_export_round_trips(hf_dir, tmp_path):
  path, hf_model = hf_dir
  x = lib.video(VIDEO)
  model_config, params = ckpt.import_hf(str(path))
  assert model_config.patches.size == (4, 3, 2) and model_config.video_size == (4, 16, 12)
  model = build_model(model_config, model_config.num_classes)
  ours = np.asarray(model.apply({"params": params}, x, train=False))
  np.testing.assert_allclose(ours, _hf_logits(hf_model, x), atol=1e-4, rtol=0)

  out = ckpt.export_hf(model_config, params, str(tmp_path / "exported"))
  written = json.loads((tmp_path / "exported" / "config.json").read_text())
  assert written["hidden_act"] == "gelu_fast" and written["tubelet_size"] == [2, 4, 3]
  reloaded = transformers.VivitForVideoClassification.from_pretrained(out).eval()
  np.testing.assert_allclose(_hf_logits(reloaded, x), ours, atol=1e-4, rtol=0)
  with pytest.raises(FileExistsError):
    ckpt.export_hf(model_config, params, out)


def test_older_hub_names_and_state_dicts(hf_dir):
  """The hub's google/vivit-b-16x2-kinetics400 uses transformers<5 names; both are read."""
  path, hf_model = hf_dir
  _, new = ckpt.import_hf(str(path))
  old_names = {}
  for k, v in hf_model.state_dict().items():
    k = k.replace("vivit.layers.", "vivit.encoder.layer.")
    k = re.sub(r"attention\.([qkv])_proj", lambda m: "attention.attention." +
               {"q": "query", "k": "key", "v": "value"}[m[1]], k)
    k = k.replace("attention.o_proj", "attention.output.dense")
    k = k.replace("mlp.fc1", "intermediate.dense").replace("mlp.fc2", "output.dense")
    old_names[k] = v
  assert "vivit.encoder.layer.1.attention.attention.query.weight" in old_names
  _, old = ckpt.import_hf(old_names, hf_config=hf_model.config)
  flat_new, flat_old = ckpt.flatten(new), ckpt.flatten(old)
  assert flat_new.keys() == flat_old.keys()
  for k in flat_new:
    np.testing.assert_array_equal(flat_new[k], flat_old[k])


def test_exact_gelu_is_refused_unless_allowed(hf_dir):
  _, hf_model = hf_dir
  exact = dict(hf_model.config.to_dict(), hidden_act="gelu")
  with pytest.raises(ValueError, match=r"hidden_act='gelu'.*tanh-approximated GELU"):
    ckpt.import_hf(hf_model.state_dict(), hf_config=exact)
  ckpt.import_hf(hf_model.state_dict(), hf_config=exact, allow_gelu_mismatch=True)


def test_other_layer_norm_eps_is_refused(hf_dir):
  _, hf_model = hf_dir
  config = dict(hf_model.config.to_dict(), layer_norm_eps=1e-5, hidden_act="gelu_new")
  with pytest.raises(ValueError, match=r"layer_norm_eps=1e-05"):
    ckpt.import_hf(hf_model.state_dict(), hf_config=config)


def test_tensors_without_a_place_are_listed(hf_dir):
  _, hf_model = hf_dir
  fewer_layers = dict(hf_model.config.to_dict(), num_hidden_layers=1)
  with pytest.raises(ckpt.CheckpointMismatchError, match=r"vivit.layers.1.attention.q_proj.weight"):
    ckpt.import_hf(hf_model.state_dict(), hf_config=fewer_layers)


def test_missing_folder_is_named(tmp_path):
  with pytest.raises(ckpt.CheckpointFormatError, match="not found"):
    ckpt.import_hf(str(tmp_path / "nothing_here"))


def test_export_of_another_variant_is_refused(scenic_ref, tmp_path):
  fe = lib.read_config(scenic_ref / "vivit/factorized_encoder_token/config.json")
  fe_params = ckpt.load_scenic_checkpoint(scenic_ref / "vivit/factorized_encoder_token")
  with pytest.raises(ValueError, match=r"attention_config.type='factorized_encoder' \(HF has only"):
    ckpt.export_hf(fe, fe_params, str(tmp_path / "fe_hf"))
  assert not (tmp_path / "fe_hf").exists()
