#!/bin/sh
# Runs the attack catalogue for three seeds against a fresh `citysec demo` (its own attacks
# off, so every alert is the exercise's) and a day-long benign soak per seed, writing JSON
# into OUT (default bench/results/2026-12-01-vm/exercises/).
#
#   bench/exercises.sh [OUT]            (SEEDS="2 3" runs only those seeds)
#
# Ports per seed S: HTTP 1S080, MQTT 1S883, MQTT over mTLS 1S884, flows 1S055 (UDP), so seeds
# can run at once:
#   for s in 1 2 3; do SEEDS=$s bench/exercises.sh OUT & done; wait
set -eu
OUT=${1:-bench/results/2026-12-01-vm/exercises}
BIN=${CITYSEC:-target/release/citysec}
mkdir -p "$OUT"
for seed in ${SEEDS:-1 2 3}; do
  data=$(mktemp -d)
  http=1${seed}080 mqtt=1${seed}883 mqtts=1${seed}884 flow=1${seed}055
  CITYSEC_LOG=warn "$BIN" demo --devices 200 --seed "$seed" --attacks false \
    --data-dir "$data" --http-listen 127.0.0.1:$http --mqtt-listen 127.0.0.1:$mqtt \
    --mqtt-tls-listen 127.0.0.1:$mqtts --flow-listen 127.0.0.1:$flow --duration 30m >"$OUT/demo-$seed.log" 2>&1 &
  demo=$!
  while ! curl -sf http://127.0.0.1:$http/readyz >/dev/null; do sleep 0.5; done
  CITYSEC_LOG=warn "$BIN" exercise run --scenario all --seed "$seed" --json \
    --api http://127.0.0.1:$http --token-file "$data/admin.token" \
    --data-dir "$data" --mqtt 127.0.0.1:$mqtt --mqtt-tls 127.0.0.1:$mqtts \
    --flow 127.0.0.1:$flow --lead 20s >"$OUT/run-$seed.json" || true
  kill -INT "$demo"; wait "$demo" || true
  rm -rf "$data"
  CITYSEC_LOG=error "$BIN" exercise soak --devices 420 --hours 24 --seed "$seed" --scenarios all --json \
    >"$OUT/soak-$seed.json"
done
