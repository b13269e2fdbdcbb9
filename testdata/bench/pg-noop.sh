#!/bin/bash
# pg-noop.sh BIN N DAEMONS: submit N no-op tasks to a fresh schema "b" of
# the local PostgreSQL, run them with DAEMONS daemons of BIN, and print the
# rate (the daemons' start to the job's end), each daemon's peak RSS, and
# the CPU ticks of every postgres process and of the daemons. Run it with
# two binaries in turn to compare them.
set -euo pipefail
BIN=$1 N=$2 DAEMONS=${3:-1}
PSQL=(psql -h "${PGHOST:-/var/run/postgresql}" -U postgres -qAt)
"${PSQL[@]}" -c "DROP SCHEMA IF EXISTS b CASCADE" -c "CREATE SCHEMA b" 2>/dev/null
export PCD_DB="postgres:///postgres?host=${PGHOST:-/var/run/postgresql}&search_path=b"
job=$(mktemp --suffix .json)
trap 'rm -f "$job"' EXIT
python3 -c 'import json,sys; print(json.dumps({"tasks":[{"kind":"noop"}]*int(sys.argv[1])}))' "$N" >"$job"
"$BIN" submit "$job" >/dev/null
pgcpu() { for p in $(pgrep -u postgres postgres); do awk '{print $14+$15}' /proc/$p/stat 2>/dev/null; done | awk '{s+=$1} END {print s}'; }
cpu0=$(pgcpu)
t0=$(date +%s.%N)
pids=()
for i in $(seq "$DAEMONS"); do "$BIN" daemon --log-level warn 2>"/tmp/pg-noop-d$i.log" & pids+=($!); done
until [ "$("${PSQL[@]}" -c "select state from b.jobs")" = succeeded ]; do sleep 0.05; done
t1=$(date +%s.%N)
cpu1=$(pgcpu)
dcpu=0
for p in "${pids[@]}"; do
	grep VmHWM /proc/$p/status || echo "daemon $p: gone before the end"
	dcpu=$((dcpu + $(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null || echo 0)))
	kill "$p" 2>/dev/null || true
done
wait || true
echo "rate $(echo "$N / ($t1 - $t0)" | bc -l | cut -c1-8) tasks/s  postgres CPU $((cpu1 - cpu0)) ticks  daemons CPU $dcpu ticks"
