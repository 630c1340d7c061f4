# syntax=docker/dockerfile:1
# Portcullis: build with the full toolchain, run on a slim base as an unprivileged user.
# Config, certificates and htpasswd are not in the image: mount them under /etc/portcullis (docs/deploy.md).

# Node 24 LTS on Debian 13. Change here (or --build-arg NODE_IMAGE=...) to move both stages together;
# pin a digest (node:24-trixie-slim@sha256:...) for reproducible builds.
ARG NODE_IMAGE=node:24-trixie-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM ${NODE_IMAGE} AS runtime
# The metrics listener serves /healthz and /readyz (and /metrics) for the HEALTHCHECK below and for
# orchestrators. Plain HTTP: reachable on the container network only, never publish it.
ENV NODE_ENV=production \
    PORTCULLIS_METRICS_LISTEN=0.0.0.0:9090
WORKDIR /app
# Owned by root and read-only to the process: it cannot modify its own code.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# tls.acme storage (docs/deploy.md): a new named volume mounted here inherits this owner and mode, so the
# proxy can keep its account key and certificates there without a chown step.
RUN mkdir -p /var/lib/portcullis/acme && chown 1000:1000 /var/lib/portcullis/acme && chmod 700 /var/lib/portcullis/acme
# uid/gid 1000 is the image's `node` user. Numeric, so Kubernetes runAsNonRoot can verify it.
USER 1000:1000
EXPOSE 5043
# The slim image has no curl: ask node itself.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9090/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# The GC flag Node 24 needs while streaming (src/runtime/node-flags.ts, gcFlagsFor(24)); with another
# NODE_IMAGE major, use gcFlagsFor(that major): test/deploy.test.ts checks they agree.
ENTRYPOINT ["node", "--scavenger-max-new-space-capacity-mb=8", "/app/dist/cli/main.js"]
CMD ["serve", "--config", "/etc/portcullis/proxy.yaml"]
