/**
 * Reference point for the blob benchmarks, not a product: the least a Node TLS proxy can do (an https
 * server piping each request to http.request on a keep-alive agent, and the answer back). No auth, no
 * header rules, no limits, and plain Node: no GC flags. It measures Node's own HTTP client and server on
 * this machine; Portcullis's general path (http-proxy) is built on the same, its raw path is not.
 *
 * GC counts (full mark-compacts, scavenges) are served on PORT + 1 at /__gc, for the result tables.
 *
 * Usage: node --import tsx bench/node-pipe.ts PORT UPSTREAM_PORT CERT KEY
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { PerformanceObserver, constants } from 'node:perf_hooks';

const [portArg, upstreamArg, certFile, keyFile] = process.argv.slice(2);
if (portArg === undefined || upstreamArg === undefined || certFile === undefined || keyFile === undefined) {
  process.stderr.write('usage: node-pipe.ts PORT UPSTREAM_PORT CERT KEY\n');
  process.exit(2);
}
const upstreamPort = Number(upstreamArg);
const agent = new http.Agent({ keepAlive: true, maxSockets: 128 });

const server = https.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile), ALPNProtocols: ['http/1.1'] }, (req, res) => {
  const headers = { ...req.headers, 'x-forwarded-proto': 'https' };
  const up = http.request({ host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers, agent }, (ur) => {
    res.writeHead(ur.statusCode ?? 502, ur.headers);
    ur.pipe(res);
  });
  up.once('error', () => res.destroy());
  res.once('close', () => {
    if (!res.writableFinished) up.destroy();
  });
  req.pipe(up);
});
server.requestTimeout = 0;
server.listen(Number(portArg), '127.0.0.1');

const gc = { major: 0, minor: 0 };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const kind = (e as { detail?: { kind?: number } }).detail?.kind;
    if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) gc.major++;
    else if (kind === constants.NODE_PERFORMANCE_GC_MINOR) gc.minor++;
  }
}).observe({ entryTypes: ['gc'] });
http.createServer((_req, res) => res.end(JSON.stringify(gc))).listen(Number(portArg) + 1, '127.0.0.1');
process.once('SIGTERM', () => process.exit(0));
