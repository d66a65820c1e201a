// A stacked bar chart drawn by hand in SVG: one bar per day, one segment per endpoint. No
// library; colours come from the stylesheet (classes ep-<endpoint>), so no inline style.

import { svg } from './dom.js';

const W = 720;
const H = 280;
const M = { top: 16, right: 16, bottom: 44, left: 56 };

/** The smallest "round" number (1, 2 or 5 times a power of ten) at least v / ticks. */
function niceStep(v, ticks) {
  const raw = Math.max(v, 1) / ticks;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) {
    if (m * p >= raw) return Math.max(1, m * p);
  }
  return 10 * p;
}

export function endpointClass(endpoint) {
  return /^[a-z-]+$/.test(endpoint) ? `ep-${endpoint}` : 'ep-other';
}

/**
 * days: [{day: 'YYYY-MM-DD', byEndpoint: Map(endpoint → credits), total}], endpoints: the
 * stacking order. Returns an <svg> element.
 */
export function stackedBars(days, endpoints, title) {
  const max = Math.max(0, ...days.map((d) => d.total));
  const step = niceStep(max, 5);
  const top = Math.max(step, Math.ceil(max / step) * step);
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const y = (v) => M.top + plotH - (v / top) * plotH;
  const slot = plotW / Math.max(days.length, 1);
  const barW = Math.min(56, slot * 0.6);

  const root = svg('svg', {
    viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', id: 'usage-chart',
    'aria-labelledby': 'usage-chart-title', preserveAspectRatio: 'xMidYMid meet',
  }, svg('title', { id: 'usage-chart-title', text: title }));

  const grid = svg('g', { class: 'grid' });
  for (let v = 0; v <= top; v += step) {
    grid.append(
      svg('line', { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }),
      svg('text', { x: M.left - 8, y: y(v) + 4, 'text-anchor': 'end', text: String(v) }));
  }
  grid.append(svg('text', {
    x: 14, y: M.top + plotH / 2, 'text-anchor': 'middle',
    transform: `rotate(-90 14 ${M.top + plotH / 2})`, text: 'credits',
  }));
  root.append(grid);

  const bars = svg('g', { class: 'bars' });
  days.forEach((d, i) => {
    const x = M.left + slot * i + (slot - barW) / 2;
    let acc = 0;
    for (const ep of endpoints) {
      const v = d.byEndpoint.get(ep) || 0;
      if (!v) continue;
      const rect = svg('rect', {
        x, width: barW, y: y(acc + v), height: Math.max(1, y(acc) - y(acc + v)),
        class: `seg ${endpointClass(ep)}`, 'data-day': d.day, 'data-endpoint': ep,
      }, svg('title', { text: `${d.day}, ${ep}: ${v} credits` }));
      bars.append(rect);
      acc += v;
    }
    bars.append(
      svg('text', { x: x + barW / 2, y: H - M.bottom + 18, 'text-anchor': 'middle', class: 'day',
        text: d.day.slice(5) }),
      svg('text', { x: x + barW / 2, y: y(d.total) - 5, 'text-anchor': 'middle', class: 'total',
        text: d.total ? String(d.total) : '' }));
  });
  root.append(bars);
  root.append(svg('line', { class: 'axis', x1: M.left, x2: W - M.right, y1: y(0), y2: y(0) }));
  root.append(svg('text', { x: M.left + plotW / 2, y: H - 8, 'text-anchor': 'middle',
    class: 'axis-label', text: 'day (UTC)' }));
  return root;
}
