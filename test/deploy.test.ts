/**
 * Deployment files: docker-compose.yml through the real `docker-compose config`, the Kubernetes manifests
 * parsed as YAML (and their proxy.yaml through the real config parser), the Dockerfile and .dockerignore as
 * text. No container engine is needed.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join, posix, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { configKeyPaths, envName, parseConfig } from '../src/config/load.js';
import { gcFlagsFor } from '../src/runtime/node-flags.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const read = (p: string): string => readFileSync(join(repo, p), 'utf8');

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
function obj(v: unknown, what: string): Obj {
  assert.ok(isObj(v), `${what} must be a mapping, got ${JSON.stringify(v)}`);
  return v;
}
function arr(v: unknown, what: string): unknown[] {
  assert.ok(Array.isArray(v), `${what} must be a list, got ${JSON.stringify(v)}`);
  return v;
}
const str = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v));

// ---------------------------------------------------------------------------------------------------------
// docker-compose.yml

interface Exec {
  code: number;
  stdout: string;
  stderr: string;
}

function exec(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<Exec> {
  return new Promise((done) => {
    execFile(cmd, args, { cwd: repo, env, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 127) : 0;
      done({ code, stdout, stderr });
    });
  });
}

describe('docker-compose.yml', () => {
  let emptyEnvDir: string;
  let emptyEnvFile: string;
  /** Only what compose needs: no REGISTRY_HTTP_SECRET or PORTCULLIS_* leaking in from the caller. */
  const baseEnv: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp' };
  const SECRET = 'test-secret-3f9a';

  before(async () => {
    emptyEnvDir = await mkdtemp(join(tmpdir(), 'portcullis-compose-'));
    emptyEnvFile = join(emptyEnvDir, 'empty.env');
    await writeFile(emptyEnvFile, '');
  });
  after(async () => {
    await rm(emptyEnvDir, { recursive: true, force: true });
  });

  /** `docker-compose config`, ignoring any .env in the checkout (--env-file points at an empty file). */
  const composeConfig = (env: NodeJS.ProcessEnv): Promise<Exec> =>
    exec('docker-compose', ['-f', 'docker-compose.yml', '--env-file', emptyEnvFile, 'config'], { ...baseEnv, ...env });

  let services: Obj;
  let topVolumes: Obj;
  before(async () => {
    const r = await composeConfig({ REGISTRY_HTTP_SECRET: SECRET });
    assert.equal(r.code, 0, `docker-compose config failed (is the docker-compose package installed?):\n${r.stderr}`);
    const doc = obj(parseYaml(r.stdout), 'compose config');
    services = obj(doc.services, 'services');
    topVolumes = obj(doc.volumes ?? {}, 'volumes');
  });

  it('fails without REGISTRY_HTTP_SECRET, naming it', async () => {
    const r = await composeConfig({});
    assert.notEqual(r.code, 0, 'compose must refuse to run without the shared secret');
    assert.match(r.stderr, /REGISTRY_HTTP_SECRET/);
    const empty = await composeConfig({ REGISTRY_HTTP_SECRET: '' });
    assert.notEqual(empty.code, 0, 'an empty secret is refused too');
  });

  it('has exactly the registry and portcullis services', () => {
    assert.deepEqual(Object.keys(services).sort(), ['portcullis', 'registry']);
  });

  it('registry: registry:2, not published, shared secret, delete enabled, named volume', () => {
    const reg = obj(services.registry, 'registry');
    assert.equal(reg.image, 'registry:2');
    assert.ok(reg.ports === undefined || arr(reg.ports, 'ports').length === 0, `registry must not publish ports: ${str(reg.ports)}`);
    assert.equal(reg.network_mode, undefined, 'no host networking');
    assert.deepEqual(arr(reg.expose, 'expose').map(String), ['5000']);
    const env = obj(reg.environment, 'registry environment');
    assert.equal(env.REGISTRY_HTTP_SECRET, SECRET);
    assert.equal(env.REGISTRY_STORAGE_DELETE_ENABLED, 'true');
    assert.equal(env.REGISTRY_HTTP_ADDR, '0.0.0.0:5000');
    const data = arr(reg.volumes, 'registry volumes').map(mount).find((m) => m.target === '/var/lib/registry');
    assert.ok(data, 'a volume at /var/lib/registry');
    assert.ok(data.source in topVolumes, `/var/lib/registry is on a named volume, got ${data.source}`);
  });

  it('portcullis: publishes only 5043, metrics stay inside', () => {
    const p = obj(services.portcullis, 'portcullis');
    const ports = arr(p.ports, 'portcullis ports').map(port);
    assert.deepEqual(ports, [{ published: 5043, target: 5043 }]);
    assert.equal(p.network_mode, undefined, 'no host networking');
    const env = obj(p.environment, 'portcullis environment');
    assert.equal(env.PORTCULLIS_UPSTREAM_URL, 'http://registry:5000');
    const metrics = String(env.PORTCULLIS_METRICS_LISTEN);
    assert.match(metrics, /^0\.0\.0\.0:9090$/);
  });

  it('portcullis: config, certs and auth mounted read-only where the image looks for them', () => {
    const p = obj(services.portcullis, 'portcullis');
    const mounts = arr(p.volumes, 'portcullis volumes').map(mount);
    const byTarget = new Map(mounts.map((m) => [m.target, m]));
    for (const [target, source] of [
      ['/etc/portcullis/proxy.yaml', 'proxy.yaml'],
      ['/etc/portcullis/certs', 'certs'],
      ['/etc/portcullis/auth', 'auth'],
    ] as const) {
      const m = byTarget.get(target);
      assert.ok(m, `mount at ${target}`);
      assert.equal(m.readOnly, true, `${target} must be read-only`);
      assert.equal(m.source, join(repo, source));
    }
    assert.equal(mounts.length, 3, 'nothing else mounted');
    assert.equal(p.read_only, true, 'read-only root filesystem');
  });

  it('portcullis: builds the Dockerfile, waits for the registry, restarts, runs as a non-root user', async () => {
    const p = obj(services.portcullis, 'portcullis');
    const build = p.build;
    const context = typeof build === 'string' ? build : obj(build, 'build').context;
    assert.equal(context, repo);
    const deps = Array.isArray(p.depends_on) ? p.depends_on : Object.keys(obj(p.depends_on, 'depends_on'));
    assert.deepEqual(deps, ['registry']);
    assert.equal(p.restart, 'unless-stopped');
    assert.equal(p.user, '1000:1000');
    const custom = await composeConfig({ REGISTRY_HTTP_SECRET: SECRET, PORTCULLIS_UID: '1234', PORTCULLIS_GID: '999' });
    const customUser = obj(obj(obj(parseYaml(custom.stdout), 'config').services, 'services').portcullis, 'portcullis').user;
    assert.equal(customUser, '1234:999');
  });

  it("its commented Let's Encrypt variant is valid: 443 published, storage on a named volume, no certs mount", async () => {
    // What the comments tell an operator to do: swap the port and the certs mount, declare the volume.
    const text = read('docker-compose.yml')
      .split('\n')
      .filter((l) => !/^\s+- "5043:5043"$/.test(l) && !/- \.\/certs:/.test(l))
      .map((l) => l.replace(/^(\s*)# (- "443:5043"|- acme:\S+|acme:)(?:\s.*)?$/, '$1$2'))
      .join('\n');
    const file = join(emptyEnvDir, 'docker-compose.acme.yml');
    await writeFile(file, text);
    const r = await exec('docker-compose', ['-f', file, '--project-directory', repo, '--env-file', emptyEnvFile, 'config'], { ...baseEnv, REGISTRY_HTTP_SECRET: SECRET });
    assert.equal(r.code, 0, r.stderr);
    const doc = obj(parseYaml(r.stdout), 'compose config');
    const p = obj(obj(doc.services, 'services').portcullis, 'portcullis');
    assert.deepEqual(arr(p.ports, 'ports').map(port), [{ published: 443, target: 5043 }]);
    const mounts = arr(p.volumes, 'volumes').map(mount);
    const acme = mounts.find((m) => m.target === '/var/lib/portcullis/acme');
    assert.ok(acme && acme.source in obj(doc.volumes, 'volumes') && !acme.readOnly, `storage on a writable named volume: ${JSON.stringify(mounts)}`);
    assert.ok(!mounts.some((m) => m.target === '/etc/portcullis/certs'));
    // The recipe's proxy.yaml in docs/deploy.md keeps its storage on that volume.
    const recipe = /### Let's Encrypt \(ACME\)[\s\S]+?```yaml\n([\s\S]+?)```/.exec(read('docs/deploy.md'));
    assert.ok(recipe, "docs/deploy.md has the Let's Encrypt proxy.yaml");
    const cfg = parseConfig(recipe[1]!.replace(/^ {3}/gm, ''), '/etc/portcullis/proxy.yaml', {});
    assert.equal(cfg.tls?.acme?.storage, acme.target);
    assert.equal(cfg.listen.port, 5043);
  });

  it('every PORTCULLIS_* variable it sets is a real config key', () => {
    const known = new Set(configKeyPaths().map(envName));
    const env = obj(obj(services.portcullis, 'portcullis').environment, 'environment');
    const ours = Object.keys(env).filter((k) => k.startsWith('PORTCULLIS_'));
    assert.ok(ours.length >= 2);
    for (const k of ours) assert.ok(known.has(k), `${k} is not a config key`);
  });
});

