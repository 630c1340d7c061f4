/**
 * `portcullis serve --config FILE`: run the proxy in the foreground.
 *
 * One process by default (instance.ts); `workers: N` forks N processes sharing the port (primary.ts).
 * Signals: SIGHUP re-reads proxy.yaml; SIGTERM/SIGINT drain in-flight transfers (up to
 * `shutdown.gracePeriod`) and exit 0. A bad config exits 1 with the reason on stderr.
 */
import cluster from 'node:cluster';
import { loadConfig, type Config } from '../../config/load.js';
import { PortcullisError } from '../../errors.js';
import { runInstance } from '../../runtime/instance.js';
import { createLogger } from '../../ops/log.js';
import { ensureGcFlags } from '../../runtime/node-flags.js';
import { runPrimary } from '../../runtime/primary.js';
import type { CommandIO } from '../io.js';

export async function serveCommand(argv: string[], io: CommandIO): Promise<number> {
  // Before anything allocates: the GC flags this Node major needs, if the command line lacked them.
  const gcFlagsSet = ensureGcFlags();
  // SIGHUP's default action is to exit: a reload signal sent while we start must not kill the proxy.
  process.on('SIGHUP', () => {});
  const file = optionValue(argv, '--config') ?? 'proxy.yaml';
  let config: Config;
  try {
    config = loadConfig(file);
  } catch (err) {
    io.stderr.write(`portcullis: ${(err as Error).message}\n`);
    return 1;
  }
  const logger = createLogger(config.log.level);
  if (gcFlagsSet.length > 0) logger.debug({ gcFlags: gcFlagsSet }, 'GC flags set at run time');
  try {
    if (config.workers > 1 && cluster.isPrimary) return await runPrimary(config, logger);
    return await runInstance(config, logger);
  } catch (err) {
    const message = err instanceof PortcullisError ? err.message : ((err as Error).stack ?? String(err));
    logger.fatal({ err: message }, 'cannot start');
    io.stderr.write(`portcullis: ${message}\n`);
    return 1;
  }
}

export function optionValue(argv: string[], name: string): string | undefined {
  const i = argv.findIndex((a) => a === name || a.startsWith(`${name}=`));
  if (i === -1) return undefined;
  return argv[i]!.includes('=') ? argv[i]!.slice(name.length + 1) : argv[i + 1];
}
