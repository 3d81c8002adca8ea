#!/bin/sh
# Runs a class of the broker's classpath, the way the image's scripts of the same name do (heap and options from
# KAFKA_HEAP_OPTS / KAFKA_OPTS, tools logging to stderr).
set -eu
class=$1
shift
exec java ${KAFKA_HEAP_OPTS:--Xmx256M} ${KAFKA_OPTS:-} \
  -Dlog4j.configuration=file:/opt/kafka/config/tools-log4j.properties -cp '/opt/kafka/libs/*' "$class" "$@"
