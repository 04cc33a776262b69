#!/usr/bin/env bash
# Configure a local-directory DVC remote as the default remote of the DVC repo in the current
# directory:   scripts/dvc_remote.sh [DIR]        (make dvc-remote [DVC_REMOTE=DIR])
#
# DIR defaults to $NAST_DVC_REMOTE, else .dvc-remote/ in the repo root (git-ignored). The remote is
# written to .dvc/config.local (machine-specific, not committed) under the name
# $NAST_DVC_REMOTE_NAME (default: local). Then:  dvc push  /  dvc pull.
# Any DVC remote URL works the same way (s3://, ssh://, ...): `dvc remote add -d NAME URL`.
set -euo pipefail
export DVC_NO_ANALYTICS=1
ROOT="$(dvc root)"
DIR="${1:-${NAST_DVC_REMOTE:-$ROOT/.dvc-remote}}"
NAME="${NAST_DVC_REMOTE_NAME:-local}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
dvc remote add --local --force --default "$NAME" "$DIR"
echo "DVC remote '$NAME' -> $DIR (default; .dvc/config.local). Use: dvc push / dvc pull"
