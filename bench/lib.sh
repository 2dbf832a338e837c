# Helpers shared by the benchmark scripts. Source after setting W (the work
# directory), then call bench_init (or set BIN, the shoal binary); SIZE
# (bytes) for mib(). Processes are ended by their own pids (daemons) and
# pid files (nginx), never by matching command lines.
PIDS=()
declare -A PID_OF=()
# bench_init: the set-up every script needs: the pinned venv (PY), the
# release binary (BIN; SHOAL_BIN measures another build), a fresh $W (a
# previous run's nginx stopped first).
bench_init() {
  scripts/setup-venv.sh
  [ -n "${SHOAL_BIN:-}" ] || cargo build --release -q -p shoal
  BIN=${SHOAL_BIN:-$PWD/target/release/shoal}
  PY=$PWD/.venv/bin/python
  nginx_stop
  rm -rf "$W" && mkdir -p "$W"
}
# bench_cleanup: ends this script's daemons and nginx (scripts add their
# unmounts before calling it).
bench_cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; nginx_stop; }
# Drops the page cache so the next step reads from disk (needs root).
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
# secs T0 T1: elapsed seconds.
secs() { echo "$2 - $1" | bc -l; }
# mib SECONDS: throughput of SIZE bytes in MiB/s.
mib() { echo "$SIZE / 1048576 / $1" | bc -l | xargs printf '%.0f'; }
# start NAME [LISTEN] [NETNS]: a daemon with repo $W/NAME, log $W/NAME.log,
# listening on LISTEN (default 127.0.0.1, any port), optionally inside a
# network namespace; waits (bounded) until it answers.
start() {
  "$BIN" --home "$W/$1" init --listen "${2:-/ip4/127.0.0.1/tcp/0}" --gateway 127.0.0.1:0 >/dev/null
  # Optional per-daemon set-up between init and start (edit config.toml).
  ${CONFIGURE:-true} "$1"
  if [ -n "${3:-}" ]; then
    ip netns exec "$3" "$BIN" --home "$W/$1" daemon 2>"$W/$1.log" &
  else
    "$BIN" --home "$W/$1" daemon 2>"$W/$1.log" &
  fi
  PIDS+=($!)
  PID_OF[$1]=$!
  for _ in $(seq 100); do "$BIN" --home "$W/$1" id >/dev/null 2>&1 && return; sleep 0.1; done
  echo "daemon $1 did not start" >&2; exit 1
}
# stop NAME: kills daemon NAME once measured (so no later run can fetch
# from it) and removes its repo.
stop() {
  local p=${PID_OF[$1]:-}
  if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi
  rm -rf "${W:?}/$1"
}
# addr NAME: a dialable address of daemon NAME.
addr() { "$BIN" --home "$W/$1" id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["addrs"][0])'; }
# set NAME KEY VALUE: sets KEY (unique across config.toml sections) in
# daemon NAME's config.toml, before it starts.
set_conf() { sed -i "s|^$2 = .*|$2 = $3|" "$W/$1/config.toml"; grep -q "^$2 = $3" "$W/$1/config.toml"; }
# median VALUES...: the middle value (for an odd count).
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# need_nginx: installs nginx if missing (Debian/Ubuntu).
need_nginx() {
  command -v nginx >/dev/null || apt-get install -y -q nginx-light >/dev/null || apt-get install -y -q nginx >/dev/null
}
# nginx_serve ROOT PORT [HOST [NETNS]]: nginx (sendfile unless
# NGINX_SENDFILE=off, no access log)
# serving directory ROOT on HOST:PORT (default 127.0.0.1), optionally
# inside a network namespace; config in $W/nginx-HOST-PORT.conf; stop them
# all with nginx_stop.
nginx_serve() {
  local host=${3:-127.0.0.1} conf
  conf="$W/nginx-$host-$2.conf"
  cat > "$conf" <<CONF
worker_processes 2;
pid $conf.pid;
error_log $conf.error.log;
events { worker_connections 512; }
http { access_log off; sendfile ${NGINX_SENDFILE:-on}; keepalive_requests 100000; server { listen $host:$2; root $1; } }
CONF
  if [ -n "${4:-}" ]; then ip netns exec "$4" nginx -c "$conf"; else nginx -c "$conf"; fi
}
nginx_stop() {
  local f
  for f in "$W"/nginx-*.conf.pid; do
    [ -f "$f" ] && { kill "$(cat "$f")" 2>/dev/null || true; }
  done
  return 0
}
# The physical limits a figure competes with, measured in the same run
# (each prints seconds; the caller turns them into MB/s with mib):
# limit_read DIR: every file of DIR read by 8 parallel `cat` after dropping
# the page cache (the disk's read limit for these files).
limit_read() {
  drop; local t0 t1; t0=$(now)
  (cd "$1" && find . -type f -print0 | xargs -0 -P 8 -n 16 cat >/dev/null)
  t1=$(now); secs "$t0" "$t1"
}
# limit_copy DIR: DIR copied with `cp -r`, then sync, page cache dropped
# first (the disk's limit for landing these bytes: read + write + fsync).
limit_copy() {
  drop; local t0 t1; t0=$(now)
  cp -r "$1" "$W/limit-copy"; sync
  t1=$(now); rm -rf "$W/limit-copy"; secs "$t0" "$t1"
}
# limit_loopback: seconds one TCP connection over 127.0.0.1 takes to move
# SIZE bytes (bench/loopback.py; the network limit of a one-peer pin).
limit_loopback() { python3 bench/loopback.py "$SIZE"; }
