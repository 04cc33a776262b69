"""The CLI lists one subcommand per stage and turns stage errors into exit 2 with a message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nast import cli

ROOT = Path(__file__).resolve().parents[2]


def test_top_level_help_lists_every_stage(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_exits_2(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_stage_module_has_the_stage_interface(name):
    import importlib

    module = importlib.import_module(cli.COMMANDS[name][0])
    assert callable(getattr(module, "add_arguments"))
    assert callable(getattr(module, "run"))


def test_bad_params_file_exits_2_naming_the_key(tmp_path):
    bad = (ROOT / "params.yaml").read_text().replace("k: 3", "k: many", 1)
    p = tmp_path / "params.yaml"
    p.write_text(bad)
    proc = subprocess.run(
        [sys.executable, "-m", "nast.cli", "permutations", "--params", str(p),
         "--cohort", "x.parquet", "--out", "y.parquet", "--quarantine", "q.parquet"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "permutations.k: 'many' is not of type 'integer'" in proc.stderr
