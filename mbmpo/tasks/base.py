"""`TaskSpec`: everything the library needs to know about a task, in one place.

Reward and termination functions are array-library agnostic: they receive numpy arrays or torch
tensors of shape `... x D` and use only what both support (indexing, arithmetic, comparisons,
`abs`, `.sum(-1)`, `.all(-1)`, `.any(-1)`), so the same function scores imagined states in torch
during training and real transitions in numpy on the robot.

    reward_fn(obs, act, next_obs)      -> ... float   r(s, a, s')
    termination_fn(obs, act, next_obs) -> ... bool    True where the episode ends at s'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

RewardFn = Callable[[Any, Any, Any], Any]
TerminationFn = Callable[[Any, Any, Any], Any]


@dataclass(frozen=True)
class TaskSpec:
    """A task: how to make its environment and how to score imagined transitions.

    `reward_ref` / `termination_ref` are the `module:function` paths of the two functions, so a
    policy bundle can name them and a torch-free runtime can import the same code.
    """

    name: str
    make_env: Callable[..., Any]  # make_env(horizon: int) -> gymnasium.Env
    obs_dim: int
    act_dim: int
    act_low: np.ndarray  # A
    act_high: np.ndarray  # A
    horizon: int  # default episode length (the paper's 200)
    dt: float  # control period in seconds
    reward_fn: RewardFn
    termination_fn: TerminationFn | None
    reward_ref: str
    termination_ref: str | None
    obs_names: tuple[str, ...]
    act_names: tuple[str, ...]
    source: str = ""  # what `get_task` was given: a registered name or the task YAML's absolute path
    preset: str = ""  # the training preset a task YAML names (small | medium | paper); "" = sized to the task
    home: dict[str, Any] | None = None  # a task YAML's `home` (reset:=home; see mbmpo.deploy.reset.HomeSpec)

    def reward(self, obs: Any, act: Any, next_obs: Any) -> Any:
        """r(s, a, s') for batches `... x D`; returns `...`."""
        return self.reward_fn(obs, act, next_obs)

    def terminated(self, obs: Any, act: Any, next_obs: Any) -> Any:
        """Termination at s' for batches `... x D`; all False for tasks without termination."""
        if self.termination_fn is None:
            return abs(next_obs[..., 0]) < 0  # all False, in numpy or torch
        return self.termination_fn(obs, act, next_obs)

    def clip_action(self, act: np.ndarray) -> np.ndarray:
        """Clip `... x A` actions to the actuator limits."""
        return np.clip(act, self.act_low, self.act_high)
