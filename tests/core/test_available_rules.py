"""scripts/available_rules.py: a stage that is not written yet is quietly not runnable; a stage
whose import fails for another reason is reported with its error (never silently dropped)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "available_rules.py"


@pytest.fixture()
def rules(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("available_rules", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pkg = tmp_path / "fakestages"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text("def run(a, p): return 0\ndef add_arguments(p): pass\n")
    (pkg / "broken.py").write_text("import json\nraise RuntimeError('stage is broken')\n")
    (pkg / "needs_dep.py").write_text("import no_such_dependency_xyz\ndef run(a, p): return 0\n")
    (pkg / "no_run.py").write_text("def add_arguments(p): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(mod, "COMMANDS", {
        "good": ("fakestages.good", ""), "broken": ("fakestages.broken", ""),
        "needs-dep": ("fakestages.needs_dep", ""), "no-run": ("fakestages.no_run", ""),
        "not-yet": ("fakestages.not_yet", "")})
    yield mod
    for name in [m for m in sys.modules if m.startswith("fakestages")]:
        del sys.modules[name]


def test_stage_exists_reports_every_reason_but_not_yet(rules, capsys):
    assert rules.stage_exists("all") and rules.stage_exists("good")
    assert not rules.stage_exists("not_yet")
    assert capsys.readouterr().err == ""  # not written yet: no noise
    assert not rules.stage_exists("broken")
    assert "rule 'broken': fakestages.broken failed to import: RuntimeError: stage is broken" in capsys.readouterr().err
    assert not rules.stage_exists("needs_dep")
    assert "fakestages.needs_dep failed to import: ModuleNotFoundError" in capsys.readouterr().err
    assert not rules.stage_exists("no_run")
    assert "fakestages.no_run has no run" in capsys.readouterr().err
    assert not rules.stage_exists("nowhere")
    assert "no `nast nowhere` command" in capsys.readouterr().err


def test_main_lists_rules_downstream_of_a_broken_stage(rules, monkeypatch, capsys):
    nodes = {"0": "all", "1": "good", "2": "broken", "3": "good_sweep"}
    monkeypatch.setattr(rules, "rule_graph", lambda extra: (nodes, [("good", "broken"), ("broken", "all"),
                                                                    ("good", "good_sweep"), ("good_sweep", "all")]))
    assert rules.main([]) == 0
    out = capsys.readouterr()
    assert out.out.split() == ["broken"]
    assert "RuntimeError: stage is broken" in out.err and "runnable: good, good_sweep" in out.err
