"""Two runs on one output folder, and writes that must never share a temp name or leave half files."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faultkit import REPO

from nast.cli import main
from nast.errors import StageError
from nast.io import atomic_write, output_lock


def test_atomic_write_uses_unique_temp_names_in_the_same_folder(tmp_path):
    target = tmp_path / "sub" / "epoch_006.pt"
    with atomic_write(target) as a, atomic_write(target) as b:  # two writers at once
        assert a != b and a.parent == b.parent == target.parent
        a.write_text("first")
        b.write_text("second")
    assert target.read_text() in ("first", "second")
    assert sorted(p.name for p in target.parent.iterdir()) == ["epoch_006.pt"]  # no temp left


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "plot.png"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_trainer_checkpoints_never_share_a_temp_name(tmp_path, monkeypatch):
    import torch

    from nast.train import trainer

    seen = []
    real = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: (seen.append(Path(f)), real(obj, f)))
    path = tmp_path / "state" / "epoch_006.pt"
    trainer._atomic_torch_save({"x": 1}, path)
    trainer._atomic_torch_save({"x": 2}, path)
    assert len(seen) == 2 and seen[0] != seen[1]
    assert all(p.parent == path.parent and p != path for p in seen)
    assert torch.load(path)["x"] == 2 and sorted(p.name for p in path.parent.iterdir()) == ["epoch_006.pt"]


def test_report_pngs_are_written_atomically(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nast import report

    target = tmp_path / "mcq.png"
    target.write_bytes(b"previous plot")
    fig = plt.figure()
    calls = []
    real = fig.savefig

    def broken(f, **kw):
        calls.append(Path(f))
        real(f, **kw)
        raise OSError("disk full")

    fig.savefig = broken
    with pytest.raises(OSError):
        report._save(fig, target)
    assert calls and calls[0] != target and target.read_bytes() == b"previous plot"
    fig.savefig = real
    report._save(fig, target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and [p.name for p in tmp_path.iterdir()] == ["mcq.png"]
    plt.close(fig)


def test_second_train_on_the_same_folder_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "models" / "lora_uniform"
    args = ["train", "--params", str(REPO / "params.yaml"), "--method", "lora_uniform", "--cohort", "c.parquet",
            "--benchmark", "b.parquet", "--contextual", "x.parquet", "--out", str(out)]
    with output_lock(out, "training folder"):
        assert main(args) == 2
    err = capsys.readouterr().err
    assert f"training folder {out} is in use by another run (pid" in err and "another --out" in err
    assert main(args) == 2  # lock released: now it gets as far as the (missing) inputs
    assert "input not found" in capsys.readouterr().err


def test_lock_of_a_killed_run_is_released(tmp_path):
    out = tmp_path / "models" / "nast"
    code = (f"import sys, time; sys.path.insert(0, {str(REPO / 'src')!r})\n"
            "from nast.io import output_lock\n"
            f"with output_lock({str(out)!r}):\n    print('locked', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(StageError, match=f"pid {proc.pid}"):
            with output_lock(out):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    t0 = time.monotonic()
    with output_lock(out):  # the kernel dropped the dead holder's lock
        pass
    assert time.monotonic() - t0 < 1
