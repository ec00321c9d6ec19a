"""Names of MuJoCo state entries, so observation layouts carry joint names (the deployment contract)."""

from __future__ import annotations

import mujoco

_QPOS_WIDTH = {mujoco.mjtJoint.mjJNT_FREE: 7, mujoco.mjtJoint.mjJNT_BALL: 4,
               mujoco.mjtJoint.mjJNT_SLIDE: 1, mujoco.mjtJoint.mjJNT_HINGE: 1}
_QVEL_WIDTH = {mujoco.mjtJoint.mjJNT_FREE: 6, mujoco.mjtJoint.mjJNT_BALL: 3,
               mujoco.mjtJoint.mjJNT_SLIDE: 1, mujoco.mjtJoint.mjJNT_HINGE: 1}


def state_names(model: mujoco.MjModel) -> tuple[list[str], list[str]]:
    """Per-entry names of qpos (nq) and qvel (nv): 'qpos:<joint>' or 'qpos:<joint>:<i>' for wide joints."""
    qpos: list[str] = []
    qvel: list[str] = []
    for j in range(model.njnt):
        joint = model.joint(j)
        name = joint.name or f"joint{j}"
        kind = mujoco.mjtJoint(int(model.jnt_type[j]))
        for prefix, width, out in (("qpos", _QPOS_WIDTH[kind], qpos), ("qvel", _QVEL_WIDTH[kind], qvel)):
            out.extend([f"{prefix}:{name}"] if width == 1 else [f"{prefix}:{name}:{i}" for i in range(width)])
    return qpos, qvel


def actuator_joints(model: mujoco.MjModel) -> list[str]:
    """The joint each actuator drives ('' for tendon, site or body transmissions)."""
    names = []
    for i in range(model.nu):
        if int(model.actuator_trntype[i]) == mujoco.mjtTrn.mjTRN_JOINT:
            j = int(model.actuator_trnid[i, 0])
            names.append(model.joint(j).name or f"joint{j}")
        else:
            names.append("")
    return names
