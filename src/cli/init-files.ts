/**
 * What `portcullis init` writes, as text: pure functions of what it was given and what it generated (keys,
 * the password hash, the secret), so the files can be checked without writing them.
 *
 * The repository's own proxy.yaml and docker-compose.yml are outputs of these functions too (the compose
 * file in its `build: .` variant); test/init.test.ts holds them equal, so the shipped files and the
 * generated ones never drift apart.
 */

/** The image the generated compose file runs unless told otherwise: the tag docs/deploy.md builds. */
export const DEFAULT_IMAGE = 'portcullis:local';

/** The port the proxy listens on inside its container, and the one published for a private CA. */
export const PROXY_PORT = 5043;

/** The port published with ACME: the CA validates tls-alpn-01 there, and clients need no port. */
export const ACME_PORT = 443;

/** Where each file goes, relative to the folder init writes into. */
export const INIT_PATHS = {
  proxy: 'proxy.yaml',
  compose: 'docker-compose.yml',
  env: '.env',
  caCert: 'certs/ca.crt',
  caKey: 'certs/ca.key',
  serverCert: 'certs/server.crt',
  serverKey: 'certs/server.key',
  htpasswd: 'auth/htpasswd',
  /** tls.acme.storage (a folder, created empty). */
  acme: 'acme',
} as const;

export type TlsChoice =
  /** A private CA made by init (certs/), as `certs init` makes it. */
  | { kind: 'files' }
  /** Certificates from an ACME CA (Let's Encrypt) for `domains`. */
  | { kind: 'acme'; email: string; domains: readonly string[] };

export interface InitInput {
  image: string;
  /** REGISTRY_HTTP_SECRET. */
  secret: string;
  /** The owner of the written files, which the proxy's container must run as to read the 0600 ones. */
  uid: number;
  gid: number;
  /** The htpasswd file's text. */
  htpasswd: string;
  tls: { kind: 'files'; caCert: string; caKey: string; serverChain: string; serverKey: string } | Extract<TlsChoice, { kind: 'acme' }>;
}

export interface InitFile {
  /** Relative to the target folder, `/`-separated. */
  path: string;
  text: string;
  mode: number;
}

export interface InitDir {
  path: string;
  mode: number;
  /** It may exist already (init then only adds files to it). */
  mayExist: boolean;
}

/** Everything init creates, in the order it is written: folders first, then each file. */
export interface InitPlan {
  dirs: InitDir[];
  files: InitFile[];
}

/**
 * The paths that must not exist before init writes anything (files, and the ACME storage folder). The
 * folders `certs` and `auth` may exist: init only adds files to them.
 */
export function initTargets(kind: TlsChoice['kind']): string[] {
  const p = INIT_PATHS;
  return kind === 'files'
    ? [p.proxy, p.compose, p.env, p.caCert, p.caKey, p.serverCert, p.serverKey, p.htpasswd]
    : [p.proxy, p.compose, p.env, p.htpasswd, p.acme];
}

export function initPlan(input: InitInput): InitPlan {
  const p = INIT_PATHS;
  const tls: TlsChoice = input.tls.kind === 'files' ? { kind: 'files' } : input.tls;
  const files: InitFile[] = [
    { path: p.proxy, text: renderProxyYaml(tls), mode: 0o644 },
    { path: p.compose, text: renderCompose({ image: input.image, build: false, tls: tls.kind }), mode: 0o644 },
    { path: p.env, text: renderEnv(input), mode: 0o600 },
  ];
  const dirs: InitDir[] = [];
  if (input.tls.kind === 'files') {
    dirs.push({ path: 'certs', mode: 0o755, mayExist: true });
    // Keys before certificates, as certs init writes them.
    files.push(
      { path: p.caKey, text: input.tls.caKey, mode: 0o600 },
      { path: p.caCert, text: input.tls.caCert, mode: 0o644 },
      { path: p.serverKey, text: input.tls.serverKey, mode: 0o600 },
      { path: p.serverCert, text: input.tls.serverChain, mode: 0o644 },
    );
  } else {
    // The proxy keeps its ACME account key and certificates here (tls.acme.storage wants 0700).
    dirs.push({ path: p.acme, mode: 0o700, mayExist: false });
  }
  dirs.push({ path: 'auth', mode: 0o755, mayExist: true });
  // Last: once it is there, everything is (scripts/dev.sh tells a finished setup by it).
  files.push({ path: p.htpasswd, text: input.htpasswd, mode: 0o600 });
  return { dirs, files };
}

