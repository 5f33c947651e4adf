"""Video data: DMVR-format TFRecords or TFDS datasets, sampling, augmentation, the synthetic set.

TensorFlow loads only when a reader is used (`build_dataset`), so `vivit_jax.data.fields`
(what `dataset_configs` may hold) costs nothing to import.
"""

__all__ = ["VideoDataset", "build_dataset"]


def __getattr__(name: str):
  if name in __all__:
    from vivit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    return getattr(pipeline, name)
  raise AttributeError(f"module 'vivit_jax.data' has no attribute {name!r}")
