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


def rule_graph(extra: list[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    dot = subprocess.run(
        ["snakemake", "--rulegraph", "--forceall", "--quiet", "all", *extra],
        check=True, capture_output=True, text=True,
    ).stdout
    nodes = dict(re.findall(r'^\s*(\d+)\[label = "([^"]+)"', dot, flags=re.M))
    edges = re.findall(r"^\s*(\d+) -> (\d+)", dot, flags=re.M)
    return nodes, [(nodes[a], nodes[b]) for a, b in edges]


def stage_exists(rule: str) -> bool:
    if rule == "all":
        return True
    command = rule.removesuffix("_sweep").replace("_", "-")
    module = COMMANDS[command][0]
    try:
        mod = importlib.import_module(module)
    except Exception:  # noqa: BLE001 - any import failure means "not there yet"
        return False
    return hasattr(mod, "run") and hasattr(mod, "add_arguments")


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