/** proxy.yaml, commented: the repository's own proxy.yaml is `renderProxyYaml({ kind: 'files' })`. */
export function renderProxyYaml(tls: TlsChoice): string {
  const tlsPart =
    tls.kind === 'files'
      ? `# Server certificate (leaf first, then intermediates) and its key; both are reloaded when they change.
tls: { cert: certs/server.crt, key: certs/server.key, minVersion: TLSv1.2 }`
      : `# Certificates from Let's Encrypt, ordered at the first start and renewed by the proxy, without restarts.
# The CA validates on port ${ACME_PORT} (tls-alpn-01), which docker-compose.yml publishes: every domain must
# resolve to this host, and port ${ACME_PORT} must be reachable from the internet.
tls:
  acme:
    email: ${JSON.stringify(tls.email)}
    domains: [${tls.domains.map((d) => JSON.stringify(d)).join(', ')}]
    # Account key and certificates; keep the folder, or every restart orders anew.
    storage: ${INIT_PATHS.acme}
    # directory: https://acme-staging-v02.api.letsencrypt.org/directory   # try staging first
  minVersion: TLSv1.2`;
  return `# Portcullis configuration. Paths are relative to this file's folder.
# Every key can also be set from the environment: PORTCULLIS_<KEY_PATH> (e.g. PORTCULLIS_UPSTREAM_URL),
# or PORTCULLIS_<KEY_PATH>_FILE to read the value from a file. Every key, its default and why:
# README.md#configuration. \`portcullis check-config proxy.yaml\` checks a change; SIGHUP applies it.

# The TLS port clients push to and pull from.
listen: "0.0.0.0:${PROXY_PORT}"

${tlsPart}

# The registry: http or https (an https registry with a private CA takes \`ca: FILE\`).
# docker-compose.yml replaces it with PORTCULLIS_UPSTREAM_URL=http://registry:5000.
upstream: { url: "http://127.0.0.1:5000" }

# Users: \`portcullis htpasswd add auth/htpasswd NAME\`; the file is reloaded when it changes.
auth: { htpasswd: auth/htpasswd, realm: "Registry Realm" }

# 0 = no limit on a request body. Layers of CUDA and ML images are many GiB, and a cap refuses every push
# above it (the nginx recipe sets client_max_body_size 0 for the same reason). To cap, give a size
# (units K, M, G, T), e.g. maxBodySize: 20G: a larger upload then ends in a 413 that docker reports as denied.
limits: { maxBodySize: 0 }

# /metrics, /healthz and /readyz, in plain HTTP: keep it on an internal address.
metrics: { listen: "127.0.0.1:9090" }
`;
}

export interface ComposeOptions {
  image: string;
  /** Build the image from the checkout the file sits in (the repository's own copy). */
  build: boolean;
  tls: TlsChoice['kind'];
}

