"""Video data: DMVR-format TFRecords, sampling, augmentation, the synthetic motion set."""
from vivit_jax.data.pipeline import VideoDataset, build_dataset

__all__ = ["VideoDataset", "build_dataset"]
