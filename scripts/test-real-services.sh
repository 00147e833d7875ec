#!/usr/bin/env bash
# The integration suite against real services: Apache Kafka 4.x (KRaft, one node, jars from
# Maven Central via scripts/apache-kafka.sh) and Debian's redis-server (Redis 7).
#
#   scripts/test-real-services.sh [pytest args...]     (default: tests/integration)
#
# Skips (exit 0, with a line saying why) when Java 17+, Maven or redis-server is missing;
# otherwise exits with pytest's code. Both servers are always stopped; their logs are kept in
# .engagement/real-services/ (or $REAL_SERVICES_DIR).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
KAFKA="$ROOT/scripts/apache-kafka.sh"
PYTEST="${PYTEST:-$ROOT/.venv/bin/pytest}"
PYTHON="$ROOT/.venv/bin/python"
RUN_DIR="${REAL_SERVICES_DIR:-$ROOT/.engagement/real-services}"
REDIS_START_TIMEOUT_S=30

say() { echo "real-services: $*"; }
skip() { say "skipping the Apache Kafka run: $*"; exit 0; }

command -v java >/dev/null 2>&1 || skip "no Java"
java_major="$(java -XshowSettings:properties -version 2>&1 \
  | sed -n 's/^ *java\.specification\.version = //p' | cut -d. -f1)"
[[ "${java_major:-0}" =~ ^[0-9]+$ && "$java_major" -ge 17 ]] \
  || skip "Java ${java_major:-?} is older than 17 (Apache Kafka 4 needs 17+)"
command -v mvn >/dev/null 2>&1 || skip "no Maven (mvn) to fetch Apache Kafka"
command -v redis-server >/dev/null 2>&1 \
  || skip "no redis-server (\`make integration-real\` installs Debian's package when run as root)"
redis_version="$(redis-server --version | sed -n 's/.* v=\([0-9][0-9.]*\).*/\1/p')"
[[ "${redis_version%%.*}" -ge 7 ]] 2>/dev/null \
  || { say "redis-server ${redis_version:-?} is older than 7"; exit 1; }
[[ -x "$PYTEST" ]] || { say "no $PYTEST: run \`make install\` first"; exit 1; }

(($#)) || set -- tests/integration

mkdir -p "$RUN_DIR"
RUN_DIR="$(cd "$RUN_DIR" && pwd)"
redis_pid=""

# shellcheck disable=SC2317  # (trap handlers)
stop_redis() {
  [[ -n "$redis_pid" ]] || return 0
  if kill -0 "$redis_pid" 2>/dev/null; then
    kill -TERM "$redis_pid" 2>/dev/null || true
    kill -CONT "$redis_pid" 2>/dev/null || true  # in case a test left it stopped
    for _ in $(seq 100); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$redis_pid" 2>/dev/null || true
  fi
  wait "$redis_pid" 2>/dev/null || true
  redis_pid=""
}

# shellcheck disable=SC2317
cleanup() {
  local rc=$?
  stop_redis
  "$KAFKA" stop "$RUN_DIR/kafka" || true
  rm -rf "$RUN_DIR/redis/data"
  ((rc == 0)) || say "logs: $RUN_DIR/kafka/logs/server.log, $RUN_DIR/redis/redis.log"
  exit "$rc"
}
# On INT/TERM: pytest gets an INT (so it stops its worker subprocesses), then whatever is left
# of its process group is killed, then both servers are stopped (cleanup).
pytest_pid=""
# shellcheck disable=SC2317
on_signal() {
  if [[ -n "$pytest_pid" ]] && kill -INT "$pytest_pid" 2>/dev/null; then
    for _ in $(seq 300); do kill -0 "$pytest_pid" 2>/dev/null || break; sleep 0.1; done
    kill -TERM -- "-$pytest_pid" 2>/dev/null && sleep 2
    kill -KILL -- "-$pytest_pid" 2>/dev/null || true
  fi
  exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

t0=$SECONDS
"$KAFKA" fetch
t1=$SECONDS
bootstrap="$("$KAFKA" start "$RUN_DIR/kafka")"
t2=$SECONDS

# Redis: no persistence, on a free port, a child of this script. A port can be taken between
# picking it and redis-server binding it: then try another.
start_redis() {
  rm -rf "$RUN_DIR/redis"
  mkdir -p "$RUN_DIR/redis/data"
  redis_port="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$RUN_DIR/redis/data" --daemonize no --logfile "$RUN_DIR/redis/redis.log" </dev/null &
  redis_pid=$!
  redis_url="redis://127.0.0.1:$redis_port/0"
  local deadline=$((SECONDS + REDIS_START_TIMEOUT_S))
  until "$PYTHON" -c 'import redis, sys; redis.Redis.from_url(sys.argv[1], socket_timeout=1).ping()' \
      "$redis_url" 2>/dev/null; do
    if ! kill -0 "$redis_pid" 2>/dev/null; then
      tail -n 5 "$RUN_DIR/redis/redis.log"
      redis_pid=""
      return 1
    fi
    ((SECONDS < deadline)) || { say "redis-server did not answer in ${REDIS_START_TIMEOUT_S}s"; exit 1; }
    sleep 0.1
  done
}
for attempt in 1 2 3; do
  start_redis && break
  ((attempt < 3)) || { say "redis-server exited during start"; exit 1; }
done
t3=$SECONDS

say "Apache Kafka $("$KAFKA" version) at $bootstrap, Redis $redis_version at 127.0.0.1:$redis_port"
say "kafka fetch $((t1 - t0))s, kafka start $((t2 - t1))s, redis start $((t3 - t2))s"

export ENGAGEMENT_TEST_KAFKA_BOOTSTRAP="$bootstrap"
export ENGAGEMENT_TEST_REDIS_URL="$redis_url"
# Apache Kafka has InitProducerId (Tansu has not): the workers the tests start inherit this
# environment, so they publish with an idempotent producer, as in production. The TEST_
# variable is for the harness to pass it explicitly (worker_env) once it reads it.
export ENGAGEMENT_TEST_PRODUCER_IDEMPOTENCE=true
export ENGAGEMENT_PRODUCER_IDEMPOTENCE=true

# In the background, so that a signal reaches the trap at once; in a process group of its own
# (pytest and the workers it starts), with SIGINT at its default: a background job of a
# script ignores it, and so would pytest, which turns SIGINT into a clean KeyboardInterrupt.
"$PYTHON" -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.setpgid(0, 0)
os.execv(sys.argv[1], sys.argv[1:])' "$PYTEST" "$@" &
pytest_pid=$!
rc=0
wait "$pytest_pid" || rc=$?
pytest_pid=""
say "pytest on Apache Kafka + Redis $redis_version exited $rc after $((SECONDS - t3))s"
exit "$rc"
