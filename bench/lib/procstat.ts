/**
 * What a target costs, from /proc, summed over its processes (nginx: master + worker):
 * - memory: VmRSS (now) and VmHWM (the peak since start, or since it was reset by writing "5" to
 *   /proc/PID/clear_refs);
 * - CPU: user + system time of all threads (bcrypt worker threads included).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

export interface Mem {
  /** KiB, summed over the processes. */
  rssKiB: number;
  hwmKiB: number;
}

function status(pid: number): Mem | null {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = /^VmRSS:\s+(\d+) kB/m.exec(text);
    const hwm = /^VmHWM:\s+(\d+) kB/m.exec(text);
    if (!rss || !hwm) return null;
    return { rssKiB: Number(rss[1]), hwmKiB: Number(hwm[1]) };
  } catch {
    return null;
  }
}

export function memoryOf(pids: readonly number[]): Mem {
  let rssKiB = 0;
  let hwmKiB = 0;
  for (const p of pids) {
    const s = status(p);
    if (s) {
      rssKiB += s.rssKiB;
      hwmKiB += s.hwmKiB;
    }
  }
  return { rssKiB, hwmKiB };
}

/** Reset VmHWM to the current RSS; false when the kernel does not allow it (then only sampling counts). */
export function resetPeak(pids: readonly number[]): boolean {
  let ok = pids.length > 0;
  for (const p of pids) {
    try {
      writeFileSync(`/proc/${p}/clear_refs`, '5');
    } catch {
      ok = false;
    }
  }
  return ok;
}

export interface RssSamples {
  /** Highest sample over the whole time. */
  peakKiB: number;
  /** Highest sample in the first and in the second half of the time: equal when memory does not grow with the bytes moved. */
  firstHalfPeakKiB: number;
  secondHalfPeakKiB: number;
}

/** Sample the summed RSS every intervalMs until stopped. */
export function sampleRss(pids: () => readonly number[], intervalMs = 100): { stop(): RssSamples } {
  const samples: Array<[number, number]> = [];
  const take = (): void => {
    samples.push([performance.now(), memoryOf(pids()).rssKiB]);
  };
  take();
  const timer = setInterval(take, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      take();
      const start = samples[0]![0];
      const mid = start + (samples[samples.length - 1]![0] - start) / 2;
      const peak = (list: Array<[number, number]>): number => list.reduce((m, [, v]) => Math.max(m, v), 0);
      return {
        peakKiB: peak(samples),
        firstHalfPeakKiB: peak(samples.filter(([t]) => t <= mid)),
        secondHalfPeakKiB: peak(samples.filter(([t]) => t > mid)),
      };
    },
  };
}

let ticksPerSecond: number | null = null;

/** CPU seconds (user + system, all threads) used so far by the processes. */
export function cpuSeconds(pids: readonly number[]): number {
  if (ticksPerSecond === null) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  let ticks = 0;
  for (const p of pids) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // After the name: state(0) ... utime(11) stime(12).
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      /* exited */
    }
  }
  return ticks / ticksPerSecond;
}

export function mib(kib: number): number {
  return Math.round((kib / 1024) * 10) / 10;
}
