"""Reward and termination of the point-mass example; numpy or torch arrays of shape ... x D.

Observation: [x, y, vx, vy] (all qpos then all qvel). Goal: reach (0.3, -0.2) and stay there.
"""

GOAL_X, GOAL_Y = 0.3, -0.2


def reward(obs, act, next_obs):
    """Negative distance of s' to the goal, minus a small control cost."""
    dx, dy = next_obs[..., 0] - GOAL_X, next_obs[..., 1] - GOAL_Y
    return -((dx * dx + dy * dy) ** 0.5) - 0.01 * (act * act).sum(-1)


def terminated(obs, act, next_obs):
    """Leaving the 2 m x 2 m table ends the episode."""
    return (abs(next_obs[..., 0]) > 1.0) | (abs(next_obs[..., 1]) > 1.0)
