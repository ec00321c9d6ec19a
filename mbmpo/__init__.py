"""MB-MPO: Model-Based Meta-Policy Optimization (Clavera, Rothfuss et al., CoRL 2018).

A ROS-free library: dynamics ensemble (`mbmpo.models`), Gaussian meta-policy (`mbmpo.policy`),
the MAML-style meta-optimiser (`mbmpo.meta`), imagined and real rollouts (`mbmpo.rollouts`),
task definitions (`mbmpo.tasks`) and the training loop (`mbmpo.train`).
"""

__version__ = "0.1.0"
