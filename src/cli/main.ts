#!/usr/bin/env node
/**
 * The `portcullis` command: dispatches to one module per subcommand, loaded on demand (serve need not
 * load the X.509 library, nor certs the proxy).
 */
import { readFileSync } from 'node:fs';
import type { CommandIO } from './io.js';

const USAGE = `Usage: portcullis <command>

  init [DIR] --host NAME... [--ip ADDR]... [--user NAME] [--acme EMAIL]
                                          write a ready registry into DIR: proxy.yaml, docker-compose.yml,
                                          .env, certs/, auth/htpasswd (one user, password printed once)
  serve --config FILE                     run the proxy (default config: ./proxy.yaml)
  check-config [FILE]                     validate a config and print the effective settings
  htpasswd add|remove|list|verify FILE [USER] [--cost N] [--password-stdin]
                                          manage bcrypt htpasswd files (Apache and registry:2 compatible)
  certs init [--dir certs] [--host NAME]... [--ip ADDR]... [--port N]
                                          make a dev CA and a server certificate
  version                                 print the version
`;

async function main(argv: string[]): Promise<number> {
  const io: CommandIO = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, isTTY: Boolean(process.stdin.isTTY) };
  const [command, ...rest] = argv;
  switch (command) {
    case 'init':
      return (await import('./commands/init.js')).initCommand(rest, io);
    case 'serve':
      return (await import('./commands/serve.js')).serveCommand(rest, io);
    case 'check-config':
      return (await import('./commands/check-config.js')).checkConfigCommand(rest, io);
    case 'htpasswd':
      return (await import('./commands/htpasswd.js')).htpasswdCommand(rest, io);
    case 'certs':
      return (await import('./commands/certs.js')).certsCommand(rest, io);
    case 'version':
    case '--version': {
      const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
      io.stdout.write(`portcullis ${pkg.version}\n`);
      return 0;
    }
    case 'help':
    case '--help':
    case '-h':
      io.stdout.write(USAGE);
      return 0;
    default:
      io.stderr.write(command ? `portcullis: unknown command "${command}"\n\n${USAGE}` : USAGE);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // serve resolves only after shutdown; other commands end here. Exit explicitly so a stray handle
    // (a file watcher, a worker thread) cannot keep a finished command alive.
    process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(`portcullis: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
