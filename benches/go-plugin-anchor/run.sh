#!/usr/bin/env bash
# Heartbeat benchmark, integrationd side by side with HashiCorp go-plugin (the anchor),
# alternating runs so both see the same machine state. integrationd's line is measured on
# the daemon's own runtime (two workers, the check in a spawned task, as the daemon's
# heartbeats run); the current-thread line is for comparison.
#
#   benches/go-plugin-anchor/run.sh [ROUNDS]
#
# The anchor builds offline from Debian's packages (golang-go,
# golang-github-hashicorp-go-plugin-dev: go-plugin 1.0.1, grpc-go 1.33, Go 1.19).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-5}
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/hashicorp/go-plugin ]; then
    apt-get update -qq && apt-get install -y -qq golang-go golang-github-hashicorp-go-plugin-dev \
        golang-google-grpc-dev golang-goprotobuf-dev golang-github-oklog-run-dev \
        golang-github-mitchellh-go-testing-interface-dev
fi
out=target/go-plugin-anchor
mkdir -p "$out"
GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$PWD/$out/cache" \
    go build -o "$out/anchor" ./benches/go-plugin-anchor/main.go
cargo build --release -p supervisor -p integration-github --bins
for round in $(seq "$rounds"); do
    printf 'round %s go-plugin    %s\n' "$round" "$("$out/anchor" -calls 20000 -spawns 20)"
    printf 'round %s integrationd %s\n' "$round" \
        "$(target/release/integrationd bench heartbeat --plugin target/release/integration-github --calls 20000 --spawns 20)"
    # For comparison: the same host on one thread, which the daemon is not.
    printf 'round %s integrationd-current-thread %s\n' "$round" \
        "$(target/release/integrationd bench heartbeat --runtime current --plugin target/release/integration-github --calls 20000 --spawns 20)"
done
