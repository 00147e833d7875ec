#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft) for the real-services test run, built from the jars on
# Maven Central (no tarball, no Docker): only Java 17+ and Maven are needed.
#
#   scripts/apache-kafka.sh fetch        resolve kafka_2.13 + its runtime deps into the cache
#   scripts/apache-kafka.sh start DIR    format + start a broker/controller; prints host:port
#   scripts/apache-kafka.sh stop DIR     stop it (TERM, then KILL) and remove its data
#
# Environment:
#   APACHE_KAFKA_VERSION   Kafka version (default below)
#   APACHE_KAFKA_LIBS      where the jars go (default .engagement/kafka/<version>/libs)
#   APACHE_KAFKA_HEAP      JVM heap flags (default "-Xms256m -Xmx512m")
#   APACHE_KAFKA_START_TIMEOUT_S   how long `start` waits for the broker (default 90)
#   MAVEN_ARGS_EXTRA       extra flags for mvn (e.g. -Dmaven.repo.local=...)
set -euo pipefail

VERSION="${APACHE_KAFKA_VERSION:-4.4.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LIBS="${APACHE_KAFKA_LIBS:-$ROOT/.engagement/kafka/$VERSION/libs}"
HEAP="${APACHE_KAFKA_HEAP:--Xms256m -Xmx512m}"
START_TIMEOUT_S="${APACHE_KAFKA_START_TIMEOUT_S:-90}"
STOP_TIMEOUT_S=20
PYTHON="${PYTHON_FOR_PORTS:-$ROOT/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
# The jars `kafka.Kafka` cannot start without; `fetch` checks they all arrived.
REQUIRED_JARS=(kafka_2.13 kafka-server kafka-raft kafka-metadata kafka-storage kafka-clients
  kafka-server-common kafka-group-coordinator kafka-transaction-coordinator
  kafka-coordinator-common scala-library jackson-databind slf4j-api log4j-core
  log4j-slf4j-impl)

log() { echo "apache-kafka: $*" >&2; }
die() { log "$*"; exit 1; }

jar_count() { find "$LIBS" -maxdepth 1 -name "*.jar" | wc -l; }

complete() {  # all required jars present and the completion stamp written
  [[ -f "$LIBS/.complete" ]] || return 1
  local jar
  for jar in "${REQUIRED_JARS[@]}"; do
    compgen -G "$LIBS/$jar-[0-9]*.jar" >/dev/null || return 1
  done
}

cmd_fetch() {
  if complete; then
    log "kafka $VERSION already in $LIBS ($(jar_count) jars)"
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found (needed to fetch Apache Kafka $VERSION)"
  local work="$LIBS.fetch"
  rm -rf "$work" "$LIBS"
  mkdir -p "$work"
  # A throwaway pom: kafka_2.13 (the broker, kafka.Kafka) with its runtime dependencies, plus
  # a log4j2 backend for slf4j 1.7 (what Kafka logs through, as its own distribution ships)
  # so the broker's log goes to a file we can read.
  cat >"$work/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.engagement</groupId>
  <artifactId>apache-kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>2.24.3</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>2.24.3</version>
    </dependency>
  </dependencies>
</project>
EOF
  log "resolving org.apache.kafka:kafka_2.13:$VERSION and its runtime dependencies"
  # shellcheck disable=SC2086
  if ! mvn -B -q -f "$work/pom.xml" ${MAVEN_ARGS_EXTRA:-} \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$work/libs" >"$work/mvn.log" 2>&1; then
    tail -40 "$work/mvn.log" >&2
    die "mvn could not resolve kafka $VERSION (log: $work/mvn.log)"
  fi
  mkdir -p "$(dirname "$LIBS")"
  mv "$work/libs" "$LIBS"
  touch "$LIBS/.complete"
  rm -rf "$work"
  complete || die "kafka $VERSION: some required jars are missing from $LIBS"
  log "kafka $VERSION: $(jar_count) jars in $LIBS"
}

