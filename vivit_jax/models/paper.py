"""Published figures of the ViViT paper (Arnab et al. 2021, arXiv 2103.15691v2) our models are
checked and benchmarked against: one copy for tests/test_model_sizes.py and benchmarks/."""

# ViViT-B/16x2 on 32x224x224 clips, 400 classes: (parameters in millions, inference GFLOPs per
# view as multiply-accumulates; XLA counts 2 FLOPs per MAC). Table 2.
TABLE2_B16X2 = {
    "spacetime": (88.9, 455.2),
    "factorized_encoder": (115.1, 284.4),
    "factorized_self_attention_block": (117.3, 372.3),
    "factorized_dot_product_attention": (88.9, 277.1),
}
# ViViT-L/16x2 factorised encoder at 32 frames: GMACs per view (§4.2, the text of Fig. 9).
LARGE_FE_GMACS = 995.3
# The clip (frames, crop) these figures are for.
CLIP = (32, 224)
