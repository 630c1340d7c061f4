/** Small statistics for the load and soak runs: percentiles, a least-squares line, Markdown tables. */

/** The p-th percentile (0..100) of `values`, nearest-rank; NaN when there are none. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export interface Line {
  /** Change of y per unit of x. */
  slope: number;
  intercept: number;
  /** Points fitted. */
  n: number;
  /** Standard error of the slope (NaN with fewer than 3 points). */
  slopeError: number;
}

/** Ordinary least squares y = slope * x + intercept. Throws with fewer than 2 points or a single x. */
export function leastSquares(points: ReadonlyArray<readonly [number, number]>): Line {
  const n = points.length;
  if (n < 2) throw new RangeError(`a line needs at least 2 points, got ${n}`);
  let sx = 0;
  let sy = 0;
  for (const [x, y] of points) {
    sx += x;
    sy += y;
  }
  const mx = sx / n;
  const my = sy / n;
  let sxx = 0;
  let sxy = 0;
  for (const [x, y] of points) {
    sxx += (x - mx) * (x - mx);
    sxy += (x - mx) * (y - my);
  }
  if (sxx === 0) throw new RangeError('a line needs at least two distinct x values');
  const slope = sxy / sxx;
  const intercept = my - slope * mx;
  let sse = 0;
  for (const [x, y] of points) sse += (y - (slope * x + intercept)) ** 2;
  const slopeError = n > 2 ? Math.sqrt(sse / (n - 2) / sxx) : Number.NaN;
  return { slope, intercept, n, slopeError };
}

/** A Markdown table; numbers are printed as given (format them first). */
export function markdownTable(header: readonly string[], rows: ReadonlyArray<readonly (string | number)[]>): string {
  const line = (cells: readonly (string | number)[]): string => `| ${cells.map(String).join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

export function fixed(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '-';
}

export const MiB = 1024 * 1024;
