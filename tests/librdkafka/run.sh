#!/usr/bin/env bash
# Runs librdkafka's own integration tests (tests/NNNN-*.c, run by tests/test-runner) against the
# real freshet binary: Kafka conformance as librdkafka's maintainers test it (issue 12).
#
#   bash tests/librdkafka/run.sh                 # the default list: tests that fit one node
#   bash tests/librdkafka/run.sh 0012 0081       # these test numbers only
#   bash tests/librdkafka/run.sh --all           # every test that needs a broker
#   bash tests/librdkafka/run.sh --nodes 3       # 0101 0103 0107 0111 against a 3-node cluster
#   bash tests/librdkafka/run.sh --nodes 3 0101  # (also LIBRDKAFKA_NODES=3)
#   bash tests/librdkafka/run.sh --security sasl # 0081 over SASL_PLAINTEXT SCRAM, authorizer on
#   bash tests/librdkafka/run.sh --security ssl  # 0097 over SSL with client certificates
#   LIBRDKAFKA_SRC=DIR bash tests/librdkafka/run.sh --share  # share consumers, 0170-0185
#
# Test groups (one flag each; test numbers after a flag replace its default list):
#   --nodes N        N nodes (see 2.); default list 0101 0103 0107 0111.
#   --security sasl  one node whose test listener is SASL_PLAINTEXT with SCRAM-SHA-512 (user
#                    testuser/testpass made with `freshet user create` before each start), the
#                    authorizer on with allow_everyone_if_no_acl_found (the client is no super
#                    user: 0081's ACL subtests grant and revoke its own rights); test.conf as
#                    librdkafka's SASL runs (security.protocol, sasl.mechanism, sasl.username,
#                    sasl.password). Default list 0081 (its ACL, authorized-operations and SCRAM
#                    subtests need this; without it they skip or get SECURITY_DISABLED). Its ACL
#                    subtests need a librdkafka that sends CreateAcls/DescribeAcls/DeleteAcls v2+
#                    (Kafka 4 serves only v2-3, KIP-896, as Freshet): 2.12.1 sends v0-1 only, so
#                    run it with LIBRDKAFKA_SRC (2.15.1: see --share), and
#                    LIBRDKAFKA_TEST_TIMEOUT_S=1500 (0081 runs over 10 minutes on a shared machine).
#   --security ssl   one node whose test listener is SSL with ssl_client_auth=required;
#                    certificates made with openssl under target/librdkafka-suite/ssl as trivup
#                    makes them (a CA; the broker's; a client key encrypted with a password, its
#                    certificate as PEM/DER and both in a PKCS#12 keystore) and the SSL_* variables
#                    0097 reads. Default list 0097. LIBRDKAFKA_SSL_CLIENT_AUTH=requested runs
#                    the broker with ssl_client_auth=requested instead (0097 then expects a client
#                    whose certificate the broker does not trust to connect).
#   --share          share consumers (KIP-932): 0170-0185 against one node, TEST_KAFKA_VERSION
#                    4.2.0 (their minimum). librdkafka 2.12.1 (rdkafka-sys) has no such tests:
#                    give a newer source with LIBRDKAFKA_SRC (or --librdkafka-src DIR), e.g. the
#                    deps/librdkafka directory of the npm package @confluentinc/kafka-javascript
#                    1.10.1 (librdkafka 2.15.1): `npm pack @confluentinc/kafka-javascript@1.10.1`
#                    and untar it outside the repository. The broker runs with
#                    group_share_min_record_lock_duration_ms = 1000, as librdkafka's test
#                    cluster sets group.share.min.record.lock.duration.ms (0173, 0176).
#                    0174 runs 6-10 minutes on a shared 2-core machine (its producers
#                    flush after every message of a 1-partition topic); 0179 fails: it
#                    expects Kafka's first ShareFetch of a fresh group to return one of two
#                    partitions (Kafka loads share partitions asynchronously), Freshet both.
#   In every security mode a PLAINTEXT listener stays first (the runner's readiness check and
#   the kafka-topics.sh stand-in use it); test.conf names the secure listener only.
#
# What it does:
#   1. finds the librdkafka sources bundled in the rdkafka-sys crate (a dev-dependency, so
#      `cargo fetch` has put them in ~/.cargo/registry/src), copies them to
#      target/librdkafka-suite/librdkafka-<version>/ and builds the library and tests/test-runner
#      there (`./configure && make`, system libraries only; missing build packages are installed
#      with apt-get: gcc, g++, make, pkg-config, libssl-dev, zlib1g-dev, libzstd-dev, and
#      rapidjson-dev, which tests 0053, 0098, 0101 and 0110 need). Done once; later runs reuse
#      the build.
#   2. starts the freshet binary (FRESHET_BIN, default target/release/freshet, built with
#      `cargo build --release` when missing) on a free port of 127.0.0.1 with
#      `--default-partitions 4` (as the suite's own Kafka setup) and a fresh data directory.
#      With `--nodes N` (N > 1): N processes, node ids 1..N, each broker and controller
#      (`--controller-quorum-voters` over free ports), `--broker-rack RACK<id>` and
#      `replica_selector_class` = Kafka's RackAwareReplicaSelector (what the suite's own Kafka
#      cluster runs with: 0101 fetches from the follower in its `client.rack`), data under
#      target/librdkafka-suite/data/node<id>; it waits until `freshet cluster info` lists all N
#      unfenced. The tests ask for replication factor 3 themselves (CreateTopics).
#   3. writes test.conf (metadata.broker.list: every node), puts a stand-in for Kafka's
#      bin/kafka-topics.sh (which some tests run to create topics; tests/librdkafka/kafka-topics.sh,
#      done with `freshet topic`) in KAFKA_PATH, and runs each test number alone (test-runner -L:
#      no broker-less tests; not quick mode, which skips e.g. 0082), with a time limit per test
#      (LIBRDKAFKA_TEST_TIMEOUT_S, default 600), restarting the broker(s) if a test killed one.
#      A test whose variants belong to test.c's "noautocreate" scenario (0107, 0111; with
#      LIBRDKAFKA_SCENARIOS=all also 0045's topic-removal variants) runs with
#      TEST_SCENARIO=noautocreate against brokers restarted with `--auto-create-topics false`,
#      as the suite's scenario file sets up Kafka.
#   4. prints `librdkafka: N passed, M failed` and the failing names; exits 1 if any failed.
#
# Everything it writes is under target/librdkafka-suite/: the builds (librdkafka-<version>/),
# and per run data, logs/NNNN.log, logs/NNNN-noautocreate.log, logs/broker.log or
# logs/broker<id>.log, summary.txt; a group of tests (--nodes N, --security M, --share) runs in
# its own subdirectory (nodesN/, security-M/, share/), so different groups may run at once.
# Environment: FRESHET_BIN, LIBRDKAFKA_NODES, LIBRDKAFKA_SRC, LIBRDKAFKA_SCENARIOS, LIBRDKAFKA_TEST_TIMEOUT_S,
# TEST_CONSUMER_GROUP_PROTOCOL=consumer (KIP-848 groups instead of classic),
# LIBRDKAFKA_TEST_ARGS (test-runner flags, default "-L"; "-Q -L" for quick mode: fewer messages,
# some tests skipped), TEST_KAFKA_VERSION (default
# 4.1.0, the Kafka version whose API versions freshet serves).
# Not part of tests/run-all.sh: the default list takes 20-40 minutes.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$(pwd)
WORK="$ROOT/target/librdkafka-suite"
TEST_TIMEOUT_S="${LIBRDKAFKA_TEST_TIMEOUT_S:-600}"
RUNNER_ARGS="${LIBRDKAFKA_TEST_ARGS:--L}"
export TEST_KAFKA_VERSION="${TEST_KAFKA_VERSION:-4.1.0}"

