"""nast.codedeps: the files a stage runs, from the import graph (issue 15: code is a dependency)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nast.codedeps import code_deps, module_closure

ROOT = Path(__file__).resolve().parents[2]


def _pkg(tmp_path: Path, files: dict[str, str]) -> Path:
    pkg = tmp_path / "src" / "nast"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


def test_closure_follows_absolute_relative_lazy_and_submodule_imports(tmp_path):
    pkg = _pkg(tmp_path, {
        "__init__.py": "",
        "schema.yaml": "x: 1",                      # package data of a reached package
        "a/__init__.py": "",
        "a/stage.py": "from nast.b import helper\nfrom . import sib\n\ndef run():\n    import nast.c.lazy\n",
        "a/sib.py": "from .. import d\n",
        "b.py": "def helper(): ...\n",
        "c/__init__.py": "",
        "c/lazy.py": "",
        "c/data/rules.csv": "a,b",
        "d.py": "import os\n",
        "unused.py": "import nast.b\n",           # imports the stage's code, but the stage never imports it
        "e/__init__.py": "",
        "e/data/other.csv": "x",                  # data of a package the stage does not reach
    })
    got = {str(p.relative_to(pkg)) for p in module_closure("nast.a.stage", pkg)}
    assert got == {"__init__.py", "schema.yaml", "a/__init__.py", "a/stage.py", "a/sib.py", "b.py",
                   "c/__init__.py", "c/lazy.py", "c/data/rules.csv", "d.py"}


def test_the_stages_code_is_their_real_import_closure():
    ingest = code_deps("ingest", ROOT)
    assert "src/nast/ingest/mimic.py" in ingest and "src/nast/ingest/openi.py" in ingest  # lazy imports
    assert "src/nast/params.schema.yaml" in ingest and "src/nast/cli.py" in ingest
    assert not any(f.startswith("src/nast/train/") for f in ingest)
    train = code_deps("train", ROOT)
    assert {"src/nast/stages/train.py", "src/nast/train/losses.py", "src/nast/models/families.py",
            "src/nast/models/configs/nast-tiny-clip.json", "src/nast/tracking.py"} <= set(train)
    assert "src/nast/ingest/mimic.py" not in train
    assert "src/nast/ingest/mimic.py" not in code_deps("permutations", ROOT)
    # no train <-> evaluate cycle: the evaluations load trained adapters through nast.models.adapters
    for command in ("evaluate", "evaluate-grounding", "report"):
        assert not any(f.startswith("src/nast/train/") for f in code_deps(command, ROOT)), command
    assert "src/nast/models/adapters.py" in code_deps("evaluate", ROOT)
    assert all((ROOT / f).is_file() for f in ingest + train)


def test_code_deps_names_a_missing_package(tmp_path):
    with pytest.raises(ValueError, match="src/nast/__init__.py not found"):
        code_deps("ingest", tmp_path)
    with pytest.raises(ValueError, match="unknown nast command"):
        code_deps("no-such-stage", ROOT)


def test_recording_params_sees_what_a_stage_reads():
    from nast.config import RecordingParams, covered, load_params, plain_params

    typed = load_params(ROOT / "params.yaml")
    rec = RecordingParams(typed)
    assert rec.train.epochs == typed.train.epochs                  # attribute access
    changed = rec.replace(model=rec.model.replace(name="m"))        # a stage's --base: still recording
    assert changed.model.name == "m" and typed.model.name != "m"    # the typed config is not changed
    assert rec["data"]["allow_empty"] is False                       # item access
    assert "lr" in rec["train"]
    list(rec["nast"].items())                                        # a whole section serialised
    assert set(rec.recorded()) == {"train", "train.epochs", "model", "model.name", "data", "data.allow_empty",
                                   "train.lr", "nast", *(f"nast.{k}" for k in typed.nast)}
    plain = plain_params(rec)
    assert plain["train"] == dict(typed.train) and type(plain["train"]) is dict
    assert "evaluate" not in rec.recorded()                          # plain_params records nothing
    with pytest.raises(AttributeError):
        rec.train.epochs = 3                                          # frozen
    assert covered("train.epochs", ["train"]) and covered("evaluate", ["evaluate.seed"])
    assert not covered("nast.beta", ["nast.scale", "train"]) and not covered("trainx", ["train"])


def test_undeclared_reads_names_the_stage_and_the_key(tmp_path):
    import json

    from nast.codedeps import undeclared_reads

    def record(command, argv, keys):
        (tmp_path / f"{command}-{len(list(tmp_path.iterdir()))}.json").write_text(
            json.dumps({"command": command, "argv": argv, "keys": keys}))

    record("mcq", ["--permutations", "p.parquet"], ["mcq", "mcq.seed", "llm.model", "tracking.tracking_uri"])
    record("train", ["--method", "lora_uniform"], ["train.epochs", "nast.beta"])
    record("train", ["--method", "nast", "--beta", "2"], ["nast.scale", "nast.beta"])
    record("label", ["x.csv"], ["trace.seed"])       # a tool outside the DAG: not checked
    problems, runs = undeclared_reads(tmp_path, ROOT)
    assert runs == {"mcq": 1, "train": 2}
    assert len(problems) == 2
    assert any(p.startswith("nast train --method lora_uniform...: read 'nast.beta'") for p in problems)
    assert any(p.startswith("nast train --method nast --beta 2...: read 'nast.beta'") for p in problems)  # sweep
