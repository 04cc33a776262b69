#!/usr/bin/env bash
# End-to-end test of `snakemake --profile slurm` on a real (one-node) SLURM cluster:  make test-slurm
#
#  1. copies the project (tracked + untracked, not ignored files) twice into a scratch dir
#     ($NAST_SLURM_TEST_DIR, default a new /tmp/nast-test-slurm.*): local/ and slurm/, and applies
#     the lean test parameters (scripts/test_slurm.params.yaml, merged into both params.yaml);
#  2. runs the demo DAG locally in local/ (snakemake --profile workflow/profiles/local);
#  3. starts the test cluster (scripts/slurm_cluster.sh, stopped again by a trap on exit);
#  4. runs the same DAG in slurm/ with `snakemake --profile slurm` (status by squeue, short polls);
#  5. checks every non-local job went through sbatch: the cluster's job-completion log has one
#     COMPLETED record per job of this run (job name = the run's uuid) and the plugin wrote one
#     .snakemake/slurm_logs/ log per job; GPU rules ran in the gpu partition;
#  6. checks the deterministic outputs (tables, JSON, CSV, the demo tree) are byte-identical to
#     the local run's (sha256);
#  7. runs the same stages with `dvc repro` in a third copy (dvc/), its dvc.yaml regenerated for
#     the lean parameters (`nast dvc-yaml`), and checks its outputs are identical too (the DVC DAG executes, not only parses; NAST_TEST_DVC=0 skips it), and, on
#     the full DAG, renders `snakemake --report` of the local run.
# Every rule must be runnable (scripts/available_rules.py: its `nast` stage imports): one that is
# not fails the test; NAST_SLURM_TEST_ALLOW_MISSING=1 omits it and its downstream instead
# (snakemake --omit-from ...), for a branch with a stage not written yet.
# Environment: NAST_SLURM_TEST_DIR (scratch dir), NAST_SLURM_TEST_KEEP=1 (keep it),
# NAST_SLURM_TEST_PARAMS (override file), NAST_SLURM_TEST_OMIT="rule ..." (also omit these rules
# and everything downstream, e.g. while a stage is broken), CORES (local run, default 2).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
WORK="${NAST_SLURM_TEST_DIR:-$(mktemp -d /tmp/nast-test-slurm.XXXXXX)}"
OVERRIDES="${NAST_SLURM_TEST_PARAMS:-$ROOT/scripts/test_slurm.params.yaml}"
CORES="${CORES:-2}"
export NAST_SLURM_DIR="$WORK/cluster"

log() { echo "[test_slurm $(date +%H:%M:%S)] $*"; }
fail() { echo "[test_slurm] FAIL: $*" >&2; exit 1; }

cleanup() {
    local rc=$?
    "$ROOT/scripts/slurm_cluster.sh" stop || true
    if [[ "${NAST_SLURM_TEST_KEEP:-0}" != 1 && $rc -eq 0 ]]; then
        rm -rf "$WORK"
    else
        echo "[test_slurm] scratch dir kept: $WORK" >&2
    fi
    exit $rc
}
trap cleanup EXIT

# -- 1. two copies of the project with the lean test parameters --------------------------------
mkdir -p "$WORK"
COPIES=(local slurm)
[[ "${NAST_TEST_DVC:-1}" == 1 ]] && COPIES+=(dvc)
for copy in "${COPIES[@]}"; do
    mkdir -p "$WORK/$copy"
    git ls-files -z --cached --others --exclude-standard \
        | xargs -0 -I{} sh -c 'test -e "{}" -o -L "{}" && printf "%s\0" "{}"' \
        | tar --null -T - -cf - | tar -xf - -C "$WORK/$copy"
    python - "$WORK/$copy/params.yaml" "$OVERRIDES" <<'EOF'
