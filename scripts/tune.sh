#!/usr/bin/env bash
# Background tuning job: tune the default model (or TUNE_ARGS) for a target in passes of growing
# trial counts; each pass resumes the committed database in tuning_logs/<target>/<model>/.
#
#   scripts/tune.sh TARGET TRIALS [TRIALS ...]      e.g.  scripts/tune.sh x86-avx512 32 64 128
#   nohup scripts/tune.sh x86-avx512 32 64 > /tmp/tune_x86_avx512.log 2>&1 &
#
# Extra arguments for `tsm-deploy tune` go in TUNE_ARGS (e.g. "--rpc-tracker host:9190 --checkpoint m.pth").
# Only one tuning job runs at a time on this machine (measurements on shared cores are worthless):
# a second one waits for the lock. Killing the job at any time leaves a valid database.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 TARGET TRIALS [TRIALS ...]" >&2
    exit 2
fi
target=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
tsm=${TSM_DEPLOY:-$root/.venv/bin/tsm-deploy}
[ -x "$tsm" ] || tsm=tsm-deploy
lock=${TSM_TUNE_LOCK:-/tmp/tsm-deploy-tune.lock}

exec 9>"$lock"
if ! flock -n 9; then
    echo "$(date -u +%FT%TZ) another tuning job holds $lock: waiting" >&2
    flock 9
fi

for trials in "$@"; do
    echo "$(date -u +%FT%TZ) pass: $target to $trials trials per task" >&2
    # shellcheck disable=SC2086
    "$tsm" -v tune --target "$target" --trials "$trials" ${TUNE_ARGS:-}
    echo "$(date -u +%FT%TZ) pass done: $target, $trials trials per task" >&2
done