/** Compose prints mounts as "src:dst:ro" (1.29) or as objects (v2); normalize both. */
function mount(v: unknown): { source: string; target: string; readOnly: boolean } {
  if (typeof v === 'string') {
    const parts = v.split(':');
    const mode = parts.length >= 3 ? parts[parts.length - 1]! : 'rw';
    return { source: parts[0]!, target: parts[1]!, readOnly: mode.split(',').includes('ro') };
  }
  const o = obj(v, 'mount');
  return { source: String(o.source), target: String(o.target), readOnly: o.read_only === true };
}

/** Compose prints ports as "5043:5043/tcp" or {published, target}; normalize both. */
function port(v: unknown): { published: number; target: number } {
  if (typeof v === 'string' || typeof v === 'number') {
    const m = /^(?:(?:[\d.]+|\[[^\]]+\]):)?(\d+):(\d+)(?:\/tcp)?$/.exec(String(v));
    assert.ok(m, `port "${String(v)}" publishes to the host explicitly`);
    return { published: Number(m[1]), target: Number(m[2]) };
  }
  const o = obj(v, 'port');
  return { published: Number(o.published), target: Number(o.target) };
}

// ---------------------------------------------------------------------------------------------------------
// Kubernetes

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [k: string]: unknown;
}

function loadManifests(file: string): K8sObject[] {
  const docs = parseAllDocuments(read(file));
  const out: K8sObject[] = [];
  for (const d of docs) {
    assert.deepEqual(d.errors, [], `${file}: YAML errors`);
    const js: unknown = d.toJS();
    if (js === null) continue;
    const o = obj(js, file);
    assert.equal(typeof o.apiVersion, 'string', `${file}: apiVersion`);
    assert.equal(typeof o.kind, 'string', `${file}: kind`);
    assert.equal(typeof obj(o.metadata, `${file} metadata`).name, 'string', `${file}: metadata.name`);
    out.push(o as K8sObject);
  }
  return out;
}

