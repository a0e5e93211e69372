#!/bin/sh
# Builds the `hearth` container image from a static binary:
#   cluster/build-image.sh [TAG]        (default tag: hearth:dev)
# BASE=scratch (default here, needs no download) or BASE=debian:bookworm-slim.
set -eu
TAG=${1:-hearth:dev}
BASE=${BASE:-scratch}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=$(rustc -vV | sed -n 's/^host: //p')
cd "$ROOT"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$TARGET"
CONTEXT=$(mktemp -d)
trap 'rm -rf "$CONTEXT"' EXIT
cp "target/$TARGET/release/hearth" "$CONTEXT/hearth"
cp cluster/prometheus.yml cluster/Dockerfile "$CONTEXT/"
docker build --build-arg BASE="$BASE" -t "$TAG" "$CONTEXT"
echo "built $TAG (base $BASE)"
