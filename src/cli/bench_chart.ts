// The SVG bar chart of `marble bench --chart`: time per image (one sampling
// run), one group of bars per batch size, one bar per backend. Hand-written
// SVG: a handful of rects and labels, no dependency.
import type { BenchmarkReport } from '../core/bench/benchmark.js';

const COLORS = ['#3b6fd4', '#e0823d', '#4aa564', '#b5508f', '#7a6bd1'];

function escape(text: string): string {
  return text.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);
}

export function benchChartSvg(report: BenchmarkReport): string {
  const backends = [...new Set(report.rows.map((r) => r.backend))];
  const batches = [...new Set(report.rows.map((r) => r.batch))];
  const maxMs = Math.max(...report.rows.map((r) => r.msPerImage), 1e-9);
  const [left, top, plotHeight, barWidth, gap, groupGap] = [60, 66, 220, 28, 6, 40];
  const groupWidth = backends.length * (barWidth + gap);
  const plotRight = left + batches.length * (groupWidth + groupGap);
  const legendX = plotRight + 10;
  const width = legendX + 210;
  const height = top + plotHeight + 40;
  const name = report.model.name.split(/[\\/]/).filter(Boolean).slice(-2).join('/');
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${left}" y="20" font-size="14" font-weight="bold">${escape(`marble bench: ${name}, ${report.scheduler} ${report.steps} steps`)}</text>`,
    `<text x="${left}" y="38" fill="#555">${escape('milliseconds per image (lower is better)')}</text>`,
    `<line x1="${left}" y1="${top + plotHeight}" x2="${plotRight}" y2="${top + plotHeight}" stroke="#333"/>`,
  ];
  batches.forEach((batch, g) => {
    const x0 = left + g * (groupWidth + groupGap);
    backends.forEach((backend, i) => {
      const row = report.rows.find((r) => r.backend === backend && r.batch === batch);
      if (!row) return;
      const h = (row.msPerImage / maxMs) * plotHeight;
      const x = x0 + i * (barWidth + gap);
      parts.push(`<rect x="${x}" y="${(top + plotHeight - h).toFixed(1)}" width="${barWidth}" height="${h.toFixed(1)}" fill="${COLORS[i % COLORS.length]}"/>`);
      parts.push(`<text x="${x + barWidth / 2}" y="${(top + plotHeight - h - 4).toFixed(1)}" text-anchor="middle" font-size="10">${row.msPerImage.toFixed(row.msPerImage >= 100 ? 0 : 1)}</text>`);
    });
    parts.push(`<text x="${x0 + groupWidth / 2}" y="${top + plotHeight + 18}" text-anchor="middle">batch ${batch}</text>`);
  });
  backends.forEach((backend, i) => {
    const row = report.rows.find((r) => r.backend === backend)!;
    const y = top + i * 20;
    parts.push(`<rect x="${legendX}" y="${y}" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/>`);
    parts.push(`<text x="${legendX + 18}" y="${y + 10}">${escape(`${backend} (${row.identity.isa}, ${row.identity.threads}t)`)}</text>`);
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
