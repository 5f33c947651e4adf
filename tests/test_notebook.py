"""colabs/finetune.ipynb executes top to bottom (nbclient, CPU) with a tiny setting injected after
its `parameters` cell, as papermill does, and leaves what it promises on disk."""
import json
import pathlib

import pytest

from tests import train_procs

NOTEBOOK = pathlib.Path(train_procs.REPO) / "colabs" / "finetune.ipynb"


def _parameters_index(nb) -> int:
  (index,) = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
  return index


@pytest.mark.slow
def test_finetune_notebook_runs_and_writes_its_results(tmp_path):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  # 3 steps: the schedule needs more steps than its 2 warm-up steps.
  tiny = {"WORKDIR": str(tmp_path / "work"), "VIDEOS_PER_CLASS": {"train": 2, "test": 1},
          "PRETRAIN_VIDEOS": 16, "PRETRAIN_STEPS": 3, "FINETUNE_STEPS": 3, "BATCH_SIZE": 8}
  index = _parameters_index(nb)
  assert index == 1  # the parameters come first
  nb.cells.insert(index + 1, nbformat.v4.new_code_cell(
      "\n".join(f"{k} = {v!r}" for k, v in tiny.items())))
  nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  work = tmp_path / "work"
  assert "{'train': 16, 'test': 8} videos; 8 classes" in text
  assert "starting from " + str(work / "pretrained_checkpoint") in text
  # The top-5 predictions of the clip, as predict prints them.
  assert "down_fast_0.mp4 (1 views)\n  1. " in text and "\n  5. " in text
  cm = json.loads((work / "finetune" / "confusion_matrix.json").read_text())
  assert cm["split"] == "test" and sum(map(sum, cm["heads"][""]["confusion_matrix"])) == 8
  assert (work / "finetune" / "report.html").exists()
  assert (work / "attention" / "down_fast_0_attention.png").exists()
  assert (work / "attention" / "down_fast_0_attention.gif").exists()
  images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
  assert len(images) == 3  # attention grid, confusion matrix, loss curve
