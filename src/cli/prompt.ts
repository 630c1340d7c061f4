/**
 * Reading a password from a person or a pipe: without echo from a terminal (twice, to confirm, when asked),
 * else the first line of standard input. Never from the command line, where `ps` and shell history see it.
 */
import { StringDecoder } from 'node:string_decoder';
import { PortcullisError } from '../errors.js';
import type { CommandIO } from './io.js';

/** A password line longer than this is refused (bcrypt reads 72 bytes; this only bounds the buffer). */
const MAX_PASSWORD_LINE = 4096;

function promptError(message: string): PortcullisError {
  return new PortcullisError('PCL_ERR_PROMPT', message);
}

interface RawCapable {
  setRawMode?: (raw: boolean) => unknown;
  isRaw?: boolean;
}

/**
 * The password: prompted for without echo when stdin is a terminal (twice when `confirm`), else the first
 * line of stdin with its line ending removed.
 */
export async function readPassword(io: CommandIO, opts: { confirm: boolean; fromStdin: boolean }): Promise<string> {
  const interactive = io.isTTY && !opts.fromStdin;
  const reader = new LineReader(io.stdin, interactive);
  const tty = io.stdin as NodeJS.ReadableStream & RawCapable;
  const wasRaw = tty.isRaw === true;
  const raw = interactive && typeof tty.setRawMode === 'function';
  try {
    if (!interactive) {
      const line = await reader.line();
      if (line === null) throw promptError('no password on standard input');
      return line;
    }
    if (raw) tty.setRawMode!(true);
    const ask = async (prompt: string): Promise<string> => {
      io.stderr.write(prompt);
      let line: string | null;
      try {
        line = await reader.line();
      } finally {
        io.stderr.write('\n'); // Enter was not echoed
      }
      if (line === null) throw promptError('no password entered');
      return line;
    };
    const first = await ask('Password: ');
    if (opts.confirm && (await ask('Re-type password: ')) !== first) throw promptError('passwords do not match');
    return first;
  } finally {
    if (raw) tty.setRawMode!(wasRaw);
    reader.close();
  }
}

/**
 * Reads lines from a stream without losing what arrives after one. In interactive (raw terminal) mode Enter
 * is `\r`, backspace edits, Ctrl-C aborts and Ctrl-D ends input, as a terminal's own line editor would.
 */
class LineReader {
  private buffer = '';
  private ended = false;
  private wake: (() => void) | null = null;
  private readonly decoder = new StringDecoder('utf8'); // a character may be split across chunks
  private readonly onData = (chunk: string | Buffer): void => {
    this.buffer += typeof chunk === 'string' ? chunk : this.decoder.write(chunk);
    this.notify();
  };
  private readonly onEnd = (): void => {
    this.ended = true;
    this.notify();
  };

  constructor(
    private readonly stream: NodeJS.ReadableStream,
    private readonly interactive: boolean,
  ) {
    stream.on('data', this.onData);
    stream.on('end', this.onEnd);
    stream.on('error', this.onEnd);
    stream.resume();
  }

  async line(): Promise<string | null> {
    for (;;) {
      const got = this.interactive ? this.takeInteractive() : this.takePlain();
      if (got !== undefined) return got;
      if (this.buffer.length > MAX_PASSWORD_LINE) throw promptError('password line too long');
      if (this.ended) {
        const rest = this.buffer;
        this.buffer = '';
        return rest === '' ? null : rest;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  close(): void {
    this.stream.removeListener('data', this.onData);
    this.stream.removeListener('end', this.onEnd);
    this.stream.removeListener('error', this.onEnd);
    this.stream.pause();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** Up to the first `\n`, without it or a `\r` before it. */
  private takePlain(): string | undefined {
    const nl = this.buffer.indexOf('\n');
    if (nl === -1) return undefined;
    const line = this.buffer.slice(0, nl);
    this.buffer = this.buffer.slice(nl + 1);
    return line.endsWith('\r') ? line.slice(0, -1) : line;
  }

  private takeInteractive(): string | null | undefined {
    let line = '';
    for (let i = 0; i < this.buffer.length; i++) {
      const ch = this.buffer[i]!;
      if (ch === '\r' || ch === '\n') {
        const skip = ch === '\r' && this.buffer[i + 1] === '\n' ? 2 : 1;
        this.buffer = this.buffer.slice(i + skip);
        return line;
      }
      if (ch === '\u0003') throw promptError('cancelled');
      if (ch === '\u0004') {
        if (line !== '') continue;
        this.buffer = this.buffer.slice(i + 1);
        return null;
      }
      if (ch === '\u007f' || ch === '\b') {
        line = [...line].slice(0, -1).join('');
        continue;
      }
      line += ch;
    }
    return undefined;
  }
}
