"""The code a stage runs: the ``src/nast`` files its entry module imports, from the import graph.

Each Snakemake rule lists these files as inputs (``code=code("<command>")``, which calls
:func:`code_deps`, in workflow/rules/common.smk) and the generated dvc.yaml lists them as deps, so a code change reruns
exactly the stages whose code changed, in both DAGs. Nothing is hand-listed:

* the entry module of a stage is its ``nast`` subcommand's module (:data:`nast.cli.COMMANDS`),
  plus ``nast/cli.py`` itself (it loads the config and dispatches);
* every ``import nast...`` / ``from nast... import ...`` / relative import in a reached file is
  followed, also those inside functions (lazy imports run too), found by parsing the source with
  :mod:`ast` (nothing is imported, so this is fast and needs no torch);
* importing ``nast.a.b`` runs ``nast/__init__.py`` and ``nast/a/__init__.py``, so they are included;
* package data a reached package ships (its non-Python files and those under its ``data/`` and
  ``configs/`` folders: the params schema, the reader's rule tables, the demo model's config) are
  included with the package (the test models' configs in ``nast/models/tiny`` are read by no stage).

The params keys a stage reads are declared once, in its module (``PARAMS_KEYS``, and for train
``PARAMS_KEYS_BY_METHOD``); :func:`declared_params` reads them the same way (the literal, without
importing the module), for the rules and so for the generated dvc.yaml.

``python -m nast.codedeps [COMMAND...]`` prints the files per command.
"""

from __future__ import annotations

import ast
import sys
from functools import lru_cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = "nast"
#: package sub-folders whose files are package data (read at run time by the package's code)
DATA_DIRS = ("data", "configs")


def _module_file(module: str, pkg: Path) -> Path | None:
    """The source file of ``nast.x.y`` (a module or a package's __init__) under ``pkg``, or None."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = pkg.joinpath(*parts[1:])
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _module_name(path: Path, pkg: Path) -> str:
    rel = path.relative_to(pkg).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, pkg: Path) -> set[str]:
    """Absolute names of the nast modules (and candidate submodules) imported anywhere in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    here = _module_name(path, pkg).split(".")
    package = here if is_pkg else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                mod = ".".join(anchor + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != PACKAGE:
                continue
            found.add(mod)
            # `from nast.a import b`: b may be a submodule
            found.update(f"{mod}.{a.name}" for a in node.names if a.name != "*")
    return found


def _package_data(pkg_dir: Path) -> list[Path]:
    files = [p for p in pkg_dir.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc")]
    for sub in DATA_DIRS:
        if (pkg_dir / sub).is_dir():
            files += [p for p in (pkg_dir / sub).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return files


@lru_cache(maxsize=None)
def module_closure(module: str, pkg: Path = PACKAGE_DIR) -> tuple[Path, ...]:
    """Every file under the package folder ``pkg`` that importing ``module`` (and running it) can
    execute or read, sorted."""
    start = _module_file(module, pkg)
    if start is None:
        raise ValueError(f"nast.codedeps: no module {module!r} under {pkg}")
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        name = _module_name(path, pkg).split(".")
        # parent packages run first
        for i in range(1, len(name)):
            init = _module_file(".".join(name[:i]), pkg)
            if init is not None:
                todo.append(init)
        for mod in _imports(path, pkg):
            target = _module_file(mod, pkg)
            if target is not None:
                todo.append(target)
    data: set[Path] = set()
    for path in seen:
        if path.name == "__init__.py":
            data.update(_package_data(path.parent))
    return tuple(sorted(seen | data))


def command_module(command: str) -> str:
    from nast.cli import COMMANDS

    if command not in COMMANDS:
        raise ValueError(f"nast.codedeps: unknown nast command {command!r} (one of {', '.join(COMMANDS)})")
    return COMMANDS[command][0]


def code_deps(command: str, root: str | Path | None = None) -> list[str]:
    """The code files of ``nast <command>`` in the repository at ``root`` (default: the current
    directory, the workflow's working directory), as paths relative to it (``src/nast/...``),
    sorted. The DAG depends on the code of the repository it runs in, ``root/src/nast``."""
    root = Path(root or Path.cwd()).resolve()
    pkg = root / "src" / PACKAGE
    if not (pkg / "__init__.py").is_file():
        raise ValueError(
            f"nast.codedeps: {pkg}/__init__.py not found; the workflow must run in the repository "
            "(its src/nast is the code every stage depends on)"
        )
    files = set(module_closure("nast.cli", pkg)) | set(module_closure(command_module(command), pkg))
    return sorted(str(p.relative_to(root)) for p in files)


def _literal(path: Path, name: str):
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return ast.literal_eval(node.value)
    return None


def declared_params(command: str, method: str | None = None, root: str | Path | None = None) -> list[str]:
    """The params.yaml keys ``nast <command>`` declares it reads (its module's ``PARAMS_KEYS``, plus
    ``PARAMS_KEYS_BY_METHOD[method]`` where the module has one; ``method`` "sweep" for the beta sweep),
    read from the source of the repository at ``root`` (default: the current directory)."""
    root = Path(root or Path.cwd()).resolve()
    path = _module_file(command_module(command), root / "src" / PACKAGE)
    if path is None:
        raise ValueError(f"nast.codedeps: no module for nast {command} under {root / 'src'}")
    keys = _literal(path, "PARAMS_KEYS")
    if keys is None:
        raise ValueError(f"{path}: no PARAMS_KEYS (the params keys the stage reads)")
    extra = (_literal(path, "PARAMS_KEYS_BY_METHOD") or {}).get(method, ()) if method else ()
    return [*keys, *extra]


def undeclared_reads(folder: str | Path, root: str | Path, exempt: tuple[str, ...] = ("tracking",)
                     ) -> tuple[list[str], dict[str, int]]:
    """Keys each recorded run read (``NAST_RECORD_PARAMS`` records in ``folder``) that its stage does
    not declare; and the number of runs checked per command. Commands without ``PARAMS_KEYS`` (tools
    outside the DAG: extract-claims, label, mednega) are not checked; ``exempt`` sections never are."""
    import json

    from nast.config import covered

    root = Path(root)
    problems, runs = [], {}
    for rec_path in sorted(Path(folder).glob("*.json")):
        rec = json.loads(rec_path.read_text())
        command, argv = rec["command"], rec["argv"]
        module = _module_file(command_module(command), root / "src" / PACKAGE)
        if module is None or _literal(module, "PARAMS_KEYS") is None:
            continue
        method = None
        if command == "train" and "--method" in argv:
            from nast.stages.train import keys_method

            beta = argv[argv.index("--beta") + 1] if "--beta" in argv else None
            method = keys_method(argv[argv.index("--method") + 1], beta)
        declared = declared_params(command, method, root)
        runs[command] = runs.get(command, 0) + 1
        for key in rec["keys"]:
            if not covered(key, declared) and key.split(".")[0] not in exempt:
                problems.append(f"nast {command} {' '.join(argv[:4])}...: read {key!r}, declares {declared}")
    return sorted(set(problems)), runs


def main(argv: list[str] | None = None) -> int:
    from nast.cli import COMMANDS

    commands = list(argv if argv is not None else sys.argv[1:]) or list(COMMANDS)
    for command in commands:
        files = code_deps(command)
        print(f"{command} ({len(files)} files)")
        for f in files:
            print(f"  {f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
