"""Deploy-time latency: act() for one observation and adapt() for 200 / 1,000 / 4,000 transitions,
ONNX Runtime (the torch-free runtime) and torch side by side in the same process.

    python benchmarks/runtime_latency.py [--policy PDIR] [--repeats N] [--out results.json]

Without --policy a HalfCheetah-v5-sized bundle (policy 32x32) is made from a tiny training run.
Prints medians and p99s in microseconds / milliseconds; the machine is shared, so compare ratios.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mbmpo.cli import main as cli
from mbmpo.meta.inner import adapt as torch_adapt
from mbmpo.policy.gaussian import mean_action
from mbmpo.runtime import load

TINY = Path(__file__).resolve().parent.parent / "tests" / "configs" / "tiny.yaml"


def _timeit(fn, repeats: int) -> np.ndarray:
    for _ in range(min(20, repeats)):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out


def _bundle(folder: Path) -> Path:
    cfg = folder / "cfg.yaml"
    cfg.write_text(TINY.read_text().replace("policy: {hidden: [8]}", "policy: {hidden: [32, 32]}"))
    run = folder / "run"
    cli(["train", "--task", "HalfCheetah-v5", "--steps", "100", "--out", str(run), "--config", str(cfg), "--no-progress"])
    cli(["export", "--run", str(run), "--out", str(folder / "bundle")])
    return folder / "bundle"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    pdir = args.policy or _bundle(tmp)
    policy = load(pdir)
    params = {k: torch.as_tensor(v) for k, v in policy.params.items()}
    d, a = policy.bundle.obs_dim, policy.bundle.act_dim
    rng = np.random.default_rng(0)
    obs1 = rng.standard_normal(d).astype(np.float32)
    records = []
    cmd = "python benchmarks/runtime_latency.py" + (f" --policy {args.policy}" if args.policy else "")

    ort_act = _timeit(lambda: policy.act(obs1), args.repeats) * 1e6
    with torch.no_grad():
        x = torch.as_tensor(obs1)[None]
        torch_act = _timeit(lambda: mean_action(params, x), args.repeats) * 1e6
    print(f"act() one observation: onnxruntime p50 {np.median(ort_act):.1f} us p99 {np.percentile(ort_act, 99):.1f} us;"
          f" torch eager (mean only) p50 {np.median(torch_act):.1f} us p99 {np.percentile(torch_act, 99):.1f} us")
    records += [{"name": "runtime_act_p50_us", "value": float(np.median(ort_act)), "unit": "us", "command": cmd},
                {"name": "runtime_act_p99_us", "value": float(np.percentile(ort_act, 99)), "unit": "us", "command": cmd},
                {"name": "torch_act_p50_us", "value": float(np.median(torch_act)), "unit": "us", "command": cmd}]
    for n in (200, 1000, 4000):
        length = 200
        episodes = [(rng.standard_normal((length + 1, d)).astype(np.float32),
                     rng.uniform(-1, 1, (length, a)).astype(np.float32)) for _ in range(n // length)]
        reps = max(20, args.repeats // (n // 50))
        ort_ad = _timeit(lambda: policy.adapt(episodes, max_kl=1e9), reps) * 1e3
        obs = torch.as_tensor(np.concatenate([o[:-1] for o, _ in episodes]))[None, :, None]
        act = torch.as_tensor(np.concatenate([x for _, x in episodes]))[None, :, None]
        adv = torch.as_tensor(policy.advantages([(o[:-1], x, np.asarray(policy.bundle.reward_fn(o[:-1], x, o[1:]),
                                                  np.float32)) for o, x in episodes]).reshape(-1))[None, :, None]
        mask = torch.ones(1, n, 1)
        torch_ad = _timeit(lambda: torch_adapt(params, obs, act, adv, mask, 0.001, create_graph=False), reps) * 1e3
        print(f"adapt() {n} transitions: runtime (rewards + baseline + GAE + ONNX step + KL check) p50 "
              f"{np.median(ort_ad):.2f} ms p99 {np.percentile(ort_ad, 99):.2f} ms; torch autograd step alone p50 "
              f"{np.median(torch_ad):.2f} ms")
        records += [{"name": f"runtime_adapt_{n}_p50_ms", "value": float(np.median(ort_ad)), "unit": "ms", "command": cmd},
                    {"name": f"torch_adapt_step_{n}_p50_ms", "value": float(np.median(torch_ad)), "unit": "ms",
                     "command": cmd}]
    if args.out:
        args.out.write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
