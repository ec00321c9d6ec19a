"""Rollout videos: offscreen MuJoCo frames, an MP4 that decodes to them, a GIF in TensorBoard, and
`mbmpo eval --video` end to end."""

import io
import json
from pathlib import Path

import av
import numpy as np
from PIL import Image

from mbmpo.cli import main as cli
from mbmpo.tasks import get_task
from mbmpo.train.video import add_video, gif_bytes, render_episode, write_mp4

ROOT = Path(__file__).resolve().parent.parent


def test_frames_follow_the_robot_and_the_mp4_decodes_to_them(tmp_path: Path) -> None:
    task = get_task("InvertedPendulum-v5")
    frames, ret = render_episode(task, lambda obs: np.array([3.0]), seed=0, horizon=6)  # pushed hard: it moves
    assert 2 <= len(frames) <= 7 and ret > 0
    assert all(f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3 for f in frames)
    assert frames[0].std() > 5 and np.abs(frames[-1].astype(int) - frames[0]).mean() > 0.1  # a scene, moving
    path = write_mp4(frames, tmp_path / "v.mp4", fps=25)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == len(frames) and decoded[0].shape[:2] == ((frames[0].shape[0] // 2) * 2,
                                                                   (frames[0].shape[1] // 2) * 2)
    assert np.abs(decoded[0].astype(int) - frames[0][:decoded[0].shape[0], :decoded[0].shape[1]]).mean() < 8


def test_a_task_yaml_robot_renders_with_mujocos_own_camera() -> None:
    task = get_task(str(ROOT / "examples" / "arm2" / "task.yaml"))
    frames, _ = render_episode(task, lambda obs: np.array([0.5, -0.5]), seed=1, horizon=3, height=60, width=80)
    assert len(frames) == 4 and frames[0].shape == (60, 80, 3) and frames[0].std() > 1


def test_a_rollout_video_reaches_tensorboard_as_an_animated_image(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    frames = [np.full((16, 24, 3), 40 * i, np.uint8) for i in range(4)]
    assert Image.open(io.BytesIO(gif_bytes(frames, 10))).n_frames == 4
    writer = SummaryWriter(str(tmp_path))
    add_video(writer, "rollout/meta_policy", frames, step=1234, fps=10)
    writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    (image,) = events.Images("rollout/meta_policy")
    assert image.step == 1234 and Image.open(io.BytesIO(image.encoded_image_string)).n_frames == 4


def test_mbmpo_eval_video_renders_the_bundles_meta_policy(pendulum_bundle: Path, tmp_path: Path,
                                                          capsys) -> None:
    video = tmp_path / "out" / "pendulum.mp4"
    assert cli(["eval", "--policy", str(pendulum_bundle), "--task", "InvertedPendulum-v5", "--episodes", "1",
                "--video", str(video), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert video.is_file() and result["video"] == str(video) and result["video_frames"] >= 2
    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == result["video_frames"]
