#!/usr/bin/env bash
# A stand-in for Kafka's bin/kafka-topics.sh, for librdkafka's tests that create topics with
# the Java tool (test_kafka_topics(): 0052, 0077): the same flags, done by `freshet topic`.
# tests/librdkafka/run.sh installs it as $KAFKA_PATH/bin/kafka-topics.sh with FRESHET_BIN set.
#   kafka-topics.sh --bootstrap-server HOST:PORT --create --topic T [--partitions N]
#                   [--replication-factor R] [--config K=V]...
#   kafka-topics.sh --bootstrap-server HOST:PORT --delete --topic T
#   kafka-topics.sh --bootstrap-server HOST:PORT --list
set -euo pipefail
bootstrap= action= topic= partitions= rf=
configs=()
while (($#)); do
  case $1 in
    --bootstrap-server) bootstrap=$2; shift 2 ;;
    --create | --delete | --list) action=${1#--}; shift ;;
    --topic) topic=$2; shift 2 ;;
    --partitions) partitions=$2; shift 2 ;;
    --replication-factor) rf=$2; shift 2 ;;
    --config) configs+=(-c "$2"); shift 2 ;;
    *) echo "kafka-topics.sh (freshet stand-in): unsupported argument $1" >&2; exit 1 ;;
  esac
done
freshet=("${FRESHET_BIN:?FRESHET_BIN must name the freshet binary}" -b "${bootstrap:?--bootstrap-server is required}")
case $action in
  create) exec "${freshet[@]}" topic create "$topic" ${partitions:+-p "$partitions"} ${rf:+-r "$rf"} "${configs[@]}" ;;
  delete) exec "${freshet[@]}" topic delete "$topic" ;;
  list) exec "${freshet[@]}" topic list ;;
  *) echo "kafka-topics.sh (freshet stand-in): give --create, --delete or --list" >&2; exit 1 ;;
esac
