"""Reward of the two-link arm: forward kinematics with cos/sin on numpy arrays (the robot) and torch tensors
(imagination) alike, through the array API standard (`array_api_compat.array_namespace`).

Observation: [q_shoulder, q_elbow, dq_shoulder, dq_elbow] (all qpos then all qvel), shape ... x 4.
"""

from array_api_compat import array_namespace

L1, L2 = 0.2, 0.15  # link lengths (m), as in arm2.xml
TARGET_X, TARGET_Y = 0.1, 0.25


def fingertip(obs):
    """(x, y) of the fingertip for joint angles obs[..., 0:2]; numpy or torch."""
    xp = array_namespace(obs)
    q1, q12 = obs[..., 0], obs[..., 0] + obs[..., 1]
    return L1 * xp.cos(q1) + L2 * xp.cos(q12), L1 * xp.sin(q1) + L2 * xp.sin(q12)


def reward(obs, act, next_obs):
    """Minus the fingertip's distance to the target at s', minus a small effort and velocity cost."""
    xp = array_namespace(next_obs)
    x, y = fingertip(next_obs)
    distance = xp.sqrt((x - TARGET_X) ** 2 + (y - TARGET_Y) ** 2)
    return -distance - 0.01 * xp.sum(act * act, axis=-1) - 0.001 * xp.sum(next_obs[..., 2:] ** 2, axis=-1)