import sys, yaml
path, overrides = sys.argv[1], sys.argv[2]
params = yaml.safe_load(open(path))
def merge(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = v
merge(params, yaml.safe_load(open(overrides)) or {})
open(path, "w").write(yaml.safe_dump(params, sort_keys=False))
EOF
done
log "scratch dir $WORK (test params: $OVERRIDES)"
# each copy runs its own snapshot of the package (PYTHONPATH=<copy>/src wins over the editable
# install), so the three runs execute the same code even if the tree is edited meanwhile
use_copy() { cd "$WORK/$1"; export PYTHONPATH="$WORK/$1/src"; }

# -- which rules can run (all of them once every stage exists) ----------------------------------
use_copy local
MISSING="$(python "$ROOT/scripts/available_rules.py")" || fail "no stage of the DAG exists yet"
# every stage exists now: a rule the script cannot run is a bug (a new rule whose command it
# does not know, a stage that fails to import), never a reason to test less
if [[ -n "$MISSING" && "${NAST_SLURM_TEST_ALLOW_MISSING:-0}" != 1 ]]; then
    fail "rules not runnable (see available_rules above; NAST_SLURM_TEST_ALLOW_MISSING=1 omits them): $(echo $MISSING)"
fi
MISSING="$(printf '%s\n' $MISSING ${NAST_SLURM_TEST_OMIT:-} | sed '/^$/d' | sort -u)"
if [[ -z "$MISSING" ]]; then
    TARGETS=(all)
    log "running the full DAG"
else
    mapfile -t OMIT <<<"$MISSING"
    TARGETS=(all --omit-from "${OMIT[@]}")
    log "omitted with downstream: ${OMIT[*]}"
fi
STATS="$(snakemake "${TARGETS[@]}" -n --quiet rules 2>&1)" || { echo "$STATS"; fail "dry run failed"; }
N_JOBS="$(awk '$1=="total"{print $2; exit}' <<<"$STATS")"
N_LOCALRULE="$(awk '$1=="all"{print $2; exit}' <<<"$STATS")"
[[ -n "$N_JOBS" ]] || { echo "$STATS"; fail "could not count the jobs"; }
N_REMOTE=$((N_JOBS - ${N_LOCALRULE:-0}))
# the rules that will run = the DVC stage (groups) to reproduce
mapfile -t RULES < <(awk '/^job +count/{on=1; next} on && $1=="total"{exit} on && $1 ~ /^[a-z_]+$/ && $1!="all"{print $1}' <<<"$STATS")
log "$N_JOBS jobs ($N_REMOTE to submit)"
[[ $N_REMOTE -gt 0 ]] || fail "nothing to run"

# -- 2. local run --------------------------------------------------------------------------------
t0=$SECONDS
snakemake --profile workflow/profiles/local --cores "$CORES" "${TARGETS[@]}" >"$WORK/local.log" 2>&1 \
    || { tail -40 "$WORK/local.log"; fail "local run failed (log: $WORK/local.log)"; }
T_LOCAL=$((SECONDS - t0))
log "local run: ${T_LOCAL} s"

# -- 3. cluster ----------------------------------------------------------------------------------
t0=$SECONDS
"$ROOT/scripts/slurm_cluster.sh" start
export SLURM_CONF="$NAST_SLURM_DIR/slurm.conf"
T_CLUSTER=$((SECONDS - t0))
JOBCOMP="$NAST_SLURM_DIR/log/jobcomp.log"
: >"$JOBCOMP"

# -- 4. SLURM run --------------------------------------------------------------------------------
use_copy slurm
t0=$SECONDS
snakemake --profile slurm "${TARGETS[@]}" \
    --slurm-no-account --slurm-status-command squeue \
    --slurm-init-seconds-before-status-checks 2 --slurm-keep-successful-logs \
    --latency-wait 10 >"$WORK/slurm.log" 2>&1 \
    || { tail -60 "$WORK/slurm.log"; fail "SLURM run failed (log: $WORK/slurm.log)"; }
T_SLURM=$((SECONDS - t0))
log "SLURM run: ${T_SLURM} s"

# -- 5. did the jobs go through sbatch? ------------------------------------------------------------
sleep 1
N_SUBMITTED="$(grep -c 'has been submitted with SLURM jobid' "$WORK/slurm.log" || true)"
N_COMPLETED="$(grep -c 'JobState=COMPLETED' "$JOBCOMP" || true)"
N_OTHER="$(grep -vc 'JobState=COMPLETED' "$JOBCOMP" || true)"
N_LOGS="$(find .snakemake/slurm_logs -name '*.log' | wc -l)"
log "submitted $N_SUBMITTED, completed (jobcomp) $N_COMPLETED, other states $N_OTHER, plugin logs $N_LOGS"
[[ "$N_SUBMITTED" -eq "$N_REMOTE" ]] || fail "expected $N_REMOTE sbatch submissions, saw $N_SUBMITTED"
[[ "$N_COMPLETED" -eq "$N_REMOTE" ]] || fail "expected $N_REMOTE COMPLETED jobs in $JOBCOMP, saw $N_COMPLETED"
[[ "$N_OTHER" -eq 0 ]] || fail "jobs in other states: $(grep -v 'JobState=COMPLETED' "$JOBCOMP")"
[[ "$N_LOGS" -eq "$N_REMOTE" ]] || fail "expected $N_REMOTE plugin logs, saw $N_LOGS"
for rule in pretrain_base trace train evaluate; do
    if [[ -d ".snakemake/slurm_logs/rule_$rule" ]]; then
        grep -q "Partition=gpu" "$JOBCOMP" || fail "no job ran in the gpu partition"
    fi
done
if [[ -d .snakemake/slurm_logs/rule_ingest ]]; then
    grep -q "Partition=debug" "$JOBCOMP" || fail "no job ran in the debug partition"
fi

# -- 6. same outputs as the local run ----------------------------------------------------------------
checksums() {  # deterministic artifacts: the data tree, tables, JSON/CSV reports (not logs, plots)
    (cd "$1" && find data reports models -type f \
        ! -path 'reports/logs/*' ! -path 'reports/benchmarks/*' ! -path 'reports/validation/*' \
        ! -path 'data/cache/*' ! -name '*.png' ! -name '*.pt' ! -name '*.safetensors' \
        ! -name '*.bin' ! -name '.*' ! -name '*.md' 2>/dev/null | LC_ALL=C sort | xargs -r sha256sum)
}
checksums "$WORK/local" >"$WORK/local.sha256"
checksums "$WORK/slurm" >"$WORK/slurm.sha256"
N_FILES="$(wc -l <"$WORK/local.sha256")"
[[ "$N_FILES" -gt 0 ]] || fail "no outputs to compare"
if ! diff -u "$WORK/local.sha256" "$WORK/slurm.sha256"; then
    fail "SLURM outputs differ from the local run's (above)"
fi
log "outputs identical to the local run ($N_FILES files compared)"
"$ROOT/scripts/slurm_cluster.sh" stop

# -- 7. DVC runs the same stages; Snakemake report --------------------------------------------------
T_DVC=skipped
if [[ "${NAST_TEST_DVC:-1}" == 1 ]]; then
    use_copy dvc
    export DVC_NO_ANALYTICS=1
    dvc config core.no_scm true
    # dvc.yaml for the lean params (their nast.betas differ from the committed file's)
    nast dvc-yaml --params params.yaml --out dvc.yaml >"$WORK/dvc-yaml.log" 2>&1 \
        || { tail -20 "$WORK/dvc-yaml.log"; fail "nast dvc-yaml failed (log: $WORK/dvc-yaml.log)"; }
    t0=$SECONDS
    dvc repro "${RULES[@]}" >"$WORK/dvc.log" 2>&1 \
        || { tail -40 "$WORK/dvc.log"; fail "dvc repro failed (log: $WORK/dvc.log)"; }
    T_DVC=$((SECONDS - t0))
    log "dvc repro (${RULES[*]}): ${T_DVC} s"
    checksums "$WORK/dvc" >"$WORK/dvc.sha256"
    diff -u "$WORK/local.sha256" "$WORK/dvc.sha256" || fail "dvc repro outputs differ from Snakemake's"
    log "dvc repro outputs identical to the Snakemake run's"
    dvc status -q "${RULES[@]}" || fail "dvc status not clean after repro: $(dvc status "${RULES[@]}")"
fi
if [[ "${TARGETS[*]}" == all ]]; then
    use_copy local
    snakemake --report reports/report.html >"$WORK/report.log" 2>&1 \
        || { tail -20 "$WORK/report.log"; fail "snakemake --report failed"; }
    [[ -s reports/report.html ]] || fail "reports/report.html is empty"
    log "snakemake --report: $(du -h reports/report.html | cut -f1) reports/report.html"
fi
log "PASS: cluster start ${T_CLUSTER} s, local ${T_LOCAL} s, SLURM ${T_SLURM} s ($N_REMOTE jobs via sbatch), dvc ${T_DVC} s"
