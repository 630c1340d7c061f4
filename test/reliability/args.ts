/** Command-line flags for the load and soak runs: `--name value` or `--name=value`, each declared with a default. */

export type FlagValue = string | number | boolean;

export interface FlagSpec<V extends FlagValue> {
  default: V;
  help: string;
}

export type FlagValues<S extends Record<string, FlagSpec<FlagValue>>> = { [K in keyof S]: S[K]['default'] };

/** Parses argv against `spec`; prints usage and exits 2 on an unknown flag or a bad value, 0 on --help. */
export function parseFlags<S extends Record<string, FlagSpec<FlagValue>>>(argv: readonly string[], spec: S, usage: string): FlagValues<S> {
  const out: Record<string, FlagValue> = {};
  for (const [k, s] of Object.entries(spec)) out[k] = s.default;
  const help = (): string =>
    `${usage}\n\n${Object.entries(spec)
      .map(([k, s]) => `  --${k.padEnd(14)} ${s.help} (default: ${String(s.default)})`)
      .join('\n')}\n`;
  const fail = (message: string): never => {
    process.stderr.write(`${message}\n\n${help()}`);
    process.exit(2);
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') {
      process.stdout.write(help());
      process.exit(0);
    }
    const m = /^--([a-z][a-z-]*)(?:=(.*))?$/.exec(arg);
    if (!m) fail(`unexpected argument "${arg}"`);
    const name = m![1]!;
    const s = spec[name];
    if (s === undefined) fail(`unknown flag --${name}`);
    if (typeof s!.default === 'boolean') {
      out[name] = m![2] === undefined ? true : m![2] === 'true';
      continue;
    }
    const raw = m![2] ?? argv[++i];
    if (raw === undefined) fail(`--${name} needs a value`);
    if (typeof s!.default === 'number') {
      const n = Number(raw);
      if (!Number.isFinite(n) || n < 0) fail(`--${name}: "${raw}" is not a number >= 0`);
      out[name] = n;
    } else out[name] = raw!;
  }
  return out as FlagValues<S>;
}

/** "256K", "1M", "2G" or a number of bytes. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMG]?)i?B?$/i.exec(text.trim());
  if (!m) throw new RangeError(`"${text}" is not a size (e.g. 512K, 1M)`);
  const unit = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
  return Math.round(Number(m[1]) * unit);
}

/** Make Ctrl-C and SIGTERM run the exit hooks (test/helpers/proc.ts stops every child and removes temp dirs). */
export function exitOnSignals(): void {
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));
}
