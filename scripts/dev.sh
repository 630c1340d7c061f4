#!/usr/bin/env bash
# One command from a fresh clone to a working registry behind Portcullis on this machine:
# installs what is missing, builds, makes dev certificates and an admin credential if absent, starts a
# real registry (distribution) on loopback and the proxy in front of it, in the foreground. Ctrl+C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v docker-registry >/dev/null; then
  echo "Installing the registry (Debian package docker-registry)..."
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
fi
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run --silent build

host=$(hostname)
port=$(node -e 'const h=require("yaml").parse(require("fs").readFileSync("proxy.yaml","utf8")).listen;console.log(h.split(":").pop())')
if [ ! -f certs/server.crt ]; then
  node dist/cli/main.js certs init --dir certs --host localhost --host "$host" --ip 127.0.0.1 --port "$port" >/dev/null
fi
mkdir -p auth .dev/registry-data
if [ ! -f auth/htpasswd ]; then
  pw=$(node -e 'console.log(require("crypto").randomBytes(18).toString("base64url"))')
  printf '%s\n' "$pw" | node dist/cli/main.js htpasswd add auth/htpasswd admin --password-stdin >/dev/null
  (umask 077; printf '%s\n' "$pw" > auth/admin.password)
fi
[ -f .dev/http-secret ] || (umask 077; node -e 'console.log(require("crypto").randomBytes(32).toString("hex"))' > .dev/http-secret)

# The registry listens on loopback only: the proxy is the one door in.
reg_port=5000
while (exec 3<>"/dev/tcp/127.0.0.1/$reg_port") 2>/dev/null; do reg_port=$((reg_port + 1)); done
cat > .dev/registry.yml <<YAML
version: 0.1
log: { level: warn }
storage:
  filesystem: { rootdirectory: $root/.dev/registry-data }
  delete: { enabled: true }
http:
  addr: 127.0.0.1:$reg_port
  secret: $(cat .dev/http-secret)
YAML
docker-registry serve .dev/registry.yml > .dev/registry.log 2>&1 &
reg_pid=$!
trap 'kill $reg_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$reg_port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done

cat <<MSG

  Portcullis: https://localhost:$port  ->  registry http://127.0.0.1:$reg_port (data in .dev/registry-data)
  CA certificate: $root/certs/ca.crt
  Trust it for docker (per registry host:port, once):
    sudo mkdir -p /etc/docker/certs.d/localhost:$port
    sudo cp $root/certs/ca.crt /etc/docker/certs.d/localhost:$port/ca.crt
  Log in (user admin, password in auth/admin.password):
    docker login localhost:$port -u admin --password-stdin < $root/auth/admin.password
  Then: docker tag IMAGE localhost:$port/NAME:TAG && docker push localhost:$port/NAME:TAG

MSG
# The GC flags of this Node major on the command line (src/runtime/node-flags.ts); unquoted: none on Node 22.
gc_flags=$(node --input-type=module -e "import { gcFlagsFor } from './dist/runtime/node-flags.js'; console.log(gcFlagsFor().join(' '))")
# shellcheck disable=SC2086
PORTCULLIS_UPSTREAM_URL="http://127.0.0.1:$reg_port" node $gc_flags dist/cli/main.js serve --config proxy.yaml &
proxy_pid=$!
# Ctrl+C or a kill of this script stops the proxy (it drains in-flight requests), then the registry. The proxy
# runs in the background so that `wait` lets this shell act on a signal at once.
trap 'kill -TERM $proxy_pid 2>/dev/null; wait $proxy_pid; exit 143' TERM
trap 'kill -INT $proxy_pid 2>/dev/null; wait $proxy_pid; exit 130' INT
wait $proxy_pid
