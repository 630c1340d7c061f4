/**
 * What the ACME manager keeps in `tls.acme.storage` (layout.ts): the account key, the served certificate
 * chain and its key, and a small state file. Every file is 0600 and replaced atomically (files.ts: temp
 * file, fsync, rename), so a process following cert.pem/key.pem (a cluster worker, an operator's sidecar)
 * never reads half a file. The folder is 0700.
 *
 * The account key is kept across directories: newAccount with the same key finds the existing account
 * (RFC 8555 section 7.3.1).
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { chmod, mkdir } from 'node:fs/promises';
import { AcmeError, UnusableAcmeStorage } from '../../errors.js';
import { readIfExists, writeFileAtomic } from '../../files.js';
import { storageLayout, type StorageLayout } from './layout.js';

/** A certificate as stored, with the leaf facts the manager decides on. */
export interface StoredCertificate {
  cert: string;
  key: string;
  directory: string;
  domains: string[];
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

export class AcmeStore {
  readonly paths: StorageLayout;

  constructor(dir: string) {
    this.paths = storageLayout(dir);
  }

  /** Create the folder (0700). Throws with the path named when it cannot. */
  async prepare(): Promise<void> {
    try {
      await mkdir(this.paths.dir, { recursive: true, mode: 0o700 });
      await chmod(this.paths.dir, 0o700);
    } catch (err) {
      throw new AcmeError(`${this.paths.dir}: cannot use as tls.acme.storage: ${(err as Error).message}`, { cause: err });
    }
  }

  async readAccountKey(): Promise<string | null> {
    return readIfExists(this.paths.accountKey);
  }

  async writeAccountKey(pem: string): Promise<void> {
    await writeFileAtomic(this.paths.accountKey, pem, 0o600);
  }

  /** The stored certificate, null when there is none; throws UnusableAcmeStorage when it is there but broken. */
  async readCertificate(): Promise<StoredCertificate | null> {
    const [cert, key, stateText] = await Promise.all([
      readIfExists(this.paths.cert),
      readIfExists(this.paths.key),
      readIfExists(this.paths.state),
    ]);
    if (cert === null && key === null) return null;
    if (cert === null || key === null || stateText === null) {
      throw new UnusableAcmeStorage(`${this.paths.dir}: incomplete (cert.pem, key.pem and state.json belong together)`);
    }
    let state: { directory?: unknown; domains?: unknown };
    try {
      state = JSON.parse(stateText) as typeof state;
    } catch (err) {
      throw new UnusableAcmeStorage(`${this.paths.state}: not JSON: ${(err as Error).message}`);
    }
    if (typeof state.directory !== 'string' || !Array.isArray(state.domains) || !state.domains.every((d) => typeof d === 'string')) {
      throw new UnusableAcmeStorage(`${this.paths.state}: missing directory or domains`);
    }
    const leaf = parseLeaf(cert, key, this.paths);
    return { cert, key, directory: state.directory, domains: state.domains as string[], ...leaf };
  }

  /**
   * Store a new certificate. Key first, then chain, then state: a reader that sees the new chain also
   * sees its key, and a crash in between leaves files that fail the key check and are ordered again.
   */
  async writeCertificate(c: { cert: string; key: string; directory: string; domains: readonly string[] }): Promise<StoredCertificate> {
    const leaf = parseLeaf(c.cert, c.key, this.paths);
    await writeFileAtomic(this.paths.key, c.key, 0o600);
    await writeFileAtomic(this.paths.cert, c.cert, 0o600);
    const state = { directory: c.directory, domains: [...c.domains], serial: leaf.serial, notAfter: leaf.notAfter.toISOString() };
    await writeFileAtomic(this.paths.state, JSON.stringify(state, null, 2) + '\n', 0o600);
    return { cert: c.cert, key: c.key, directory: c.directory, domains: [...c.domains], ...leaf };
  }
}

/** Leaf facts, after checking that the key belongs to the leaf. */
export function parseLeaf(cert: string, key: string, paths: StorageLayout): { serial: string; notBefore: Date; notAfter: Date } {
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    throw new UnusableAcmeStorage(`${paths.cert}: not a PEM certificate: ${(err as Error).message}`);
  }
  let matches: boolean;
  try {
    matches = leaf.checkPrivateKey(createPrivateKey(key));
  } catch (err) {
    throw new UnusableAcmeStorage(`${paths.key}: not a PEM private key: ${(err as Error).message}`);
  }
  if (!matches) throw new UnusableAcmeStorage(`${paths.key} does not match the certificate in ${paths.cert}`);
  return { serial: leaf.serialNumber, notBefore: new Date(leaf.validFrom), notAfter: new Date(leaf.validTo) };
}
