"""Tasks: the environment to collect real data in, and the reward and termination used in imagination."""

from mbmpo.tasks.base import TaskSpec
from mbmpo.tasks.registry import TASK_NAMES, get_task

__all__ = ["TASK_NAMES", "TaskSpec", "get_task"]
