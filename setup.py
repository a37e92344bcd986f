from setuptools import find_packages, setup

setup(
    name="rlhf_jax",
    version="0.1.0",
    description="InstructGPT (SFT, K-wise reward model, PPO-ptx) in JAX/Flax, sharded over any mesh",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["rlhf_jax", "rlhf_jax.*"]),
    install_requires=[
        "jax>=0.10.2,<0.11",
        "jaxlib>=0.10.2,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "transformers>=5.23,<6",
        "jinja2>=3.1.6",  # transformers renders chat templates with it (its chat-template extra's floor)
        "tokenizers>=0.23",
        "safetensors>=0.8",
        "gguf>=0.19",
        "ml_collections>=1.1",
        "absl-py>=2.0",
        "tensorflow-datasets>=4.9.10",
        "grain>=0.2.18",
        "numpy>=2.0",
        "scipy>=1.13",  # Student-t intervals over seeds (the ablations); jax needs it too
        "tqdm>=4.66",
        "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
        "matplotlib>=3.8",  # the pipeline report's plots
        "importlib_resources",  # tfds imports it to locate builders defined in a package
    ],
    extras_require={
        # Parity tests compare against transformers' PyTorch models; 2.13.0 is the CPU wheel.
        # The notebooks are executed by the tests (nbclient, in an ipykernel kernel).
        # filelock: the xdist workers share one run of the micro pipeline (tests/conftest.py).
        # peft: the LoRA export tests load our adapters with PEFT.
        "test": ["pytest>=8", "pytest-xdist>=3.6", "filelock>=3.12", "torch==2.13.0",
                 "accelerate>=1.0", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29",
                 "peft==0.21.2"],
        # benchmarks/train_steps.py runs TRL's trainers side by side with ours (memory.py: + PEFT).
        "bench": ["torch==2.13.0", "accelerate>=1.0", "trl==1.16.0", "datasets>=5.2",
                  "peft==0.21.2"],
    },
)
