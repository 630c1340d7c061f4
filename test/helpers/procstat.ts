/**
 * What the proxy's processes hold, read from /proc (Linux): the process tree under a pid (the primary and its
 * workers with `workers: N`), resident memory now and at its peak, open descriptors, and TCP connections to a
 * port (the upstream pool). Nothing here needs a tool or a privilege beyond reading /proc of our own children.
 */
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** `pid` and every live descendant (cluster workers are children of the primary). */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of safeReaddir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = safeRead(`/proc/${name}/stat`);
    if (stat === null) continue;
    // Field 4 (ppid) comes after the command in parentheses, which may itself contain spaces and parentheses.
    const after = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(after[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(name));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const walk = (p: number): void => {
    if (!existsSync(`/proc/${p}`)) return;
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(pid);
  return out;
}

export interface ProcessMemory {
  /** VmRSS in bytes (0 when the process is gone). */
  rss: number;
  /** VmHWM in bytes: the highest RSS since the process started. */
  hwm: number;
}

export function memoryOf(pid: number): ProcessMemory {
  const text = safeRead(`/proc/${pid}/status`);
  if (text === null) return { rss: 0, hwm: 0 };
  const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  return { rss: kib('VmRSS'), hwm: kib('VmHWM') };
}

/** Open file descriptors of `pid` (0 when it is gone). */
export function descriptorsOf(pid: number): number {
  return safeReaddir(`/proc/${pid}/fd`).length;
}

/**
 * ESTABLISHED TCP connections owned by any of `pids` whose remote port is `port`, from the kernel's tables
 * (/proc/net/tcp{,6} joined with the socket inodes in /proc/PID/fd).
 */
export function establishedTo(pids: readonly number[], port: number): number {
  const inodes = new Set<string>();
  for (const pid of pids) {
    for (const fd of safeReaddir(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) inodes.add(m[1]!);
      } catch {
        /* closed while we looked */
      }
    }
  }
  let count = 0;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = safeRead(table);
    if (text === null) continue;
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const remotePort = parseInt(f[2]!.split(':')[1]!, 16);
      if (f[3] === '01' && remotePort === port && inodes.has(f[9]!)) count++;
    }
  }
  return count;
}

/** One look at a process tree: summed over its processes. */
export interface TreeSample {
  /** Milliseconds since the sampler started. */
  t: number;
  processes: number;
  rss: number;
  fds: number;
  /** Connections to the upstream port, when one was given. */
  upstream: number;
}

export function sampleTree(pid: number, upstreamPort: number | null, t = 0): TreeSample {
  const pids = processTree(pid);
  let rss = 0;
  let fds = 0;
  for (const p of pids) {
    rss += memoryOf(p).rss;
    fds += descriptorsOf(p);
  }
  return { t, processes: pids.length, rss, fds, upstream: upstreamPort === null ? 0 : establishedTo(pids, upstreamPort) };
}

export interface TreePeaks {
  samples: number;
  /** Highest summed RSS seen by the sampler. */
  peakRss: number;
  /** Highest VmHWM of any one process of the tree (the kernel's own peak, between samples too). */
  maxHwm: number;
  /** Sum of the processes' VmHWM: an upper bound of the tree's peak (the processes need not peak together). */
  sumHwm: number;
  peakFds: number;
  peakUpstream: number;
  processes: number;
}

/** Samples a process tree every `intervalMs` until stopped; `stop()` returns the peaks. */
export function treeSampler(pid: number, upstreamPort: number | null, intervalMs = 250): { stop(): TreePeaks } {
  const started = performance.now();
  const peaks: TreePeaks = { samples: 0, peakRss: 0, maxHwm: 0, sumHwm: 0, peakFds: 0, peakUpstream: 0, processes: 0 };
  const take = (): void => {
    const s = sampleTree(pid, upstreamPort, performance.now() - started);
    peaks.samples++;
    peaks.peakRss = Math.max(peaks.peakRss, s.rss);
    peaks.peakFds = Math.max(peaks.peakFds, s.fds);
    peaks.peakUpstream = Math.max(peaks.peakUpstream, s.upstream);
    peaks.processes = Math.max(peaks.processes, s.processes);
  };
  take();
  const timer = setInterval(take, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      take();
      const pids = processTree(pid);
      const hwms = pids.map((p) => memoryOf(p).hwm);
      peaks.maxHwm = Math.max(0, ...hwms);
      peaks.sumHwm = hwms.reduce((a, b) => a + b, 0);
      return { ...peaks };
    },
  };
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function safeRead(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}
