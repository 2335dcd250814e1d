# Sourced by the side-by-side scripts: sets $record, the dated run file
# ($RUNS_DIR, default bench/runs, /<UTC date>-<N>core-<CPU model>.md) that the caller appends
# its raw output to, and starts it with a header line when it is new.
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1 | tr -cs 'A-Za-z0-9' '-' | sed 's/-*$//')
runs_dir=${RUNS_DIR:-bench/runs}
mkdir -p "$runs_dir"
record="$runs_dir/$(date -u +%F)-$(nproc)core-${cpu:-unknown}.md"
[ -s "$record" ] || printf '# Side-by-side runs, %s, %s CPUs (%s)\n\nRaw output of the scripts/*-side-by-side.sh scripts; t/s.\n' \
    "$(date -u +%F)" "$(nproc)" "${cpu:-unknown CPU}" >"$record"
