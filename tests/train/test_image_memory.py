"""Peak memory of training and evaluation does not grow with the number of images (issue 16).

A child process trains lora_uniform on N training images and evaluates the result on N test
images; another does the same with 4N. The images are decoded and preprocessed one batch at a
time (nast.models.embeddings), so the children's peak RSS (``ru_maxrss`` of the child itself)
must agree within 10 %. Loading every image at once (the pre-streaming code) costs
N x 3 x 224 x 224 x 4 bytes (0.6 MB per image at the tiny model's 224 px input here), i.e.
~110 MB more at 4N on a ~0.6 GB baseline, which this test fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import tiny_world
import yaml

from nast.models.testing import save_tiny

N = 64  # >= the encoder batch (64): both runs hold full batches
CHILD = r"""
import json, resource, sys
from nast.cli import main
argv_train, argv_eval = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert main(argv_train) == 0
assert main(argv_eval) == 0
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _world(tmp: Path, n: int) -> tuple[list[str], list[str]]:
    cfg_dir = tmp / "configs"
    cfg_dir.mkdir(parents=True)
    cfg = json.loads((tiny_world.CONFIGS / "open_clip_tiny.json").read_text())
    cfg["vision_cfg"].update(image_size=224, patch_size=32, layers=1)
    (cfg_dir / "open_clip_tiny.json").write_text(json.dumps(cfg))
    w = tiny_world.build(tmp, splits=["train"] * n + ["validate"] * 2 + ["test"] * n)
    params = w["params"]
    params["model"] = save_tiny("open_clip", cfg_dir, tmp / "base320", seed=0)
    params["train"].update(epochs=1, batch_size=8, num_threads=1)
    params["evaluate"].update(bootstrap=10)
    Path(w["files"]["params"]).write_text(yaml.safe_dump(params))
    f = w["files"]
    train = ["train", "--params", f["params"], "--method", "lora_uniform", "--cohort", f["cohort"],
             "--benchmark", f["benchmark"], "--contextual", f["contextual"], "--out", str(tmp / "model")]
    evaluate = ["evaluate", "--params", f["params"], "--method", "lora_uniform", "--model-dir", str(tmp / "model"),
                "--cohort", f["cohort"], "--benchmark", f["benchmark"], "--contextual", f["contextual"],
                "--out", str(tmp / "eval.json")]
    return train, evaluate


def _peak_rss_mb(tmp: Path, n: int) -> float:
    train, evaluate = _world(tmp, n)
    env = {**os.environ, "NAST_TRACKING": "0", "NAST_IMAGE_WORKERS": "0", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(tiny_world.REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("NAST_RECORD_PARAMS", None)
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(train), json.dumps(evaluate)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kb = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("MAXRSS_KB")]
    assert kb, proc.stdout[-2000:]
    assert json.loads((tmp / "eval.json").read_text())["n_auroc_images"] == n
    return kb[0] / 1024


def test_peak_rss_does_not_grow_with_the_number_of_images(tmp_path):
    small = _peak_rss_mb(tmp_path / "n", N)
    large = _peak_rss_mb(tmp_path / "4n", 4 * N)
    # what loading every image at once would add at 4N over N (train + test images)
    all_at_once = 2 * 3 * N * 3 * 224 * 224 * 4 / 2**20
    print(f"PEAK_RSS small={small:.0f}MB large={large:.0f}MB")
    assert large <= small * 1.10, (
        f"peak RSS {large:.0f} MB with {4 * N}+{4 * N} images vs {small:.0f} MB with {N}+{N} "
        f"(> 10 % more; loading all images at once adds ~{all_at_once:.0f} MB)")
