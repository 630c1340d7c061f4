/**
 * Challenge solvers: turn "prove control of DOMAIN with TOKEN" into an answer the listeners serve.
 */
import { createAlpnCertificate } from './self-signed.js';
import type { AlpnCertificate, HttpChallenges } from './challenges.js';
import type { ChallengeSolver } from './client.js';

/** Where tls-alpn-01 certificates are published: this process's TlsAlpnChallenges, or every worker (relay.ts). */
export interface AlpnPublisher {
  set(domain: string, pem: AlpnCertificate): void | Promise<void>;
  delete(domain: string): void | Promise<void>;
}

export function tlsAlpnSolver(publisher: AlpnPublisher): ChallengeSolver {
  return {
    type: 'tls-alpn-01',
    async present(domain, _token, keyAuthorization) {
      // Published before the CA is told to validate (RFC 8555 section 7.5.1), so it must be in place on
      // every process that can accept the validation connection when this resolves.
      await publisher.set(domain, await createAlpnCertificate(domain, keyAuthorization));
    },
    async remove(domain) {
      await publisher.delete(domain);
    },
  };
}

export function httpSolver(challenges: HttpChallenges): ChallengeSolver {
  return {
    type: 'http-01',
    async present(_domain, token, keyAuthorization) {
      challenges.set(token, keyAuthorization);
    },
    async remove(_domain, token) {
      challenges.delete(token);
    },
  };
}
