"""Rollouts: imagined ones in the learned ensemble, real ones in the environment."""