describe('deploy/kubernetes', () => {
  const files = ['namespace.yaml', 'registry.yaml', 'portcullis.yaml', 'secrets.example.yaml'];
  const all = files.flatMap((f) => loadManifests(`deploy/kubernetes/${f}`).map((o) => ({ file: f, o })));
  const find = (kind: string, name: string): K8sObject => {
    const hit = all.find(({ o }) => o.kind === kind && o.metadata.name === name);
    assert.ok(hit, `${kind}/${name} is defined`);
    return hit.o;
  };
  const podSpec = (d: K8sObject): Obj => obj(obj(obj(d.spec, 'spec').template, 'template').spec, 'pod spec');
  const container = (d: K8sObject): Obj => obj(arr(podSpec(d).containers, 'containers')[0], 'container');
  /** A probe's port, resolving a named port to its number. */
  const probePort = (c: Obj, probe: string): number => {
    const p = obj(obj(c[probe], probe).httpGet, `${probe}.httpGet`).port;
    if (typeof p === 'number') return p;
    const named = arr(c.ports, 'ports').map((x) => obj(x, 'port')).find((x) => x.name === p);
    assert.ok(named, `${probe} port "${str(p)}" names a container port`);
    return Number(named.containerPort);
  };
  const mountFor = (d: K8sObject, pathInside: string): { mountPath: string; volume: Obj } => {
    const c = container(d);
    const m = arr(c.volumeMounts, 'volumeMounts')
      .map((x) => obj(x, 'volumeMount'))
      .find((x) => pathInside === x.mountPath || pathInside.startsWith(`${String(x.mountPath)}/`));
    assert.ok(m, `a volume is mounted at ${pathInside}`);
    const volume = arr(podSpec(d).volumes, 'volumes')
      .map((x) => obj(x, 'volume'))
      .find((v) => v.name === m.name);
    assert.ok(volume, `volume ${str(m.name)} exists`);
    return { mountPath: String(m.mountPath), volume };
  };

  it('every namespaced object is in the portcullis namespace', () => {
    find('Namespace', 'portcullis');
    for (const { file, o } of all) {
      if (o.kind === 'Namespace') continue;
      assert.equal(o.metadata.namespace, 'portcullis', `${file}: ${o.kind}/${o.metadata.name}`);
    }
  });

  it('proxy: 2+ replicas, probes on /readyz and /healthz at the metrics port', () => {
    const d = find('Deployment', 'portcullis');
    assert.ok(Number(obj(d.spec, 'spec').replicas) >= 2, 'at least 2 replicas');
    const c = container(d);
    assert.equal(obj(obj(c.readinessProbe, 'readinessProbe').httpGet, 'httpGet').path, '/readyz');
    assert.equal(obj(obj(c.livenessProbe, 'livenessProbe').httpGet, 'httpGet').path, '/healthz');
    assert.equal(probePort(c, 'readinessProbe'), 9090);
    assert.equal(probePort(c, 'livenessProbe'), 9090);
  });

  it('proxy: non-root, read-only root filesystem, no privilege escalation, resources set', () => {
    const d = find('Deployment', 'portcullis');
    const pod = obj(podSpec(d).securityContext, 'pod securityContext');
    assert.equal(pod.runAsNonRoot, true);
    assert.ok(Number(pod.runAsUser) > 0, 'numeric non-root uid');
    const c = container(d);
    const sc = obj(c.securityContext, 'container securityContext');
    assert.equal(sc.readOnlyRootFilesystem, true);
    assert.equal(sc.allowPrivilegeEscalation, false);
    assert.deepEqual(obj(sc.capabilities, 'capabilities').drop, ['ALL']);
    const res = obj(c.resources, 'resources');
    assert.ok(obj(res.requests, 'requests').cpu && obj(res.requests, 'requests').memory, 'cpu and memory requests');
    assert.ok(obj(res.limits, 'limits').memory, 'memory limit');
    const grace = Number(podSpec(d).terminationGracePeriodSeconds);
    assert.ok(grace > 30, `terminationGracePeriodSeconds ${grace} exceeds shutdown.gracePeriod (30s)`);
  });

  it('proxy: its proxy.yaml is valid and points at the mounted secrets, the metrics port and the registry Service', () => {
    const d = find('Deployment', 'portcullis');
    const cm = find('ConfigMap', 'portcullis-config');
    const text = String(obj(cm.data, 'data')['proxy.yaml']);
    const args = arr(container(d).args, 'args').map(String);
    const configPath = args[args.indexOf('--config') + 1]!;
    assert.equal(args[0], 'serve');
    const cfg = parseConfig(text, configPath, {});

    const cfgMount = mountFor(d, configPath);
    assert.equal(obj(cfgMount.volume.configMap, 'configMap volume').name, 'portcullis-config');
    assert.equal(basename(configPath), 'proxy.yaml');

    assert.ok(cfg.tls, 'TLS on');
    const tlsMount = mountFor(d, cfg.tls.cert);
    assert.equal(mountFor(d, cfg.tls.key).mountPath, tlsMount.mountPath);
    const tlsSecretName = String(obj(tlsMount.volume.secret, 'tls secret volume').secretName);
    const tlsSecret = find('Secret', tlsSecretName);
    assert.equal(tlsSecret.type, 'kubernetes.io/tls');
    assert.deepEqual([posix.basename(cfg.tls.cert), posix.basename(cfg.tls.key)], ['tls.crt', 'tls.key']);

    const authMount = mountFor(d, cfg.auth.htpasswd);
    const authSecret = find('Secret', String(obj(authMount.volume.secret, 'htpasswd secret volume').secretName));
    assert.ok(posix.basename(cfg.auth.htpasswd) in obj(authSecret.stringData ?? authSecret.data, 'htpasswd secret data'));

    // Without defaultMode Kubernetes mounts secret files 0644: the key and the hashes world-readable.
    // Read-only for the owner, and for the group only (fsGroup lets the non-root user in): 0400 or 0440.
    for (const m of [tlsMount, authMount]) {
      const secret = obj(m.volume.secret, 'secret');
      const name = str(secret.secretName);
      assert.equal(typeof secret.defaultMode, 'number', `${name}: defaultMode must be set (got ${str(secret.defaultMode)})`);
      const mode = Number(secret.defaultMode);
      assert.ok(mode === 0o400 || mode === 0o440, `${name}: defaultMode 0${mode.toString(8)} must be 0400 or 0440`);
      for (const item of arr(secret.items ?? [], `${name} items`).map((x) => obj(x, 'item'))) {
        assert.equal(item.mode, undefined, `${name}: ${str(item.key)} overrides defaultMode`);
      }
    }

    assert.ok(cfg.metrics, 'metrics listener on');
    assert.equal(cfg.metrics.port, 9090);
    assert.equal(cfg.metrics.host, '0.0.0.0', 'probes come from the kubelet, not loopback');
    const https = arr(container(d).ports, 'ports').map((x) => obj(x, 'port')).find((x) => x.name === 'https');
    assert.equal(Number(https?.containerPort), cfg.listen.port);

    const regSvc = find('Service', 'registry');
    const regPort = obj(arr(obj(regSvc.spec, 'spec').ports, 'ports')[0], 'port');
    assert.equal(cfg.upstream.url.hostname, 'registry');
    assert.equal(Number(cfg.upstream.url.port), Number(regPort.port));
  });

  it('proxy Service: only 5043, selects the proxy pods', () => {
    const svc = find('Service', 'portcullis');
    const spec = obj(svc.spec, 'spec');
    const ports = arr(spec.ports, 'ports').map((x) => obj(x, 'port'));
    assert.deepEqual(ports.map((x) => Number(x.port)), [5043]);
    assert.equal(ports[0]!.targetPort, 'https');
    const labels = obj(obj(obj(find('Deployment', 'portcullis').spec, 'spec').template, 'template').metadata, 'metadata').labels;
    for (const [k, v] of Object.entries(obj(spec.selector, 'selector'))) assert.equal(obj(labels, 'labels')[k], v);
    find('PodDisruptionBudget', 'portcullis');
  });

  it('registry: 1 replica on a PVC, shared secret from a Secret, not exposed outside the cluster', () => {
    const d = find('Deployment', 'registry');
    const spec = obj(d.spec, 'spec');
    assert.equal(spec.replicas, 1);
    assert.equal(obj(spec.strategy, 'strategy').type, 'Recreate', 'a RWO volume cannot be shared during a rollout');
    const c = container(d);
    assert.match(String(c.image), /^registry:2(\.|$)/);
    const env = arr(c.env, 'env').map((x) => obj(x, 'env var'));
    const secretEnv = env.find((e) => e.name === 'REGISTRY_HTTP_SECRET');
    assert.ok(secretEnv, 'REGISTRY_HTTP_SECRET is set');
    assert.equal(secretEnv.value, undefined, 'not inline');
    const ref = obj(obj(secretEnv.valueFrom, 'valueFrom').secretKeyRef, 'secretKeyRef');
    assert.ok(String(ref.key) in obj(find('Secret', String(ref.name)).stringData, 'stringData'));
    assert.equal(env.find((e) => e.name === 'REGISTRY_STORAGE_DELETE_ENABLED')?.value, 'true');
    const data = mountFor(d, '/var/lib/registry');
    const claim = obj(data.volume.persistentVolumeClaim, 'pvc volume').claimName;
    find('PersistentVolumeClaim', String(claim));
    assert.equal(obj(podSpec(d).securityContext, 'securityContext').runAsNonRoot, true);

    const svc = obj(find('Service', 'registry').spec, 'spec');
    assert.ok(svc.type === undefined || svc.type === 'ClusterIP', `registry Service type ${str(svc.type)}`);
  });

  it('registry: a NetworkPolicy admits only the proxy pods', () => {
    const np = obj(find('NetworkPolicy', 'registry-from-portcullis-only').spec, 'spec');
    const regLabels = obj(obj(obj(find('Deployment', 'registry').spec, 'spec').template, 'template').metadata, 'metadata').labels;
    for (const [k, v] of Object.entries(obj(obj(np.podSelector, 'podSelector').matchLabels, 'matchLabels'))) {
      assert.equal(obj(regLabels, 'labels')[k], v);
    }
    const rules = arr(np.ingress, 'ingress');
    assert.equal(rules.length, 1);
    const from = arr(obj(rules[0], 'rule').from, 'from').map((x) => obj(x, 'peer'));
    assert.equal(from.length, 1);
    assert.deepEqual(obj(from[0]!.podSelector, 'podSelector').matchLabels, { 'app.kubernetes.io/name': 'portcullis' });
  });
});

