#!/bin/sh
# The broker in the foreground with the server's logging (to stdout, as the image's is).
set -eu
exec java ${KAFKA_HEAP_OPTS:--Xmx1G -Xms1G} ${KAFKA_OPTS:-} \
  -Dlog4j.configuration=file:/opt/kafka/config/log4j.properties -cp '/opt/kafka/libs/*' kafka.Kafka "$@"
