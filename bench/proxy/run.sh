#!/usr/bin/env bash
# Benchmarks httpguard proxy against Portkey's AI gateway on this machine,
# both in front of one loopback upstream (see main.go). Not a CI step.
#
#   bench/proxy/run.sh [-rate 50] [-duration 10s] [-concurrency 32]
#
# Installs Portkey (npm @portkey-ai/gateway, pinned in portkey/package.json)
# into bench/proxy/portkey/node_modules, which git ignores, and builds
# httpguard into a temporary directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ ! -f "$here/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" ]; then
	(cd "$here/portkey" && npm ci --no-audit --no-fund --loglevel=error)
fi
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
(cd "$root" && go build -o "$bin/httpguard" ./cmd/httpguard)
cd "$root/bench"
go run ./proxy -httpguard "$bin/httpguard" -portkey "$here/portkey/node_modules/@portkey-ai/gateway" "$@"
