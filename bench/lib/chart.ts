/**
 * One SVG chart of the run's ratios: a bar per comparison, on a log scale centred on 1 (as good as the other),
 * with the goal marked. Every bar reads "above 1 (right of the line): Portcullis is better": for rates it is
 * ours ÷ theirs, for costs (CPU, memory) theirs ÷ ours. Plain SVG, no library, so it renders on GitHub.
 */

export interface ChartBar {
  label: string;
  /** Above 1: Portcullis is better. */
  value: number | null;
  /** The goal on the same scale (bar green when reached), or null for none. */
  goal: number | null;
}

const WIDTH = 860;
const LABEL_W = 330;
const ROW_H = 26;
const TOP = 44;
/** The scale's ends: 1/8 .. 8 (a bar beyond shows its value at the end). */
const MIN = 1 / 8;
const MAX = 8;

function x(v: number): number {
  const clamped = Math.min(MAX, Math.max(MIN, v));
  const t = (Math.log2(clamped) - Math.log2(MIN)) / (Math.log2(MAX) - Math.log2(MIN));
  return LABEL_W + t * (WIDTH - LABEL_W - 70);
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export function ratioChart(title: string, bars: readonly ChartBar[]): string {
  const height = TOP + bars.length * ROW_H + 40;
  const one = x(1);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${height}" fill="#fff"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`,
    `<text x="10" y="36" fill="#555">Right of the line: Portcullis better (rates: ours ÷ theirs; CPU and memory: theirs ÷ ours). Log scale. ◆ goal.</text>`,
  ];
  for (const tick of [0.125, 0.25, 0.5, 1, 2, 4, 8]) {
    const tx = x(tick);
    parts.push(`<line x1="${tx}" y1="${TOP - 4}" x2="${tx}" y2="${TOP + bars.length * ROW_H}" stroke="${tick === 1 ? '#333' : '#ddd'}" stroke-width="${tick === 1 ? 1.5 : 1}"/>`);
    parts.push(`<text x="${tx}" y="${TOP + bars.length * ROW_H + 16}" text-anchor="middle" fill="#555">${tick < 1 ? `1/${1 / tick}` : tick}×</text>`);
  }
  bars.forEach((b, i) => {
    const y = TOP + i * ROW_H;
    parts.push(`<text x="${LABEL_W - 8}" y="${y + 16}" text-anchor="end">${esc(b.label)}</text>`);
    if (b.value === null || !Number.isFinite(b.value)) {
      parts.push(`<text x="${one + 6}" y="${y + 16}" fill="#999">no result</text>`);
      return;
    }
    const met = b.goal === null || b.value >= b.goal;
    const bx = x(b.value);
    const [from, to] = bx >= one ? [one, bx] : [bx, one];
    parts.push(`<rect x="${from}" y="${y + 5}" width="${Math.max(1, to - from)}" height="${ROW_H - 10}" fill="${met ? '#3a8f4b' : '#c4513a'}"/>`);
    const shown = b.value >= 10 ? b.value.toFixed(0) : b.value.toFixed(2);
    parts.push(`<text x="${Math.max(bx, one) + 6}" y="${y + 16}">${shown}×${b.value > MAX ? ' (off scale)' : ''}</text>`);
    if (b.goal !== null) {
      const gx = x(b.goal);
      parts.push(`<path d="M ${gx} ${y + 3} l 5 10 l -5 10 l -5 -10 z" fill="#222"/>`);
    }
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
