#!/usr/bin/env bash
# Builds lb's release binaries: static (CGO_ENABLED=0), -trimpath, for linux/amd64 and
# linux/arm64, stamped with version, commit and build date, with SHA-256 checksums:
#
#   deploy/release.sh                 # into dist/: lb-VERSION-linux-amd64, ...-arm64, SHA256SUMS
#   VERSION=v1.2.0 OUT=/tmp/rel deploy/release.sh
#
# VERSION defaults to `git describe`; the date is SOURCE_DATE_EPOCH's when set (reproducible
# builds), else now.
set -euo pipefail
cd "$(dirname "$0")/.."

version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
  date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
else
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
fi
out=${OUT:-dist}
mkdir -p "$out"

for arch in amd64 arm64; do
  bin="lb-$version-linux-$arch"
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath \
    -ldflags "-s -w -X lb/version.version=$version -X lb/version.commit=$commit -X lb/version.date=$date" \
    -o "$out/$bin" ./cmd/lb
  echo "built $out/$bin"
done
(cd "$out" && sha256sum lb-"$version"-linux-* > SHA256SUMS)
echo "checksums in $out/SHA256SUMS"
