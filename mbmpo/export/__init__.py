"""Export of a trained run to a self-contained ONNX policy bundle (see `mbmpo.runtime` for loading)."""