# Tests that need a broker and fit one Freshet node. Left out of the default list (run them
# with --all or by number): known issues of librdkafka itself (0028, 0047); TLS, SASL, OAuth,
# ACLs (0097, 0115, 0119, 0126, 0135, 0142); replication factor 3 (0098, 0101, 0103, 0107, 0111);
# Kafka's Java tools (0109).
DEFAULT_TESTS=(
  0001 0002 0003 0005 0007 0008 0011 0012 0013 0014 0015 0016 0017 0018 0019 0020 0021 0022
  0026 0029 0030 0031 0033 0034 0035 0036 0038 0039 0040 0041 0042 0044 0045 0048 0049 0050
  0051 0052 0053 0054 0055 0056 0057 0059 0060 0061 0063 0064 0065 0067 0068 0069 0070 0073
  0075 0076 0077 0081 0082 0083 0084 0085 0086 0088 0089 0090 0091 0092 0093 0094 0099
  0102 0110 0112 0113 0114 0118 0122 0123 0125 0127 0129 0130 0132 0137 0139 0140 0150
)
EXCLUDED_TESTS=(0028 0047 0097 0098 0101 0103 0107 0109 0111 0115 0119 0126 0135 0142)
# The tests that need replication factor 3 or racks: the default list with --nodes 3.
CLUSTER_TESTS=(0101 0103 0107 0111)
# Per security mode (--security) and share consumers (--share).
SASL_TESTS=(0081)
SSL_TESTS=(0097)
SHARE_TESTS=(0170 0171 0172 0173 0174 0175 0176 0177 0178 0179 0180 0181 0182 0183 0184 0185)

