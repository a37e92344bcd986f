"""Stage drivers: data, sharded state, the training loop, checkpoints, logs and outputs."""
