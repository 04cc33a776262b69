"""Print the Snakemake rules that cannot run yet because their `nast` stage does not exist.

Used by scripts/test_slurm.sh while the pipeline is being built: a rule is runnable when its
`nast <stage>` module imports (nast.cli.COMMANDS) and every rule upstream of it is runnable
(upstream taken from `snakemake --rulegraph`). Prints nothing when every rule is runnable, else
the rules that are not, one per line (for `snakemake --omit-from ...`). Exit 1 if none is runnable.

    python scripts/available_rules.py [SNAKEMAKE_ARGS...]
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

from nast.cli import COMMANDS

#: rules that run another rule's command over other inputs (besides the beta sweep's *_sweep twins)
TWINS = {"embed_images_grounding": "embed-images"}


def rule_graph(extra: list[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    dot = subprocess.run(
        ["snakemake", "--rulegraph", "--forceall", "--quiet", "all", *extra],
        check=True, capture_output=True, text=True,
    ).stdout
    nodes = dict(re.findall(r'^\s*(\d+)\[label = "([^"]+)"', dot, flags=re.M))
    edges = re.findall(r"^\s*(\d+) -> (\d+)", dot, flags=re.M)
    return nodes, [(nodes[a], nodes[b]) for a, b in edges]


def stage_exists(rule: str) -> bool:
    """True when the rule's ``nast`` stage module imports and has ``run`` + ``add_arguments``.

    A stage that is not there yet (its module missing) is quietly not runnable; any other reason -
    an unknown command, an import that fails inside an existing module (a bug, or a missing
    dependency), a module without the stage functions - is reported on stderr with the error,
    so a broken stage is never silently dropped from the DAG."""
    if rule == "all":
        return True
    command = TWINS.get(rule, rule.removesuffix("_sweep").replace("_", "-"))
    if command not in COMMANDS:
        print(f"available_rules: rule {rule!r}: no `nast {command}` command in nast.cli.COMMANDS", file=sys.stderr)
        return False
    module = COMMANDS[command][0]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            return False  # the stage is not written yet
        print(f"available_rules: rule {rule!r}: {module} failed to import: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return False
    except Exception as exc:  # noqa: BLE001 - reported, then treated as not runnable
        print(f"available_rules: rule {rule!r}: {module} failed to import: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return False
    missing = [f for f in ("run", "add_arguments") if not hasattr(mod, f)]
    if missing:
        print(f"available_rules: rule {rule!r}: {module} has no {' / '.join(missing)}", file=sys.stderr)
        return False
    return True


def main(argv: list[str]) -> int:
    nodes, edges = rule_graph(argv)
    rules = set(nodes.values())
    upstream: dict[str, set[str]] = {r: set() for r in rules}
    for src, dst in edges:
        upstream[dst].add(src)
    ok = {r: stage_exists(r) for r in rules}

    def runnable(rule: str, seen: frozenset = frozenset()) -> bool:
        return ok[rule] and all(runnable(u, seen | {rule}) for u in upstream[rule] if u not in seen)

    good = {r for r in rules if runnable(r)} - {"all"}
    missing = sorted(rules - good - {"all"})
    if missing:
        print("\n".join(missing))
        print(f"available_rules: runnable: {', '.join(sorted(good)) or 'none'}", file=sys.stderr)
    return 0 if good else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
