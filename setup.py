"""vivit_jax: ViViT video transformers in JAX/Flax."""
import setuptools

setuptools.setup(
    name="vivit_jax",
    version="0.1.0",
    description="ViViT (Arnab et al., ICCV 2021) in JAX/Flax: models, data, training, Scenic checkpoints.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["vivit_jax", "vivit_jax.*"]),
    install_requires=[
        # jax 0.10.x is the newest on Python 3.11; Colab's newer Python has 0.12.
        "jax>=0.10,<0.13",
        "flax>=0.12,<0.14",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "ml-collections>=1.0",
        "clu>=0.0.12",
        "tensorboard>=2.16",  # metrics.TensorBoardFile: event files without TensorFlow
        "absl-py>=2.0",
        "numpy>=1.26",
        "scipy>=1.11",
        "msgpack>=1.0",
        "etils[epath]>=1.7",
        "tensorflow-cpu>=2.16",
        "tensorflow-datasets>=4.9",  # dataset_configs.tfds_name (data/tfds_source.py)
        "importlib_resources",  # tensorflow-datasets imports it without declaring it
        "av>=12",
        "tqdm>=4.60",
        "google-crc32c>=1.5",  # TFRecord CRCs (C implementation)
        "matplotlib>=3.7",  # tools/visualize.py (Agg backend: no display needed)
        "Pillow>=10",  # tools/visualize.py: overlays and GIFs
    ],
    extras_require={
        # Accelerators (docs/install.md): jax's own extras, at the jax version above.
        "cuda12": ["jax[cuda12]>=0.10,<0.13"],
        "tpu": ["jax[tpu]>=0.10,<0.13"],
        "hf": ["torch>=2.4", "transformers>=4.40", "safetensors>=0.4"],
        # TPU VMs: jax with libtpu (from PyPI), the same jax range as above.
        "tpu": ["jax[tpu]>=0.10,<0.13"],
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            # The CPU build: a bare `torch` requirement resolves to a multi-GB CUDA wheel.
            "torch==2.13.0",
            "transformers>=4.40",
            "safetensors>=0.4",
            # tests/test_notebook.py executes colabs/finetune.ipynb.
            "nbclient>=0.9",
            "nbformat>=5.9",
            "ipykernel>=6.25",
        ],
    },
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
