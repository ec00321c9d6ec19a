"""The dynamics ensemble: K MLPs in one batched module, their training, and the transition buffer."""
