"""The front door: bad input ends in a few lines and exit code 2, before any work is done."""
import pytest

from tests.test_train_cli import CONFIG, _main
from tests import train_procs

K400 = train_procs.REPO / "configs" / "k400_fe.py"
HELP = "--help` lists the flags"


def _assert_bad_input(out, *fragments):
  assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  assert "mesh {" not in out.stderr  # stopped before the mesh was built
  last = [line for line in out.stderr.splitlines() if line.startswith("vivit_jax: bad input")]
  assert len(last) == 1, out.stderr[-3000:]
  for fragment in fragments:
    assert fragment in out.stderr, (fragment, out.stderr[-3000:])


def test_placeholder_init_checkpoint_says_how_to_start_from_scratch(tmp_path):
  out = _main(tmp_path, f"--config={K400}", "--workdir=run")
  _assert_bad_input(out, "config.init_from.checkpoint_path='path_to_checkpoint_of_vit_b_16' is "
                    "the config file's placeholder",
                    "--config.init_from.checkpoint_path=None")


@pytest.mark.parametrize("unset", ["None", "none", ""])
def test_unset_init_checkpoint_trains_from_scratch_then_needs_data(tmp_path, unset):
  """`None`, `none` and empty all mean "from scratch"; the next check is the missing data."""
  out = _main(tmp_path, f"--config={K400}", "--workdir=run",
              f"--config.init_from.checkpoint_path={unset}")
  _assert_bad_input(out, "config.dataset_configs.base_dir: ", "kinetics400 is not a folder",
                    "make_tfrecords")


def test_missing_init_checkpoint_is_named(tmp_path):
  out = _main(tmp_path, f"--config={K400}", "--workdir=run",
              f"--config.init_from.checkpoint_path={tmp_path / 'vit_b16'}")
  _assert_bad_input(out, f"config.init_from.checkpoint_path: {tmp_path / 'vit_b16'} does not "
                    "exist")


def test_missing_table_shards_are_named(tmp_path):
  (tmp_path / "k400").mkdir()
  out = _main(tmp_path, f"--config={K400}", "--workdir=run",
              "--config.init_from.checkpoint_path=", f"--config.dataset_configs.base_dir="
              f"{tmp_path / 'k400'}")
  _assert_bad_input(out, "config.dataset_configs.tables.train: ", "1024 shards missing")


def test_workdir_that_is_a_file(tmp_path):
  (tmp_path / "run").write_text("not a folder")
  out = _main(tmp_path, f"--config={CONFIG}:runlocal", "--workdir=run")
  _assert_bad_input(out, "--workdir=run is a file")


def test_eval_without_checkpoint(tmp_path):
  out = _main(tmp_path, f"--config={CONFIG}:runlocal", "--workdir=run", "--mode=eval")
  _assert_bad_input(out, "holds no checkpoint and config.eval_checkpoint_path is not set")


def test_unreadable_eval_checkpoint_is_one_message(tmp_path):
  bad = tmp_path / "checkpoint_7"
  bad.write_bytes(b"\x00garbage" * 10)
  out = _main(tmp_path, f"--config={CONFIG}:runlocal", "--workdir=run", "--mode=eval",
              f"--config.eval_checkpoint_path={bad}")
  assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
  assert "vivit_jax: bad input: " in out.stderr and str(bad) in out.stderr


def test_verbose_shows_the_traceback(tmp_path):
  out = _main(tmp_path, f"--config={K400}", "--workdir=run", "--verbose")
  assert out.returncode == 2 and "Traceback" in out.stderr and "UserInputError" in out.stderr


@pytest.mark.parametrize("args,fragment", [
    (["--config.num_training_stepz=3"],
     'names no field of the config (--config.num_training_stepz)'),
    (["--config.optimizer=adamm"], "optimizer='adamm'; valid: ['momentum'"),
    (["--config.steps_per_test=4"], "names no field of the config (--config.steps_per_test)"),
], ids=["unknown_field", "bad_value", "scenic_only_field"])
def test_bad_overrides(tmp_path, args, fragment):
  out = _main(tmp_path, f"--config={CONFIG}:runlocal", "--workdir=run", *args)
  _assert_bad_input(out, fragment)


def test_missing_config_file(tmp_path):
  out = _main(tmp_path, f"--config={tmp_path / 'nope.py'}", "--workdir=run")
  _assert_bad_input(out, "No such file or directory", HELP)


def test_bad_config_argument(tmp_path):
  out = _main(tmp_path, f"--config={CONFIG}:runloca", "--workdir=run")
  _assert_bad_input(out, "config argument 'runloca'", "['runlocal']", HELP)


def test_missing_workdir_flag(tmp_path):
  out = _main(tmp_path, f"--config={CONFIG}")
  _assert_bad_input(out, "--workdir is required (except with --dry_run)")


def test_help_states_the_conventions(tmp_path):
  out = _main(tmp_path, "--help")
  assert out.returncode == 0
  for fragment in ("given as None, none or", "exit code 2", "--verbose", "num_training_epochs"):
    assert fragment in out.stdout, fragment