/** docker-compose.yml: the repository's own is `renderCompose({ image: DEFAULT_IMAGE, build: true, tls: 'files' })`. */
export function renderCompose({ image, build, tls }: ComposeOptions): string {
  const acme = tls === 'acme';
  const header = build
    ? `# A registry with Portcullis in front of it. Only the proxy's TLS port reaches the host; the registry
# listens on the compose network alone.
#
# This copy builds the image from the checkout: docker compose up -d --build. \`portcullis init DIR\` writes
# the same file without \`build:\` into a folder of its own, with proxy.yaml, certificates, a user and .env
# (docs/deploy.md); next to this copy, make those by hand (docs/deploy.md, "By hand").`
    : `# A registry with Portcullis in front of it, written by \`portcullis init\`. Only the proxy's TLS port
# reaches the host; the registry listens on the compose network alone. .env beside this file holds
# REGISTRY_HTTP_SECRET and the uid:gid the proxy runs as.
#
#   docker compose up -d          (docker-compose 1.29: docker-compose up -d)`;
  const ports = acme
    ? `      # Let's Encrypt validates tls-alpn-01 on ${ACME_PORT}, and clients use it with no port. With challenge: http-01
      # and httpListen: ":5080" in proxy.yaml, publish 80 as well.
      - "${ACME_PORT}:${PROXY_PORT}"
      # - "80:5080"`
    : `      - "${PROXY_PORT}:${PROXY_PORT}"
      # Let's Encrypt (tls.acme in proxy.yaml, docs/deploy.md) instead of the line above: the CA validates
      # tls-alpn-01 on 443; with challenge: http-01 and httpListen: ":5080", publish 80 as well.
      # - "443:${PROXY_PORT}"
      # - "80:5080"`;
  const tlsMount = acme
    ? `      # tls.acme.storage: account key and certificates, kept when the container is re-created.
      - ./${INIT_PATHS.acme}:/etc/portcullis/${INIT_PATHS.acme}`
    : `      - ./certs:/etc/portcullis/certs:ro
      # Let's Encrypt instead of ./certs: account key and certificates, kept when the container is re-created.
      # - acme:/var/lib/portcullis/acme`;
  return `${header}
services:
  registry:
    image: registry:2
    restart: unless-stopped
    environment:
      REGISTRY_HTTP_ADDR: 0.0.0.0:5000
      # Signs upload state between requests; every registry replica must share it.
      REGISTRY_HTTP_SECRET: \${REGISTRY_HTTP_SECRET:?set REGISTRY_HTTP_SECRET}
      REGISTRY_STORAGE_DELETE_ENABLED: "true"
    volumes:
      - registry-data:/var/lib/registry
    # No \`ports:\` on purpose: nothing but the proxy can reach the registry, which has no authentication.
    expose:
      - "5000"

  portcullis:
${build ? '    build: .\n' : ''}    image: ${image}
    restart: unless-stopped
    depends_on:
      - registry
    # Keys and htpasswd are 0600: run as their owner (PORTCULLIS_UID and PORTCULLIS_GID, in .env).
    user: "\${PORTCULLIS_UID:-1000}:\${PORTCULLIS_GID:-1000}"
    ports:
${ports}
    environment:
      PORTCULLIS_UPSTREAM_URL: http://registry:5000
      # Metrics, /healthz and /readyz for the image's HEALTHCHECK; not published.
      PORTCULLIS_METRICS_LISTEN: 0.0.0.0:9090
    volumes:
      - ./proxy.yaml:/etc/portcullis/proxy.yaml:ro
${tlsMount}
      - ./auth:/etc/portcullis/auth:ro
    read_only: true
    tmpfs:
      - /tmp
    cap_drop:
      - ALL
    security_opt:
      - no-new-privileges:true
    # Longer than shutdown.gracePeriod (30s), so in-flight pushes finish before a forced kill.
    stop_grace_period: 40s

volumes:
  registry-data:
${acme ? '' : '  # acme:                      # Let\'s Encrypt: tls.acme.storage\n'}`;
}

/** .env, which docker compose reads from the folder of the compose file. */
export function renderEnv({ secret, uid, gid }: Pick<InitInput, 'secret' | 'uid' | 'gid'>): string {
  return `# Written by \`portcullis init\`; docker compose reads it from this folder. Keep it private (mode 0600).
# Signs the registry's upload state between requests: keep it stable, and the same on every replica.
REGISTRY_HTTP_SECRET=${secret}
# The proxy runs as the owner of the files init wrote: it must read the 0600 keys and htpasswd.
PORTCULLIS_UID=${uid}
PORTCULLIS_GID=${gid}
`;
}
