"""Torch-free deployment runtime: load a verified bundle, act, and adapt with one step.

Imports only numpy and onnxruntime (and the bundle's own reward.py), so it runs on a robot computer
without torch. `load(PDIR)` -> `Policy`.
"""

from mbmpo.runtime.bundle import BundleError
from mbmpo.runtime.policy import AdaptationRefused, Policy, load

__all__ = ["AdaptationRefused", "BundleError", "Policy", "load"]
