"""Video data: DMVR-format TFRecords or TFDS datasets, sampling, augmentation, the synthetic set."""
from vivit_jax.data.pipeline import VideoDataset, build_dataset

__all__ = ["VideoDataset", "build_dataset"]
