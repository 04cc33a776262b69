"""The stage layer: one module per rule, named like the rule; cores never import it.

Read from the sources (ast), so the checks need no torch and see lazy imports too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from nast.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "src" / "nast"


def rules() -> list[str]:
    """The stage rules: one file workflow/rules/<rule>.smk each, defining rule <rule> (and, for a
    stage the beta sweep runs again, <rule>_sweep: the same stage over another wildcard; for
    embed_images, embed_images_grounding: the same stage over the grounding table's images)."""
    names = []
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        if smk.stem == "common":
            continue
        defined = re.findall(r"^\s*rule (\w+):", smk.read_text(), flags=re.M)
        assert smk.stem in defined, f"{smk.name} defines {defined}, not rule {smk.stem}"
        assert set(defined) <= {smk.stem, f"{smk.stem}_sweep", f"{smk.stem}_grounding"}, f"{smk.name}: {defined}"
        names.append(smk.stem)
    return names


def module_of(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in the file, relative imports resolved."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = module_of(path).split(".")
                base = base[: len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
                mod = ".".join([*base, mod] if mod else base)
            out.append((mod, [a.name for a in node.names]))
    return out


def sources() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_rule_has_its_stage_module_named_like_it():
    names = rules()
    assert len(names) >= 14, names
    stage_rules = names
    for rule in stage_rules:
        command = rule.replace("_", "-")
        assert command in COMMANDS, f"rule {rule}: no `nast {command}`"
        assert COMMANDS[command][0] == f"nast.stages.{rule}", (rule, COMMANDS[command][0])
        assert (PKG / "stages" / f"{rule}.py").is_file(), rule
    on_disk = {p.stem for p in (PKG / "stages").glob("*.py") if p.stem != "__init__"}
    assert on_disk == set(stage_rules), on_disk ^ set(stage_rules)


def test_commands_are_stages_or_tools():
    stage_commands = {r.replace("_", "-") for r in rules()}
    for command, (module, _help) in COMMANDS.items():
        if command in stage_commands:
            continue
        assert module == f"nast.tools.{command.replace('-', '_')}", (command, module)


def test_each_stage_module_declares_its_keys_and_entry_points():
    for path in sorted((PKG / "stages").glob("*.py")):
        if path.stem == "__init__":
            continue
        tree = ast.parse(path.read_text())
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assigned = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                    if isinstance(t, ast.Name)}
        assert {"add_arguments", "run"} <= defined, path.name
        assert "PARAMS_KEYS" in assigned, path.name


def test_no_core_imports_the_stage_layer_and_no_stage_another():
    for path in sources():
        mod = module_of(path)
        layer = mod.split(".")[1] if "." in mod else ""
        for target, _names in imports(path):
            if not target.startswith("nast."):
                continue
            tlayer = target.split(".")[1]
            if tlayer in ("stages", "tools"):
                # the command line dispatches to them; the DAG layer reads train's key rule
                assert mod in ("nast.cli", "nast.codedeps"), f"{mod} imports {target}"
            if layer == "stages" and tlayer == "stages":
                raise AssertionError(f"stage {mod} imports stage {target}")


def test_stages_import_no_private_name_and_affirm_not_mcq():
    for path in sorted((PKG / "stages").glob("*.py")) + sorted((PKG / "tools").glob("*.py")):
        for target, names in imports(path):
            private = [n for n in names if n.startswith("_") and n != "__future__"]
            assert not private or not target.startswith("nast."), f"{path.name}: {target} {private}"
    affirm = {t for t, _ in imports(PKG / "text" / "affirm.py")}
    assert "nast.text.mcq" not in affirm, "affirm's core imports mcq's: shared helpers live in nast.text.generation"