// ---------------------------------------------------------------------------------------------------------
// Dockerfile and .dockerignore

interface Instruction {
  op: string;
  args: string;
}

function parseDockerfile(text: string): Instruction[] {
  const joined = text.replace(/\\\r?\n/g, ' ');
  const out: Instruction[] = [];
  for (const raw of joined.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([A-Za-z]+)\s+(.*)$/.exec(line);
    assert.ok(m, `Dockerfile line: ${line}`);
    out.push({ op: m[1]!.toUpperCase(), args: m[2]!.trim() });
  }
  return out;
}

describe('Dockerfile', () => {
  const ins = parseDockerfile(read('Dockerfile'));
  const froms = ins.map((x, i) => ({ ...x, i })).filter((x) => x.op === 'FROM');
  const finalStage = ins.slice(froms.at(-1)!.i);
  const buildStage = ins.slice(froms[0]!.i, froms.at(-1)!.i);
  const args = new Map(
    ins.filter((x) => x.op === 'ARG').map((x) => {
      const [k, v = ''] = x.args.split('=');
      return [k!, v];
    }),
  );
  const expand = (s: string): string => s.replace(/\$\{?(\w+)\}?/g, (_, k: string) => args.get(k) ?? '');
  const json = (x: Instruction | undefined): unknown => (x ? JSON.parse(x.args) : undefined);

  it('is multi-stage on a current Node LTS image', () => {
    assert.ok(froms.length >= 2, 'at least a build and a runtime stage');
    const buildFrom = /^(\S+)\s+AS\s+(\S+)$/i.exec(froms[0]!.args);
    assert.ok(buildFrom, 'first stage is named');
    for (const f of froms) {
      const image = expand(f.args.split(/\s+/)[0]!);
      const m = /^node:(\d+)-/.exec(image);
      assert.ok(m, `${image} is an official node image`);
      assert.ok(Number(m[1]) >= 24, `${image}: Node 24 LTS or newer`);
    }
    const runs = buildStage.filter((x) => x.op === 'RUN').map((x) => x.args).join(' && ');
    assert.match(runs, /npm ci\b/);
    assert.match(runs, /npm run build\b/);
    assert.match(runs, /npm prune --omit=dev\b/);
    const copiesFromBuild = finalStage.filter((x) => x.op === 'COPY' && x.args.includes(`--from=${buildFrom[2]}`));
    for (const what of ['/app/dist', '/app/node_modules', '/app/package.json']) {
      assert.ok(copiesFromBuild.some((x) => x.args.split(/\s+/).includes(what)), `runtime copies ${what} from the build stage`);
    }
    assert.equal(finalStage.filter((x) => x.op === 'RUN' && /npm (ci|install)/.test(x.args)).length, 0, 'no installs at runtime');
  });

  it('runs as a non-root user', () => {
    const users = finalStage.filter((x) => x.op === 'USER');
    assert.ok(users.length > 0, 'USER in the final stage');
    const last = users.at(-1)!.args.split(':')[0]!;
    assert.ok(!['root', '0'].includes(last), `USER ${last}`);
    assert.ok(last === 'node' || last === '1000', `USER ${last} is the image's node user`);
    const userAt = finalStage.lastIndexOf(users.at(-1)!);
    assert.ok(finalStage.findIndex((x) => x.op === 'ENTRYPOINT') > userAt, 'USER comes before ENTRYPOINT');
  });

  it('exposes 5043 and runs the CLI with the mounted config', () => {
    assert.ok(finalStage.some((x) => x.op === 'EXPOSE' && x.args.split(/\s+/).includes('5043')));
    const major = Number(/^node:(\d+)-/.exec(expand(froms.at(-1)!.args.split(/\s+/)[0]!))?.[1]);
    // The GC flags of the image's Node major on the command line (src/runtime/node-flags.ts).
    assert.deepEqual(json(finalStage.find((x) => x.op === 'ENTRYPOINT')), ['node', ...gcFlagsFor(major), '/app/dist/cli/main.js']);
    assert.deepEqual(json(finalStage.find((x) => x.op === 'CMD')), ['serve', '--config', '/etc/portcullis/proxy.yaml']);
    const pkg = JSON.parse(read('package.json')) as { bin: Record<string, string> };
    const workdir = finalStage.find((x) => x.op === 'WORKDIR')?.args;
    assert.equal(posix.join(workdir ?? '/', pkg.bin.portcullis!), '/app/dist/cli/main.js', 'ENTRYPOINT is the package bin');
  });

  describe('HEALTHCHECK', () => {
    const hc = finalStage.find((x) => x.op === 'HEALTHCHECK');
    let server: Server;
    let status = 200;
    let port = 0;
    before(async () => {
      server = createServer((req, res) => {
        res.statusCode = req.url === '/healthz' ? status : 404;
        res.end();
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      port = (server.address() as AddressInfo).port;
    });
    after(async () => {
      await new Promise<void>((r) => server.close(() => r()));
    });

    const command = (): string[] => {
      assert.ok(hc, 'HEALTHCHECK present');
      const m = /CMD\s+(\[.*\])\s*$/.exec(hc.args);
      assert.ok(m, 'exec-form CMD (no shell in the check)');
      return JSON.parse(m[1]!) as string[];
    };

    it('asks /healthz on the metrics port the image configures, using node', () => {
      const cmd = command();
      assert.equal(cmd[0], 'node', 'no curl in slim images');
      assert.match(cmd.join(' '), /http:\/\/127\.0\.0\.1:9090\/healthz/);
      const env = finalStage.filter((x) => x.op === 'ENV').map((x) => x.args).join(' ');
      assert.match(env, /PORTCULLIS_METRICS_LISTEN=0\.0\.0\.0:9090\b/, 'the image turns the metrics listener on at 9090');
      assert.match(hc!.args, /--timeout=\d+s/);
    });

    const runCheck = (target: number): Promise<number> => {
      const [bin, ...rest] = command();
      const args = rest.map((a) => a.replace('127.0.0.1:9090', `127.0.0.1:${target}`));
      return new Promise((done) => {
        execFile(bin === 'node' ? process.execPath : bin!, args, { timeout: 10_000 }, (err) =>
          done(err ? (typeof err.code === 'number' ? err.code : -1) : 0),
        );
      });
    };

    it('exits 0 when /healthz answers 200, 1 on an error status or no listener', async () => {
      status = 200;
      assert.equal(await runCheck(port), 0);
      status = 503;
      assert.equal(await runCheck(port), 1);
      const closed = createServer();
      await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
      const deadPort = (closed.address() as AddressInfo).port;
      await new Promise<void>((r) => closed.close(() => r()));
      assert.equal(await runCheck(deadPort), 1);
    });
  });

  it('.dockerignore lets in only what the build copies (no certs, auth, proxy.yaml, .env)', () => {
    const rules = read('.dockerignore')
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    assert.equal(rules[0], '*', 'allow-list: ignore everything first');
    const allowed = rules.filter((r) => r.startsWith('!')).map((r) => r.slice(1).replace(/\/$/, ''));
    const copied = buildStage
      .filter((x) => x.op === 'COPY' && !x.args.includes('--from='))
      .flatMap((x) => x.args.split(/\s+/).filter((a) => !a.startsWith('--')).slice(0, -1));
    assert.deepEqual([...new Set(copied)].sort(), [...allowed].sort(), 'allowed exactly what COPY uses');
    for (const secret of ['certs', 'auth', 'proxy.yaml', '.env', 'node_modules', 'dist']) {
      assert.ok(!allowed.some((a) => a === secret || a.startsWith(`${secret}/`)), `${secret} stays out of the build context`);
    }
  });
});

describe('docs/deploy.md', () => {
  const doc = read('docs/deploy.md');

  it('has the pull-secret line and imagePullSecrets usage', () => {
    assert.match(doc, /kubectl -n \S+ create secret docker-registry regcred \\\n\s+--docker-server=[\w.-]+:5043 --docker-username=\S+ --docker-password=/);
    assert.match(doc, /imagePullSecrets:\n\s+- name: regcred/);
    assert.match(doc, /\/etc\/containerd\/certs\.d\/[\w.-]+:5043\/hosts\.toml/);
  });

  it('its minimal proxy.yaml is a valid config', () => {
    const m = /A minimal file:\s*\n\s*```yaml\n([\s\S]+?)```/.exec(doc);
    assert.ok(m, 'minimal proxy.yaml block');
    const text = m[1]!.replace(/^ {2}/gm, '');
    const cfg = parseConfig(text, '/etc/portcullis/proxy.yaml', {});
    assert.equal(cfg.tls?.cert, '/etc/portcullis/certs/server.crt');
    assert.equal(cfg.auth.htpasswd, '/etc/portcullis/auth/htpasswd');
    assert.equal(cfg.metrics?.port, 9090);
  });

  it('its Compose section starts with portcullis init, from a checkout and from the image', () => {
    const compose = doc.slice(doc.indexOf('## Docker Compose'));
    const first = /```sh\n([\s\S]+?)```/.exec(compose);
    assert.ok(first, 'a shell block in the Compose section');
    assert.match(first[1]!, /^portcullis init \S+ --host \S+/m);
    assert.match(first[1]!, /docker compose up -d/);
    assert.match(compose, /docker run --rm -u "\$\(id -u\):\$\(id -g\)" -v "\$PWD:\/work" portcullis:local init \/work --host /);
  });

  it('names every file in deploy/kubernetes', () => {
    for (const f of ['namespace.yaml', 'registry.yaml', 'portcullis.yaml', 'secrets.example.yaml']) {
      assert.ok(doc.includes(f), f);
    }
  });
});
