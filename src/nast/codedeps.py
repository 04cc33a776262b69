"""The code a stage runs: the ``src/nast`` files its entry module imports, from the import graph.

Each Snakemake rule lists these files as inputs (``code=code_deps("<command>")`` in
workflow/rules/common.smk) and the generated dvc.yaml lists them as deps, so a code change reruns
exactly the stages whose code changed, in both DAGs. Nothing is hand-listed:

* the entry module of a stage is its ``nast`` subcommand's module (:data:`nast.cli.COMMANDS`),
  plus ``nast/cli.py`` itself (it loads the config and dispatches);
* every ``import nast...`` / ``from nast... import ...`` / relative import in a reached file is
  followed, also those inside functions (lazy imports run too), found by parsing the source with
  :mod:`ast` (nothing is imported, so this is fast and needs no torch);
* importing ``nast.a.b`` runs ``nast/__init__.py`` and ``nast/a/__init__.py``, so they are included;
* package data a reached package ships (its non-Python files and those under its ``data/`` and
  ``configs/`` folders: the params schema, the reader's rule tables, the tiny model configs) are
  included with the package.

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
