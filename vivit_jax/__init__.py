"""vivit_jax: ViViT in JAX/Flax. `vivit_jax.predict(videos, config=..., checkpoint=...)` runs a model
on video files (see vivit_jax/tools/predict.py); everything else lives in the submodules."""


def predict(videos, **kwargs):
  """Top-k classes of video files; see `vivit_jax.tools.predict.predict`."""
  from vivit_jax.tools import predict as predict_tool  # pylint: disable=g-import-not-at-top
  return predict_tool.predict(videos, **kwargs)
