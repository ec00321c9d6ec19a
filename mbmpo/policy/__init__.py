"""The Gaussian MLP meta-policy, handled functionally as a dict of tensors."""
