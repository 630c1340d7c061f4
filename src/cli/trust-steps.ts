/**
 * The names a server certificate is for, and the steps that make docker, podman, containerd and the system
 * trust a private CA: shared by `certs init` and `init`, so both print the same, tested instructions.
 */
import { normalizeDnsName, normalizeIp } from '../tls/ca.js';

/** Names clients dial, split the way a certificate needs them: an IP literal only matches an IP SAN. */
export interface ServerNames {
  hosts: string[];
  ips: string[];
}

/** `--host` and `--ip` values, normalised and deduplicated. An address given as --host goes to the IPs. */
export function serverNames(givenHosts: readonly string[], givenIps: readonly string[]): ServerNames {
  const hosts: string[] = [];
  const ips: string[] = [];
  for (const h of givenHosts) {
    if (isIpLiteral(h)) ips.push(normalizeIp(h));
    else hosts.push(normalizeDnsName(h));
  }
  for (const ip of givenIps) ips.push(normalizeIp(ip));
  return { hosts: [...new Set(hosts)], ips: [...new Set(ips)] };
}

export function isIpLiteral(s: string): boolean {
  try {
    normalizeIp(s);
    return true;
  } catch {
    return false;
  }
}

/** `host:port` as image references spell it: IPv6 in brackets, no port for 443. */
export function registryHostPort(name: string, port: number): string {
  const host = name.includes(':') ? `[${name}]` : name;
  return port === 443 ? host : `${host}:${port}`;
}

export interface TrustStepsInput {
  /** The CA certificate's path, as the reader should type it. */
  caPath: string;
  names: ServerNames;
  /** The port clients use. */
  port: number;
  /** The user for the closing `docker login` line, if known. */
  user?: string;
}

/** From "Make clients trust the CA" to the `docker login` line, for the first concrete name. */
export function trustSteps({ caPath, names, port, user }: TrustStepsInput): string {
  const all = [...names.hosts, ...names.ips];
  // A wildcard is not a name anyone dials: show the steps for a concrete name under it.
  const concrete = all.filter((n) => !n.startsWith('*.'));
  const primary = concrete[0] ?? (names.hosts[0] ?? '*.registry').replace(/^\*\./, 'registry.');
  const target = registryHostPort(primary, port);
  const ca = shellQuote(caPath);
  const docker = `/etc/docker/certs.d/${target}`;
  const containers = `/etc/containers/certs.d/${target}`;
  const containerd = `/etc/containerd/certs.d/${target}`;
  const hostsToml =
    `server = "https://${target}"\\n\\n[host."https://${target}"]\\n` +
    `  capabilities = ["pull", "resolve"]\\n  ca = "${containerd}/ca.crt"\\n`;
  const others = concrete.filter((n) => n !== primary).map((n) => registryHostPort(n, port));
  return `Make clients trust the CA (copy ca.crt only, never ca.key):

  docker, on each client machine (read at every connection, no restart):
    sudo mkdir -p ${docker} && sudo cp ${ca} ${docker}/ca.crt

  podman, skopeo, buildah, CRI-O:
    sudo mkdir -p ${containers} && sudo cp ${ca} ${containers}/ca.crt

  the whole system (curl, git, most programs; Debian/Ubuntu):
    sudo cp ${ca} /usr/local/share/ca-certificates/portcullis.crt && sudo update-ca-certificates
    (RHEL/Fedora: sudo cp ${ca} /etc/pki/ca-trust/source/anchors/portcullis.crt && sudo update-ca-trust)
    the docker daemon and containerd read the system store at start: restart them after this step.

  Kubernetes nodes (containerd; its CRI registry config_path must include /etc/containerd/certs.d):
    sudo mkdir -p ${containerd} && sudo cp ${ca} ${containerd}/ca.crt
    printf '${hostsToml}' | sudo tee ${containerd}/hosts.toml
    or add the CA to each node's system trust (above) and restart containerd.
${others.length > 0 ? `\nRepeat the certs.d steps for each other name clients use: ${others.join(', ')}\n` : ''}
Then log in:  docker login ${target}${user !== undefined ? ` -u ${shellQuote(user)}` : ''}
`;
}

/** Quote a word for a copy-pasted shell command when it needs it. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