free_ports() {  # two distinct free loopback ports
  "$PYTHON" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

answers() {  # a Metadata round trip on the broker port lists a broker
  "$PYTHON" - "$1" <<'EOF' >/dev/null 2>&1
import socket, struct, sys
port = int(sys.argv[1])
client = b"apache-kafka.sh"
req = struct.pack(">hhih", 3, 4, 1, len(client)) + client + struct.pack(">ib", 0, 0)
with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
    s.sendall(struct.pack(">i", len(req)) + req)
    def read(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise SystemExit(1)
            buf += chunk
        return buf
    body = read(struct.unpack(">i", read(4))[0])
_, _, count = struct.unpack_from(">iii", body)
raise SystemExit(0 if count > 0 else 1)
EOF
}

cmd_start() {
  local dir="${1:?usage: $0 start DIR}"
  complete || cmd_fetch
  command -v java >/dev/null || die "java not found"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if [[ -f "$dir/kafka.pid" ]] && alive "$(cat "$dir/kafka.pid")"; then
    die "a broker is already running from $dir (pid $(cat "$dir/kafka.pid"))"
  fi
  local attempt status
  for attempt in 1 2 3; do  # a port from free_ports can be taken before the broker binds it
    status=0
    start_once "$dir" || status=$?
    ((status == 0)) && return 0
    ((status == 2 && attempt < 3)) || die "the broker did not start (logs in $dir/logs)"
    log "the broker exited during start; trying again on other ports"
  done
}

# One attempt: 0 = started (prints host:port), 2 = the broker exited, 1 = any other failure.
start_once() {
  local dir="$1" port cport
  rm -rf "$dir/data" "$dir/logs"
  mkdir -p "$dir/data" "$dir/logs"
  read -r port cport < <(free_ports)
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
auto.create.topics.enable=true
EOF
  cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
EOF
  # C1 only: a test broker lives for minutes, and this cuts its start-up CPU on two cores.
  local jvm=(-cp "$LIBS/*" "-Dlog4j2.configurationFile=$dir/log4j2.properties"
    "-Dkafka.logs.dir=$dir/logs" -XX:+UseG1GC -XX:TieredStopAtLevel=1
    -Djava.awt.headless=true)
  # As `StorageTool random-uuid` makes one: 16 random bytes in base64url, drawn again when
  # it starts with "-" (Kafka's Uuid.randomUuid does the same: the tool would take it for
  # an option; about one start in 64 failed before).
  local cluster_id
  cluster_id="$("$PYTHON" -c 'import base64, os
while (cid := base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")).startswith("-"):
    pass
print(cid)')"
  # shellcheck disable=SC2086
  if ! java $HEAP "${jvm[@]}" kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$dir/server.properties" --standalone >"$dir/logs/format.log" 2>&1; then
    cat "$dir/logs/format.log" >&2
    log "formatting the KRaft storage failed"
    return 1
  fi
  # shellcheck disable=SC2086
  nohup java $HEAP "${jvm[@]}" kafka.Kafka "$dir/server.properties" \
    </dev/null >"$dir/logs/stdout.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$dir/kafka.pid"
  echo "$port" >"$dir/kafka.port"
  local deadline=$((SECONDS + START_TIMEOUT_S))
  until answers "$port"; do
    if ! alive "$pid"; then
      tail -n 30 "$dir/logs/stdout.log" "$dir/logs/server.log" >&2 2>/dev/null || true
      rm -f "$dir/kafka.pid" "$dir/kafka.port"
      return 2
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$dir/logs/server.log" >&2 2>/dev/null || true
      log "no answer within ${START_TIMEOUT_S}s"
      cmd_stop "$dir"
      return 1
    fi
    sleep 0.2
  done
  log "kafka $VERSION (pid $pid) on 127.0.0.1:$port, controller on $cport"
  echo "127.0.0.1:$port"
}

cmd_stop() {
  local dir="${1:?usage: $0 stop DIR}"
  [[ -d "$dir" ]] || return 0
  local pid=""
  [[ -f "$dir/kafka.pid" ]] && pid="$(cat "$dir/kafka.pid")"
  # Only signal the pid if it is still our broker (pids get reused).
  if alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $dir/"; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
    if alive "$pid"; then
      log "broker pid $pid ignored TERM for ${STOP_TIMEOUT_S}s: KILL"
      kill -KILL "$pid" 2>/dev/null || true
      while alive "$pid"; do sleep 0.1; done
    fi
  fi
  rm -f "$dir/kafka.pid" "$dir/kafka.port"
  rm -rf "$dir/data"
}

case "${1:-}" in
  fetch) cmd_fetch ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  version) echo "$VERSION" ;;
  libs) echo "$LIBS" ;;
  *) die "usage: $0 fetch | start DIR | stop DIR | version | libs" ;;
esac
