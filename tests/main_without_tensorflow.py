"""`python -m vivit_jax.main ...` as on a machine without TensorFlow (for
tests/test_data_synthetic_device.py).

  python tests/main_without_tensorflow.py blocked|installed MAIN_ARGS...

`blocked`: 'tensorflow', 'tensorflow_datasets' and 'tensorboard' cannot be found (import raises
ModuleNotFoundError and `importlib.util.find_spec` says None, as where they are not installed).
`installed`: nothing is hidden. Either way the last line printed at exit names the TensorFlow
modules that were imported (tensorboard's own are not TensorFlow):
`TENSORFLOW_MODULES_IMPORTED=[...]`.
"""
import atexit
import importlib.machinery
import runpy
import sys

HIDDEN = ("tensorflow", "tensorflow_datasets", "tensorboard")


class _WithoutTensorFlow:
  """The path finder, except that it finds nothing of `HIDDEN`."""

  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in HIDDEN:
      return None
    return importlib.machinery.PathFinder.find_spec(name, path, target)

  def invalidate_caches(self):
    importlib.machinery.PathFinder.invalidate_caches()

  def find_distributions(self, *args, **kwargs):
    return importlib.machinery.PathFinder.find_distributions(*args, **kwargs)


def _report():
  imported = sorted(m for m in sys.modules
                    if m.split(".")[0] in ("tensorflow", "tensorflow_datasets"))
  print(f"TENSORFLOW_MODULES_IMPORTED={imported}", flush=True)


if __name__ == "__main__":
  mode, args = sys.argv[1], sys.argv[2:]
  if mode not in ("blocked", "installed"):
    raise SystemExit(f"first argument: 'blocked' or 'installed', not {mode!r}")
  if mode == "blocked":
    sys.meta_path[:] = [_WithoutTensorFlow() if f is importlib.machinery.PathFinder else f
                        for f in sys.meta_path]
  atexit.register(_report)
  sys.argv = ["vivit_jax.main", *args]
  runpy.run_module("vivit_jax.main", run_name="__main__", alter_sys=True)
