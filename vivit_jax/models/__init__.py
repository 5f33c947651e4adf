"""ViViT models (flax.linen), parameter-compatible with Scenic."""
from vivit_jax.models.heads import split_logits
from vivit_jax.models.vivit import (ATTENTION_TYPES, CLASSIFIERS, FactorizedEncoderViViT, ViViT,
                                    build_model)

__all__ = ["ATTENTION_TYPES", "CLASSIFIERS", "FactorizedEncoderViViT", "ViViT", "build_model",
           "split_logits"]
