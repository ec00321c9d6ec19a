"""Rollout videos: one deterministic episode rendered offscreen by MuJoCo (set MUJOCO_GL=egl on a machine
without a display), written as an MP4 file (PyAV) or as an animated GIF in TensorBoard."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mbmpo.errors import UserError
from mbmpo.tasks.base import TaskSpec

Act = Callable[[np.ndarray], np.ndarray]  # observation D -> action A


def _frame_source(env: Any, height: int, width: int) -> Callable[[], np.ndarray]:
    """H x W x 3 uint8 frames of the env's current state: the task's own camera for Gymnasium's MuJoCo
    tasks (it follows the robot), MuJoCo's default free camera for a task YAML's model."""
    import mujoco

    base = env.unwrapped
    if hasattr(base, "mujoco_renderer"):
        base.render_mode = "rgb_array"
        return lambda: np.asarray(base.mujoco_renderer.render("rgb_array"))
    renderer = mujoco.Renderer(base.model, height, width)

    def frame() -> np.ndarray:
        renderer.update_scene(base.data)
        return renderer.render().copy()

    return frame


def render_episode(task: TaskSpec, act: Act, seed: int, horizon: int | None = None, height: int = 240,
                   width: int = 320) -> tuple[list[np.ndarray], float]:
    """One episode of `act` from reset `seed`: its frames (one per state, H x W x 3 uint8) and its return."""
    horizon = horizon or task.horizon
    env = task.make_env(horizon)
    try:
        frame = _frame_source(env, height, width)
        obs, _ = env.reset(seed=seed)
        frames, ret = [frame()], 0.0
        for _ in range(horizon):
            obs, reward, terminated, truncated, _ = env.step(task.clip_action(np.asarray(act(obs), np.float64)))
            ret += float(reward)
            frames.append(frame())
            if terminated or truncated:
                break
    except Exception as err:  # no GL context, most often: say how to get one
        raise UserError(f"rendering {task.name} failed: {type(err).__name__}: {err} (headless machine? set "
                        f"MUJOCO_GL=egl or osmesa)") from None
    finally:
        env.close()
    return frames, ret


def write_mp4(frames: list[np.ndarray], path: Path, fps: float) -> Path:
    """Frames (H x W x 3 uint8, even H and W after cropping) as an H.264 MP4 (MPEG-4 where H.264 is missing)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = (frames[0].shape[0] // 2) * 2, (frames[0].shape[1] // 2) * 2
    with av.open(str(path), mode="w") as container:
        try:
            stream = container.add_stream("libx264", rate=max(1, round(fps)))
        except Exception:
            stream = container.add_stream("mpeg4", rate=max(1, round(fps)))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h, :w]), format="rgb24")))
        container.mux(stream.encode())
    return path


def gif_bytes(frames: list[np.ndarray], fps: float) -> bytes:
    """Frames as an animated GIF (TensorBoard plays these in its image tab)."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return buffer.getvalue()


def add_video(writer: Any, tag: str, frames: list[np.ndarray], step: int, fps: float) -> None:
    """A rollout video in a torch SummaryWriter, as TensorBoard's own video summaries are: an animated image."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    h, w = frames[0].shape[:2]
    image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=gif_bytes(frames, fps))
    writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
    writer.flush()
