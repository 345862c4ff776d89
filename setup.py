"""janus_jax: Janus / Janus-Pro / JanusFlow in JAX + Flax Linen."""
import setuptools

CORE = [
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "ml_collections>=1.1.0",
    "grain>=0.2.18",
    "array-record>=0.8.6",
    "tensorflow-datasets>=4.9.10",
    # clu's metric writers and tfds' image features import TensorFlow; the CPU build is enough everywhere.
    "tensorflow-cpu>=2.21",
    "tensorboard",
    "clu>=0.0.12",
    "absl-py",
    "numpy",
    "pillow",
    "safetensors",
    "tokenizers",
    "sentencepiece",
    "tqdm",
    # janus_jax.report (sweep tables and plots; `janus-jax report`).
    "pandas",
    "matplotlib",
    # janus_jax.quantization (weight-only int8 decode: janus_jax.load(..., quantize="int8")).
    "qwix==0.1.8",
]

setuptools.setup(
    name="janus_jax",
    version="0.1.0",
    description="JAX/Flax research codebase for the Janus family of unified multimodal models.",
    packages=setuptools.find_packages(include=["janus_jax", "janus_jax.*"]),
    python_requires=">=3.11",
    install_requires=CORE,
    extras_require={
        "gpu": ["jax[cuda12]>=0.10.2,<0.11"],
        "tpu": ["jax[tpu]>=0.10.2,<0.11"],
        # Reading PyTorch pickle (.bin) checkpoints in the converter. Never used by the model code.
        "torch": ["torch==2.13.0"],
        # launch/sweep.py --xm (launch/xm_launch.py). It pins protobuf<7 (6.33 works with the TensorFlow stack).
        "xm": ["xmanager==0.8.5.post1"],
        # papermill + nbclient + ipykernel: tests/test_notebooks.py executes notebooks/*.ipynb under a real kernel.
        "dev": ["pytest", "pytest-xdist", "torch==2.13.0", "transformers==5.23.0", "diffusers==0.42.1",
                "xmanager==0.8.5.post1", "papermill>=2.7.0", "nbclient>=0.11.0", "nbformat>=5.11.1",
                "ipykernel>=7.4.0"],
    },
    entry_points={"console_scripts": ["janus-jax=janus_jax.cli:main"]},
)