usage() { sed -n '2,47p' "$0" | sed 's/^# \{0,1\}//'; }
tests=()
NODES="${LIBRDKAFKA_NODES:-1}"
SECURITY=
SHARE=
SRC_OVERRIDE="${LIBRDKAFKA_SRC:-}"
while (($#)); do
  case $1 in
    --all) tests=("${DEFAULT_TESTS[@]}" "${EXCLUDED_TESTS[@]}") ;;
    --nodes) NODES=${2:-}; shift ;;
    --nodes=*) NODES=${1#--nodes=} ;;
    --security) SECURITY=${2:-}; shift ;;
    --security=*) SECURITY=${1#--security=} ;;
    --share) SHARE=1 ;;
    --librdkafka-src) SRC_OVERRIDE=${2:-}; shift ;;
    -h | --help) usage; exit 0 ;;
    [0-9][0-9][0-9][0-9]) tests+=("$1") ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[[ $NODES =~ ^[1-9]$ ]] || { echo "--nodes takes 1 to 9, not '$NODES'" >&2; exit 2; }
[[ -z $SECURITY || $SECURITY == sasl || $SECURITY == ssl ]] ||
  { echo "--security takes sasl or ssl, not '$SECURITY'" >&2; exit 2; }
if [[ -n $SECURITY$SHARE ]] && ((NODES != 1)); then
  echo "--security and --share run against one node" >&2; exit 2
