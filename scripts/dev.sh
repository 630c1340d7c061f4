#!/usr/bin/env bash
# One command from a fresh clone to a working registry behind Portcullis on this machine:
# installs what is missing, builds, sets up .dev/ with `portcullis init` if absent (certificates, an admin
# credential, the registry's secret, proxy.yaml), starts a real registry (distribution) on loopback and the
# proxy in front of it, in the foreground. Ctrl+C stops both.
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

# The dev setup is what `portcullis init` writes, in .dev/ (certificates, the admin user, the registry's
# secret, proxy.yaml); a second run reuses it. The admin password is kept in .dev/auth/admin.password (0600).
dev=.dev
# auth/htpasswd is the last file init writes: when it is there, everything is.
if [ ! -f "$dev/auth/htpasswd" ]; then
  names=(--host localhost --ip 127.0.0.1)
  host=$(hostname)
  # A hostname that is not a DNS name (underscores, a numeric last label) would make init refuse: leave it out.
  if [[ $host =~ ^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$ && ! ${host##*.} =~ ^[0-9]+$ ]]; then
    names+=(--host "$host")
  fi
  # The password is saved before init hashes it, so an interrupted run never leaves a user nobody can log in as.
  pw=$(node -e 'console.log(require("crypto").randomBytes(18).toString("base64url"))')
  mkdir -p "$dev/auth"
  (umask 077; printf '%s\n' "$pw" > "$dev/auth/admin.password")
  # Its warning about .env's uid 0 does not apply here: nothing runs from .env.
  printf '%s\n' "$pw" | node dist/cli/main.js init "$dev" "${names[@]}" --user admin --password-stdin >/dev/null \
    2> >(grep -v 'written as root' >&2)
fi
mkdir -p "$dev/registry-data"
secret=$(sed -n 's/^REGISTRY_HTTP_SECRET=//p' "$dev/.env")
port=$(node -e 'const h=require("yaml").parse(require("fs").readFileSync(process.argv[1],"utf8")).listen;console.log(h.split(":").pop())' "$dev/proxy.yaml")

# The registry listens on loopback only: the proxy is the one door in.
reg_port=5000
while (exec 3<>"/dev/tcp/127.0.0.1/$reg_port") 2>/dev/null; do reg_port=$((reg_port + 1)); done
cat > "$dev/registry.yml" <<YAML
version: 0.1
log: { level: warn }
storage:
  filesystem: { rootdirectory: $root/$dev/registry-data }
  delete: { enabled: true }
http:
  addr: 127.0.0.1:$reg_port
  secret: $secret
YAML
docker-registry serve "$dev/registry.yml" > "$dev/registry.log" 2>&1 &
reg_pid=$!
trap 'kill $reg_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$reg_port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done

cat <<MSG

  Portcullis: https://localhost:$port  ->  registry http://127.0.0.1:$reg_port (data in $dev/registry-data)
  CA certificate: $root/$dev/certs/ca.crt
  Trust it for docker (per registry host:port, once):
    sudo mkdir -p /etc/docker/certs.d/localhost:$port
    sudo cp $root/$dev/certs/ca.crt /etc/docker/certs.d/localhost:$port/ca.crt
  Log in (user admin, password in $dev/auth/admin.password):
    docker login localhost:$port -u admin --password-stdin < $root/$dev/auth/admin.password
  Then: docker tag IMAGE localhost:$port/NAME:TAG && docker push localhost:$port/NAME:TAG

MSG
# The GC flags of this Node major on the command line (src/runtime/node-flags.ts); unquoted: none on Node 22.
gc_flags=$(node --input-type=module -e "import { gcFlagsFor } from './dist/runtime/node-flags.js'; console.log(gcFlagsFor().join(' '))")
# shellcheck disable=SC2086
PORTCULLIS_UPSTREAM_URL="http://127.0.0.1:$reg_port" node $gc_flags dist/cli/main.js serve --config "$dev/proxy.yaml" &
proxy_pid=$!
# Ctrl+C or a kill of this script stops the proxy (it drains in-flight requests), then the registry. The proxy
# runs in the background so that `wait` lets this shell act on a signal at once.
trap 'kill -TERM $proxy_pid 2>/dev/null; wait $proxy_pid; exit 143' TERM
trap 'kill -INT $proxy_pid 2>/dev/null; wait $proxy_pid; exit 130' INT
wait $proxy_pid
