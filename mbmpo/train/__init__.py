"""The MB-MPO training loop, its run directory (checkpoints, data, logs) and evaluation."""