fi
[[ -z $SECURITY || -z $SHARE ]] || { echo "give --security or --share, not both" >&2; exit 2; }
if ((${#tests[@]} == 0)); then
  if [[ $SECURITY == sasl ]]; then tests=("${SASL_TESTS[@]}")
  elif [[ $SECURITY == ssl ]]; then tests=("${SSL_TESTS[@]}")
  elif [[ -n $SHARE ]]; then tests=("${SHARE_TESTS[@]}")
  elif ((NODES == 1)); then tests=("${DEFAULT_TESTS[@]}")
  else tests=("${CLUSTER_TESTS[@]}"); fi
fi
# Where a run writes (data, logs, test.conf, summary.txt): target/librdkafka-suite itself for
# the plain single-node run, a directory per group of tests otherwise, so that runs of
# different groups can go at once (once their librdkafka is built).
RUN="$WORK"
if [[ -n $SECURITY ]]; then RUN="$WORK/security-$SECURITY"
elif [[ -n $SHARE ]]; then RUN="$WORK/share"
elif ((NODES > 1)); then RUN="$WORK/nodes$NODES"; fi
LOGS="$RUN/logs"
# Share groups are Kafka 4.2's (the share tests ask for it).
[[ -z $SHARE ]] || export TEST_KAFKA_VERSION="${TEST_KAFKA_VERSION_SHARE:-4.2.0}"
mapfile -t tests < <(printf '%s\n' "${tests[@]}" | sort -u)

say() { printf '==> %s\n' "$*"; }

# ---- 1. librdkafka sources and test-runner ------------------------------------------------------
if [[ -n $SRC_OVERRIDE ]]; then
  # Another librdkafka source tree (LIBRDKAFKA_SRC): its version from rdkafka.h (0xMMmmrrff).
  src=$(cd "$SRC_OVERRIDE" && pwd)
  hex=$(awk '/^#define RD_KAFKA_VERSION / { print $3; exit }' "$src/src/rdkafka.h" 2>/dev/null || true)
  [[ -n $hex ]] || { echo "$SRC_OVERRIDE is not a librdkafka source tree (no src/rdkafka.h)" >&2; exit 1; }
  version=$(printf '%d.%d.%d' $((hex >> 24 & 255)) $((hex >> 16 & 255)) $((hex >> 8 & 255)))
else
  version=$(awk '/^name = "rdkafka-sys"/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
  [[ -n $version ]] || { echo "rdkafka-sys not in Cargo.lock" >&2; exit 1; }
  registry="${CARGO_HOME:-$HOME/.cargo}/registry/src"
  src=$(ls -d "$registry"/*/"rdkafka-sys-$version"/librdkafka 2>/dev/null | head -1 || true)
  if [[ -z $src ]]; then
    say "fetching crate sources (cargo fetch)"
    cargo fetch --locked
    src=$(ls -d "$registry"/*/"rdkafka-sys-$version"/librdkafka | head -1)
  fi
fi
if [[ -n $SHARE ]] && ! ls "$src"/tests/0170-* >/dev/null 2>&1; then
  echo "librdkafka $version ($src) has no share-consumer tests (0170-0185): give a newer source" \
    "with LIBRDKAFKA_SRC (see --help)" >&2
  exit 2
fi
build="$WORK/librdkafka-$version"
runner="$build/tests/test-runner"
# What the build was made with; a different one (another librdkafka, new flags) rebuilds.
build_id="$version configure --disable-gssapi --disable-curl --enable-zstd, rapidjson"

if [[ ! -x $runner || $(cat "$build/.built" 2>/dev/null) != "$build_id" ]]; then
  missing=()
  for cmd in gcc g++ make pkg-config; do command -v $cmd >/dev/null || missing+=("$cmd"); done
  ((${#missing[@]})) && missing=(build-essential pkg-config)
  for pc in openssl zlib libzstd; do
    pkg-config --exists $pc || case $pc in
      openssl) missing+=(libssl-dev) ;; zlib) missing+=(zlib1g-dev) ;; libzstd) missing+=(libzstd-dev) ;;
    esac
  done
  [[ -f /usr/include/rapidjson/rapidjson.h ]] || missing+=(rapidjson-dev)
  if ((${#missing[@]})); then
    say "installing build packages: ${missing[*]} (apt-get)"
    SUDO=()
    [[ $(id -u) -eq 0 ]] || SUDO=(sudo -n)
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  say "building librdkafka $version and tests/test-runner in $build (log: $LOGS/build.log)"
  mkdir -p "$WORK" "$LOGS"
  rm -rf "$build"
  cp -a "$src" "$build"
  (
    cd "$build"
    # System libraries only (no downloads): no Kerberos, no curl (OIDC).
    ./configure --disable-gssapi --disable-curl --enable-zstd
    make -j"$(nproc)" libs
    make -C tests -j"$(nproc)" build
  ) >"$LOGS/build.log" 2>&1 || { tail -30 "$LOGS/build.log" >&2; exit 1; }
  echo "$build_id" >"$build/.built"
fi

# ---- 2. The broker(s) ---------------------------------------------------------------------------
FRESHET_BIN="${FRESHET_BIN:-$ROOT/target/release/freshet}"
if [[ ! -x $FRESHET_BIN ]]; then
  say "cargo build --release --bin freshet"
  cargo build --release --bin freshet
fi
mkdir -p "$LOGS"
rm -f "$LOGS"/[0-9]*.log
# A Kafka port per node, and a controller port per node of a cluster: all bound at once (so
# no two are the same), then released.
mapfile -t free_ports < <(python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
for s in socks: print(s.getsockname()[1])' $((NODES * 2)))
ports=("${free_ports[@]:0:NODES}")
controller_ports=("${free_ports[@]:NODES}")
# --security: the secure listener's port (one node); a PLAINTEXT listener stays on ports[0].
secure_port=
[[ -z $SECURITY ]] || secure_port=$(python3 -c '
import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
voters=
for ((i = 0; i < NODES; i++)); do voters+="${voters:+,}$((i + 1))@127.0.0.1:${controller_ports[i]}"; done
bootstrap=
for ((i = 0; i < NODES; i++)); do bootstrap+="${bootstrap:+,}127.0.0.1:${ports[i]}"; done
# Kafka's auto.create.topics.enable: false for the tests of the "noautocreate" scenario.
auto_create=true
broker_pids=()
# Node i's log: broker.log for one node, broker1.log... for a cluster.
node_log() { if ((NODES == 1)); then echo "$LOGS/broker.log"; else echo "$LOGS/broker$(($1 + 1)).log"; fi; }
start_node() {
  local i=$1 args
  if ((NODES == 1)); then
    args=(--data-dir "$RUN/data")
  else
    # Node ids 1..N in racks RACK1..RACKN (as the suite's own Kafka cluster: broker.rack =
    # RACK${appid}), every node a voter.
    args=(--data-dir "$RUN/data/node$((i + 1))" --node-id $((i + 1)) --broker-rack "RACK$((i + 1))"
      --controller-quorum-voters "$voters" --config "$RUN/cluster.toml")
  fi
  args+=("${security_args[@]}")
  if [[ -n $SHARE ]]; then
    # As librdkafka's test cluster (tests/cluster_testing.py, tests/run-all-tests.sh) runs
    # Kafka 4.2 for the share tests: group.share.min.record.lock.duration.ms=1000 (0173 and
    # 0176 give their groups share.record.lock.duration.ms=3000). Kafka's default stays 15000.
    printf 'group_share_min_record_lock_duration_ms = 1000\n' >"$RUN/share.toml"
    args+=(--config "$RUN/share.toml")
  fi
  "$FRESHET_BIN" start --listen "127.0.0.1:${ports[i]}" "${args[@]}" --default-partitions 4 \
    --auto-create-topics "$auto_create" --admin-listen off --log info >>"$(node_log "$i")" 2>&1 &
  broker_pids[i]=$!
}
cluster_alive() {
  local pid
  for pid in "${broker_pids[@]}"; do kill -0 "$pid" 2>/dev/null || return 1; done
}
start_broker() {
  local i n mechanism
  rm -rf "$RUN/data"
  if [[ $SECURITY == sasl ]]; then
    # The suite's SASL user, made on the (stopped, empty) data directory before the start.
    for mechanism in SCRAM-SHA-512 SCRAM-SHA-256; do
      "$FRESHET_BIN" user create --data-dir "$RUN/data" --name testuser --password testpass \
        --mechanism "$mechanism" >>"$(node_log 0)" 2>&1
    done
  fi
  if ((NODES > 1)); then
    cat >"$RUN/cluster.toml" <<TOML
# librdkafka's suite runs its Kafka brokers with the rack-aware replica selector (KIP-392).
replica_selector_class = "org.apache.kafka.common.replica.RackAwareReplicaSelector"
TOML
  fi
  for ((i = 0; i < NODES; i++)); do start_node "$i"; done
  for ((i = 0; i < NODES; i++)); do
    for n in $(seq 301); do
      if (exec 3<>"/dev/tcp/127.0.0.1/${ports[i]}") 2>/dev/null; then break; fi
      kill -0 "${broker_pids[i]}" 2>/dev/null || { tail -20 "$(node_log "$i")" >&2; return 1; }
      ((n <= 300)) || { echo "freshet did not listen on 127.0.0.1:${ports[i]} within 30 s" >&2; return 1; }
      sleep 0.1
    done
  done
  ((NODES > 1)) || return 0
  # A cluster: wait until every node is registered and unfenced (`freshet cluster info`).
  for n in $(seq 121); do
    if "$FRESHET_BIN" cluster info -b "$bootstrap" --format json 2>/dev/null | python3 -c '
import json, sys
brokers = json.load(sys.stdin)["brokers"]
sys.exit(0 if sum(not b["fenced"] for b in brokers) == int(sys.argv[1]) else 1)' "$NODES"; then
      return 0
    fi
    cluster_alive || { for ((i = 0; i < NODES; i++)); do tail -5 "$(node_log "$i")" >&2; done; return 1; }
    ((n <= 120)) || { echo "the $NODES nodes did not all register within 60 s" >&2; return 1; }
    sleep 0.5
  done
}
stop_broker() {
  local pid _
  for pid in "${broker_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${broker_pids[@]}"; do
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  broker_pids=()
}
trap stop_broker EXIT

# ---- Security modes: the broker's listener settings, test.conf lines, the suite's variables ----
security_args=()
security_conf=
# Certificates as librdkafka's trivup makes them for 0097: a CA; the broker's certificate; a
# client key encrypted with SSL_password, its certificate (PEM and DER) and a PKCS#12 keystore
# of both with the CA. Made once per run under $WORK/ssl.
ssl_client_auth=${LIBRDKAFKA_SSL_CLIENT_AUTH:-required}
make_ssl_files() {
  local d="$RUN/ssl" pw=use_strong_password_keystore_client
  rm -rf "$d" && mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
      -subj "/CN=freshet-librdkafka-ca"
    openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj "/CN=localhost"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >broker.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -out broker.pem -extfile broker.ext
    openssl req -newkey rsa:2048 -nodes -keyout client.plain.key -out client.csr -subj "/CN=client"
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -out client.pem -extfile client.ext
    openssl pkcs8 -topk8 -in client.plain.key -out client.key -passout "pass:$pw"
    openssl pkcs12 -export -in client.pem -inkey client.plain.key -certfile ca.pem \
      -out client.p12 -passout "pass:$pw"
    openssl x509 -in client.pem -outform DER -out client.der
    openssl pkey -in client.plain.key -outform DER -out client.key.der
    openssl x509 -in ca.pem -outform DER -out ca.der
  ) >"$LOGS/ssl.log" 2>&1 || { cat "$LOGS/ssl.log" >&2; exit 1; }
  export SSL_password=$pw SSL_client_auth=$ssl_client_auth SSL_pkcs="$d/client.p12" \
    SSL_pub_der="$d/client.der" SSL_priv_der="$d/client.key.der" SSL_pub_pem="$d/client.pem" \
    SSL_priv_pem="$d/client.key" SSL_ca_der="$d/ca.der" SSL_all_cas_pem="$d/ca.pem" \
    SSL_ca_pem="$d/ca.pem"
}
case $SECURITY in
  sasl)
    security_args=(--listeners "PLAINTEXT://127.0.0.1:${ports[0]},SASL_PLAINTEXT://127.0.0.1:$secure_port"
      --sasl-enabled-mechanisms PLAIN,SCRAM-SHA-256,SCRAM-SHA-512 --authorizer on
      --allow-everyone-if-no-acl-found true)
    security_conf="security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.username=testuser
sasl.password=testpass"
    ;;
  ssl)
    make_ssl_files
    security_args=(--listeners "PLAINTEXT://127.0.0.1:${ports[0]},SSL://127.0.0.1:$secure_port"
      --ssl-certificate-file "$RUN/ssl/broker.pem" --ssl-key-file "$RUN/ssl/broker.key"
      --ssl-ca-file "$RUN/ssl/ca.pem" --ssl-client-auth "$ssl_client_auth")
    security_conf="security.protocol=SSL
ssl.ca.location=$SSL_ca_pem
ssl.certificate.location=$SSL_pub_pem
ssl.key.location=$SSL_priv_pem
ssl.key.password=$SSL_password"
    ;;
esac
for ((i = 0; i < NODES; i++)); do : >"$(node_log "$i")"; done
say "starting $NODES node(s) of $FRESHET_BIN on $bootstrap (log: $(node_log 0)$( ((NODES == 1)) || echo ", ..."))"
start_broker

# Tests that create topics with Kafka's Java tool (test_kafka_topics(): 0052, 0077) get a
# kafka-topics.sh that does the same with `freshet topic` (tests/librdkafka/kafka-topics.sh).
mkdir -p "$RUN/kafka/bin"
cp tests/librdkafka/kafka-topics.sh "$RUN/kafka/bin/kafka-topics.sh"
export KAFKA_PATH="$RUN/kafka" BROKERS="$bootstrap" FRESHET_BIN

# The tests connect to the secure listener in a security mode.
test_bootstrap=$bootstrap
[[ -z $secure_port ]] || test_bootstrap="127.0.0.1:$secure_port"
conf="$RUN/test.conf"
cat >"$conf" <<CONF
metadata.broker.list=$test_bootstrap
${security_conf}
# The machine running this is usually shared: give the tests' timeouts room.
test.timeout.multiplier=${LIBRDKAFKA_TIMEOUT_MULTIPLIER:-2}
test.topic.random=true
CONF

# ---- 3. The tests -------------------------------------------------------------------------------
say "running ${#tests[@]} test(s) with test-runner $RUNNER_ARGS, Kafka version $TEST_KAFKA_VERSION," \
  "group protocol ${TEST_CONSUMER_GROUP_PROTOCOL:-classic} (logs: $LOGS/NNNN.log)"
passed=()
failed=()
skipped=()
T0=$(date +%s)
# Each test number in the scenario its variants ask for (test.c's `.scenario`, the first of
# its list; none: "default"). A "noautocreate" run gets brokers restarted with
# auto.create.topics.enable=false and TEST_SCENARIO=noautocreate (the runner skips variants of
# other scenarios). A number whose variants differ (0045) runs its default ones only, unless
# LIBRDKAFKA_SCENARIOS=all: then once per scenario (0045's noautocreate variants fail there:
# they grow a topic with `kafka-topics.sh --alter --partitions`, which the stand-in lacks).
scenarios_of() {
  awk -v t="$1" '
    /_TEST\(/ { if (name != "") print sc; name = ""; sc = "default"
                 if (match($0, /_TEST\([0-9]+_[A-Za-z0-9_]*/)) {
                   n = substr($0, RSTART + 6, RLENGTH - 6); if (index(n, t "_") == 1) name = n } }
    /\.scenario *= *"/ { v = $0; sub(/.*\.scenario *= *"/, "", v); sub(/[",].*/, "", v); sc = v }
    END { if (name != "") print sc }' "$build/tests/test.c" | sort -u
}
runs=()
for t in "${tests[@]}"; do
  mapfile -t scs < <(scenarios_of "$t")
  ((${#scs[@]})) || scs=(default)
  ((${#scs[@]} == 1)) || [[ ${LIBRDKAFKA_SCENARIOS:-} == all ]] || scs=(default)
  for sc in "${scs[@]}"; do runs+=("$t:$sc"); done
done
for run in "${runs[@]}"; do
  t=${run%%:*} scenario=${run#*:}
  want_auto_create=true
  [[ $scenario != noautocreate ]] || want_auto_create=false
  if [[ $want_auto_create != "$auto_create" ]]; then
    stop_broker
    auto_create=$want_auto_create
    start_broker
  fi
  log="$LOGS/$t.log"
  [[ $scenario == default ]] || log="$LOGS/$t-$scenario.log"
  t_start=$(date +%s)
  limit=$TEST_TIMEOUT_S
  # 0113 (cooperative rebalancing) runs over 10 minutes in full mode (its subtests all passed
  # until a 600 s limit cut it off).
  [[ $t != 0113 ]] || ((limit >= 1800)) || limit=1800
  set +e
  # shellcheck disable=SC2086 # RUNNER_ARGS is a list of flags
  # A failing test-runner aborts (SIGABRT): the extra bash keeps the shell's "Aborted" notice
  # in the test's log.
  bash -c 'cd "$1" && shift && "$@"; exit $?' _ "$build/tests" \
    env LD_LIBRARY_PATH="../src:../src-cpp" RDKAFKA_TEST_CONF="$conf" TESTS="$t" \
    TEST_SCENARIO="$scenario" \
    timeout --kill-after=10 "$limit" ./test-runner $RUNNER_ARGS >"$log" 2>&1
  rc=$?
  set -e
  secs=$(($(date +%s) - t_start))
  # The summary table's rows for this number (one per variant, e.g. 0045_*): "| name | STATUS |".
  rows=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | awk -F'|' -v t="$t" '
    NF >= 4 { n = $2; gsub(/ /, "", n); st = $3; gsub(/ /, "", st); if (index(n, t "_") == 1) print n, st }')
  # Named after its first variant that ran (else its first one).
  name=$(awk '$2 != "SKIPPED" { print $1; exit }' <<<"$rows")
  [[ -n $name ]] || name=$(awk 'NR == 1 { print $1 }' <<<"$rows")
  # No table when the runner aborted: the first test it announced.
  [[ -n $name ]] || name=$(grep -o -m1 "Running test ${t}_[a-zA-Z0-9_]*" "$log" | head -1 | sed 's/^Running test //' || true)
  [[ -n $name ]] || name=$t
  note=
  if ! cluster_alive; then
    note=" (a broker exited; restarted)"
    ((rc != 0)) || rc=1
    stop_broker
    start_broker
  fi
  if ((rc == 0)) && [[ -n $rows ]] && ! grep -qv ' SKIPPED$' <<<"$rows"; then
    # Every variant skipped itself (a feature or broker version it needs): not a pass.
    [[ $scenario == default ]] || name+=" [$scenario]"
    skipped+=("$name")
    printf '  %-44s skipped %4ss\n' "$name" "$secs"
  elif ((rc == 0)); then
    [[ $scenario == default ]] || name+=" [$scenario]"
    passed+=("$name")
    printf '  %-44s passed  %4ss\n' "$name" "$secs"
  else
    # The variants that failed, by name, when the table says.
    failing=$(awk '$2 == "FAILED" { print $1 }' <<<"$rows" | paste -sd, -)
    [[ -z $failing || $failing == "$name" ]] || name="$failing"
    [[ $scenario == default ]] || name+=" [$scenario]"
    case $rc in
      124) note=" (timed out after ${limit}s)$note" ;;
      134) note=" (test-runner aborted)$note" ;;
      137) note=" (killed: SIGKILL)$note" ;;
    esac
    failed+=("$name")
    printf '  %-44s FAILED  %4ss%s\n' "$name" "$secs" "$note"
  fi
done
stop_broker

{
  echo "librdkafka: ${#passed[@]} passed, ${#failed[@]} failed ($(($(date +%s) - T0)) s; librdkafka $version, $NODES node(s)${SECURITY:+, security $SECURITY}${SHARE:+, share consumers}, group protocol ${TEST_CONSUMER_GROUP_PROTOCOL:-classic})"
  ((${#failed[@]} == 0)) || echo "failed: ${failed[*]}"
  ((${#skipped[@]} == 0)) || echo "skipped by the test itself (not counted): ${skipped[*]}"
  echo "logs: $LOGS"
} | tee "$RUN/summary.txt"
((${#failed[@]} == 0))
