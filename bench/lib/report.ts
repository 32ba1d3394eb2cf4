// Records, targets, and the three outputs: the terminal table, latest.md and throughput.svg.

export interface BenchRecord {
  scenario: string;
  system: string;
  /** Body bytes per message. */
  messageBytes: number;
  /** What else distinguishes this record (offered rate, recipients, phase). */
  variant?: string;
  /** Messages received per second (for fan-out: deliveries, i.e. messages × recipients). */
  msgsPerSec: number | null;
  /** Body bytes received per second, 1 MB = 10^6 bytes. */
  MBps: number | null;
  latencyUs: { p50: number; p99: number; p999: number; max: number; mean: number; count: number } | null;
  /** CPU of the server process under test (relay, pipe or nats-server), % of one core, over the measured window. */
  relayCpuPct: number | null;
  /** Peak RSS (VmHWM) of the server process, MiB. */
  relayPeakRssMiB: number | null;
  /** CPU of the load generator (this process, all threads), % of one core, over the measured window. */
  loadgenCpuPct: number | null;
  durationSec: number | null;
  /** Messages counted in the measured window. */
  messages: number | null;
  /** Refused by the system (RESULT refusals) or sent and never received. */
  dropped?: number;
  extra?: Record<string, number | string | null>;
  skipped?: string;
  note?: string;
}

export interface TargetResult {
  target: string;
  met: boolean | null;
  observed: string;
}

const fmtInt = (n: number | null | undefined): string => (n == null || !Number.isFinite(n) ? '-' : Math.round(n).toLocaleString('en-US'));
const fmt1 = (n: number | null | undefined): string => (n == null || !Number.isFinite(n) ? '-' : n.toFixed(1));

export function sizeLabel(bytes: number): string {
  if (bytes >= 1024 * 1024 && bytes % (1024 * 1024) === 0) return `${bytes / (1024 * 1024)} MiB`;
  if (bytes >= 1024 && bytes % 1024 === 0) return `${bytes / 1024} KiB`;
  return `${bytes} B`;
}

function latencyCell(r: BenchRecord): string {
  const l = r.latencyUs;
  return l ? `${fmtInt(l.p50)} / ${fmtInt(l.p99)} / ${fmtInt(l.p999)}` : '-';
}

const HEADER = ['scenario', 'system', 'size', 'variant', 'msgs/s', 'MB/s', 'p50/p99/p99.9 µs', 'server CPU %', 'server peak RSS MiB', 'loadgen CPU %', 'notes'];

function row(r: BenchRecord): string[] {
  if (r.skipped) return [r.scenario, r.system, r.messageBytes ? sizeLabel(r.messageBytes) : '-', r.variant ?? '', '-', '-', '-', '-', '-', '-', `skipped: ${r.skipped}`];
  const notes: string[] = [];
  if (r.dropped) notes.push(`dropped ${fmtInt(r.dropped)}`);
  if (r.note) notes.push(r.note);
  return [
    r.scenario, r.system, r.messageBytes ? sizeLabel(r.messageBytes) : '-', r.variant ?? '',
    fmtInt(r.msgsPerSec), fmt1(r.MBps), latencyCell(r), fmt1(r.relayCpuPct), fmt1(r.relayPeakRssMiB), fmt1(r.loadgenCpuPct), notes.join('; '),
  ];
}

export function textTable(records: BenchRecord[]): string {
  const rows = records.map(row);
  const widths = HEADER.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i >= 4 && i <= 9 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(HEADER), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function markdownTable(records: BenchRecord[]): string {
  const rows = records.map(row);
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  return [
    `| ${HEADER.join(' | ')} |`,
    `|${HEADER.map((_, i) => (i >= 4 && i <= 9 ? '---:' : '---')).join('|')}|`,
    ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`),
  ].join('\n');
}

function find(records: BenchRecord[], scenario: string, system: string, bytes?: number, variant?: string): BenchRecord | undefined {
  return records.find((r) => r.scenario === scenario && r.system === system && !r.skipped
    && (bytes === undefined || r.messageBytes === bytes) && (variant === undefined || r.variant === variant));
}

export function evaluateTargets(records: BenchRecord[]): TargetResult[] {
  const out: TargetResult[] = [];
  const ratio = (a: number | null | undefined, b: number | null | undefined) => (a != null && b != null && b > 0 ? a / b : null);
  for (const bytes of [64, 1024]) {
    const p = find(records, 'one-to-one', 'pulltab', bytes);
    const n = find(records, 'one-to-one', 'nats', bytes);
    const r = ratio(p?.msgsPerSec, n?.msgsPerSec);
    out.push({
      target: `1:1 ${sizeLabel(bytes)}: pulltab msgs/s ≥ 2× nats-server`,
      met: r === null ? null : r >= 2,
      observed: r === null ? 'not measured' : `${fmtInt(p!.msgsPerSec)} vs ${fmtInt(n!.msgsPerSec)} msgs/s = ${r.toFixed(2)}×`,
    });
  }
  {
    const p = find(records, 'one-to-one', 'pulltab', 16384);
    const b = find(records, 'one-to-one', 'pipe', 16384);
    const r = ratio(p?.MBps, b?.MBps);
    out.push({
      target: '1:1 16 KiB: pulltab MB/s ≥ 70% of the bare pipe',
      met: r === null ? null : r >= 0.7,
      observed: r === null ? 'not measured' : `${fmt1(p!.MBps)} vs ${fmt1(b!.MBps)} MB/s = ${(r * 100).toFixed(0)}%`,
    });
  }
  {
    const p = find(records, 'pairs-100', 'pulltab', 1024);
    const o = find(records, 'one-to-one', 'pulltab', 1024);
    const r = ratio(p?.msgsPerSec, o?.msgsPerSec);
    out.push({
      target: '100 pairs 1 KiB: aggregate within 20% of 1:1',
      met: r === null ? null : r >= 0.8,
      observed: r === null ? 'not measured' : `${fmtInt(p!.msgsPerSec)} vs ${fmtInt(o!.msgsPerSec)} msgs/s = ${(r * 100).toFixed(0)}%`,
    });
  }
  {
    const l = find(records, 'latency', 'pulltab', 1024, 'offered 20,000/s');
    const p99 = l?.latencyUs?.p99;
    out.push({
      target: 'p99 ≤ 1 ms at 20k msgs/s of 1 KiB',
      met: p99 == null ? null : p99 <= 1000,
      observed: p99 == null ? 'not measured' : `p99 ${fmtInt(p99)} µs`,
    });
  }
  {
    const h = find(records, 'handshakes', 'pulltab');
    out.push({
      target: '≥ 2,000 handshakes/s',
      met: h?.msgsPerSec == null ? null : h.msgsPerSec >= 2000,
      observed: h?.msgsPerSec == null ? 'not measured' : `${fmtInt(h.msgsPerSec)} handshakes/s`,
    });
  }
  {
    const i = find(records, 'idle-connections', 'pulltab');
    const per = i?.extra?.['rssPerConnectionKiB'];
    out.push({
      target: '≤ 20 KiB RSS per idle connection at 10,000',
      met: typeof per !== 'number' ? null : per <= 20 && Number(i?.extra?.['connections']) >= 10_000,
      observed: typeof per !== 'number' ? 'not measured' : `${per.toFixed(1)} KiB per connection at ${fmtInt(Number(i!.extra!['connections']))}`,
    });
  }
  // Issue 14: what users drive, RelayClient against the NATS client (library scenario, 1:1, raw).
  for (const [bytes, want] of [[64, 2], [1024, 2], [16384, 1.2]] as const) {
    const p = find(records, 'library', 'pulltab', bytes, 'raw');
    const n = find(records, 'library', 'nats', bytes, 'raw');
    const r = ratio(p?.msgsPerSec, n?.msgsPerSec);
    out.push({
      target: `library 1:1 ${sizeLabel(bytes)}: RelayClient ≥ ${want}× the NATS client`,
      met: r === null ? null : r >= want,
      observed: r === null ? 'not measured' : `${fmtInt(p!.msgsPerSec)} vs ${fmtInt(n!.msgsPerSec)} msgs/s = ${r.toFixed(2)}×`,
    });
  }
  // Issue 3: store-and-forward through the relay, one offline recipient, 1 KiB.
  for (const [variant, target, what] of [
    ['store to offline (STORE|RECEIPT, end to end)', 'store ≥ 100,000 msgs/s of 1 KiB to an offline recipient, receipts after commit and flush', 'stored'],
    ['drain on connect (DELIVER + ACK, end to end)', 'drain ≥ 100,000 msgs/s of 1 KiB to a connecting recipient, with ACKs', 'drained'],
  ] as const) {
    const r = find(records, 'store', 'pulltab', 1024, variant);
    out.push({
      target,
      met: r?.msgsPerSec == null ? null : r.msgsPerSec >= 100_000,
      observed: r?.msgsPerSec == null ? 'not measured' : `${fmtInt(r.msgsPerSec)} ${what} msgs/s`,
    });
  }
  // TLS beside plain TCP, measured in the same run (scenario tls).
  for (const [bytes, floor] of [[1024, 0.6], [16384, 0.75]] as const) {
    const tls = find(records, 'tls', 'pulltab', bytes, '1:1, TLS');
    const plain = find(records, 'tls', 'pulltab', bytes, '1:1, plain TCP');
    const r = ratio(tls?.msgsPerSec, plain?.msgsPerSec);
    out.push({
      target: `TLS 1:1 ${sizeLabel(bytes)}: msgs/s ≥ ${floor * 100}% of plain TCP`,
      met: r === null ? null : r >= floor,
      observed: r === null ? 'not measured' : `${fmtInt(tls!.msgsPerSec)} vs ${fmtInt(plain!.msgsPerSec)} msgs/s = ${(r * 100).toFixed(0)}%`,
    });
  }
  {
    const tls = find(records, 'tls', 'pulltab', 0, 'handshakes, 200 concurrent, TLS');
    const plain = find(records, 'tls', 'pulltab', 0, 'handshakes, 200 concurrent, plain TCP');
    const r = ratio(tls?.msgsPerSec, plain?.msgsPerSec);
    out.push({
      target: 'TLS handshakes/s ≥ 50% of plain TCP',
      met: r === null ? null : r >= 0.5,
      observed: r === null ? 'not measured' : `${fmtInt(tls!.msgsPerSec)} vs ${fmtInt(plain!.msgsPerSec)} handshakes/s = ${(r * 100).toFixed(0)}%`,
    });
  }
  // Issue 18: what a message crossing between workers costs, measured in the same run (scenario workers).
  for (const bytes of [64, 1024] as const) {
    const cross = find(records, 'workers', 'pulltab', bytes, '1:1, 2 workers, across workers');
    const same = find(records, 'workers', 'pulltab', bytes, '1:1, 2 workers, same worker');
    const cpu = (r: BenchRecord | undefined) => (r?.extra?.['relayCpuUsPerMsg'] as number | null | undefined) ?? null;
    const c = ratio(cpu(cross), cpu(same));
    out.push({
      target: `workers 1:1 ${sizeLabel(bytes)}: relay CPU per crossing message ≤ 1.6× a same-worker one`,
      met: c === null ? null : c <= 1.6,
      observed: c === null ? 'not measured' : `${cpu(cross)} vs ${cpu(same)} µs/msg = ${c.toFixed(2)}×`,
    });
    const r = ratio(cross?.msgsPerSec, same?.msgsPerSec);
    out.push({
      target: `workers 1:1 ${sizeLabel(bytes)}: crossing throughput ≥ 60% of same-worker`,
      met: r === null ? null : r >= 0.6,
      observed: r === null ? 'not measured' : `${fmtInt(cross!.msgsPerSec)} vs ${fmtInt(same!.msgsPerSec)} msgs/s = ${(r * 100).toFixed(0)}%`,
    });
  }
  // Issue 19: one relay on two instances routed over NATS, measured in the same run (scenario cluster).
  out.push(...clusterTargets(records));
  // The PostgreSQL engine against the database's own limits, measured in the same run (scenario postgres).
  for (const [variant, baseline, what] of [
    ['store to offline on PostgreSQL (STORE|RECEIPT, end to end)', 'baseline: bare INSERT ... SELECT FROM unnest, 500 rows per transaction', 'stores with receipts after commit'],
    ['drain on connect on PostgreSQL (DELIVER + ACK, end to end)', 'baseline: bare paged SELECT + range DELETE, 500 rows per page', 'drains with ACKs'],
  ] as const) {
    const engine = find(records, 'postgres', 'pulltab', 1024, variant);
    const bare = find(records, 'postgres', 'postgres', 1024, baseline);
    const r = ratio(engine?.msgsPerSec, bare?.msgsPerSec);
    out.push({
      target: `PostgreSQL 1 KiB: the engine ${what} at ≥ 70% of the ${baseline.replace('baseline: ', '')}`,
      met: r === null ? null : r >= 0.7,
      observed: r === null ? 'not measured' : `${fmtInt(engine!.msgsPerSec)} vs ${fmtInt(bare!.msgsPerSec)} rows/s = ${(r * 100).toFixed(0)}%`,
    });
  }
  return out;
}

/** Cross-instance 1:1 against nats-server's own 1:1 and against the single instance, in one run. */
function clusterTargets(records: BenchRecord[]): TargetResult[] {
  const out: TargetResult[] = [];
  const ratio = (a: number | null | undefined, b: number | null | undefined) => (a != null && b != null && b > 0 ? a / b : null);
  const at = (bytes: number, variant: string) => find(records, 'cluster', variant.includes('nats') ? 'nats' : 'pulltab', bytes, variant);
  {
    const cross = at(1024, '1:1, across instances');
    const nats = at(1024, '1:1, nats-server pub/sub');
    const single = at(1024, '1:1, single instance');
    const r = ratio(cross?.msgsPerSec, nats?.msgsPerSec);
    out.push({
      target: "cluster 1:1 1 KiB: across instances msgs/s ≥ nats-server's own 1:1",
      met: r === null ? null : r >= 1,
      observed: r === null ? 'not measured' : `${fmtInt(cross!.msgsPerSec)} vs ${fmtInt(nats!.msgsPerSec)} msgs/s = ${r.toFixed(2)}×`,
    });
    const s = ratio(cross?.msgsPerSec, single?.msgsPerSec);
    out.push({
      target: 'cluster 1:1 1 KiB: across instances msgs/s ≥ 50% of the single instance',
      met: s === null ? null : s >= 0.5,
      observed: s === null ? 'not measured' : `${fmtInt(cross!.msgsPerSec)} vs ${fmtInt(single!.msgsPerSec)} msgs/s = ${(s * 100).toFixed(0)}%`,
    });
  }
  for (const bytes of [64, 1024, 16384]) {
    const cpu = (r: BenchRecord | undefined) => (r?.extra?.['relayCpuUsPerMsg'] as number | null | undefined) ?? null;
    const cross = at(bytes, '1:1, across instances');
    const single = at(bytes, '1:1, single instance');
    const c = ratio(cpu(cross), cpu(single));
    out.push({
      target: `cluster 1:1 ${sizeLabel(bytes)}: relay CPU per crossing message (both instances) ≤ 2× a single instance's`,
      met: c === null ? null : c <= 2,
      observed: c === null ? 'not measured' : `${cpu(cross)} vs ${cpu(single)} µs/msg = ${c.toFixed(2)}× (nats-server ${cross!.extra?.['natsCpuUsPerMsg'] ?? '-'} µs/msg more)`,
    });
  }
  {
    const cross = at(1024, 'offered 10,000/s, across instances')?.latencyUs?.p99;
    const single = at(1024, 'offered 10,000/s, single instance')?.latencyUs?.p99;
    out.push({
      target: "cluster p99 at 10k msgs/s of 1 KiB: across instances within 2 ms of the single instance's",
      met: cross == null || single == null ? null : cross - single <= 2000,
      observed: cross == null || single == null ? 'not measured' : `p99 ${fmtInt(cross)} vs ${fmtInt(single)} µs (+${fmtInt(cross - single)} µs)`,
    });
  }
  return out;
}

export function targetsText(targets: TargetResult[]): string {
  return targets.map((t) => `  [${t.met === null ? 'n/a    ' : t.met ? 'met    ' : 'NOT MET'}] ${t.target}: ${t.observed}`).join('\n');
}

export function targetsMarkdown(targets: TargetResult[]): string {
  return ['| target | result | observed |', '|---|---|---|',
    ...targets.map((t) => `| ${t.target} | ${t.met === null ? 'not measured' : t.met ? 'met' : '**not met**'} | ${t.observed} |`)].join('\n');
}

/** Two panels of grouped bars, msgs/s (log scale) and MB/s, for the 1:1 scenario by message size. */
export function throughputSvg(records: BenchRecord[]): string {
  const rows = records.filter((r) => r.scenario === 'one-to-one' && !r.skipped && r.msgsPerSec != null);
  const sizes = [...new Set(rows.map((r) => r.messageBytes))].sort((a, b) => a - b);
  const systems = [...new Set(rows.map((r) => r.system))];
  const colors: Record<string, string> = { pulltab: '#2a7ab9', pipe: '#8c8c8c', nats: '#2ca25f' };
  const W = 980, H = 420, panelW = 440, top = 60, plotH = 280, left0 = 70, gap = 60;
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="24" text-anchor="middle" font-size="16">One-to-one throughput by message size (loopback, same run)</text>`);
  const panels: Array<{ title: string; value: (r: BenchRecord) => number; log: boolean; unit: string }> = [
    { title: 'messages per second (log scale)', value: (r) => r.msgsPerSec ?? 0, log: true, unit: '' },
    { title: 'MB/s of message bodies', value: (r) => r.MBps ?? 0, log: false, unit: '' },
  ];
  panels.forEach((panel, pi) => {
    const x0 = left0 + pi * (panelW + gap);
    const values = rows.map(panel.value).filter((v) => v > 0);
    const maxV = Math.max(1, ...values);
    let scale: (v: number) => number;
    let ticks: number[];
    if (panel.log) {
      const lo = Math.pow(10, Math.floor(Math.log10(Math.max(1, Math.min(...values)))));
      const hi = Math.pow(10, Math.ceil(Math.log10(maxV)));
      scale = (v) => (v <= lo ? 0 : (Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) * plotH);
      ticks = [];
      for (let t = lo; t <= hi; t *= 10) ticks.push(t);
    } else {
      const step = Math.pow(10, Math.floor(Math.log10(maxV))) / (maxV / Math.pow(10, Math.floor(Math.log10(maxV))) < 3 ? 2 : 1);
      const hi = Math.ceil(maxV / step) * step;
      scale = (v) => (v / hi) * plotH;
      ticks = [];
      for (let t = 0; t <= hi + 1e-9; t += step) ticks.push(t);
    }
    parts.push(`<text x="${x0 + panelW / 2}" y="${top - 12}" text-anchor="middle" font-size="13">${esc(panel.title)}</text>`);
    for (const t of ticks) {
      const y = top + plotH - scale(t);
      parts.push(`<line x1="${x0}" x2="${x0 + panelW}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}" stroke="#e3e3e3"/>`);
      const label = t >= 1e6 ? `${t / 1e6}M` : t >= 1e3 ? `${t / 1e3}k` : String(t);
      parts.push(`<text x="${x0 - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end" fill="#555">${label}</text>`);
    }
    parts.push(`<line x1="${x0}" x2="${x0 + panelW}" y1="${top + plotH}" y2="${top + plotH}" stroke="#333"/>`);
    const groupW = panelW / Math.max(1, sizes.length);
    const barW = Math.min(36, (groupW - 16) / Math.max(1, systems.length));
    sizes.forEach((size, si) => {
      const gx = x0 + si * groupW + (groupW - barW * systems.length) / 2;
      systems.forEach((sys, k) => {
        const r = rows.find((x) => x.system === sys && x.messageBytes === size);
        if (!r) return;
        const v = panel.value(r);
        const h = Math.max(0, scale(v));
        const x = gx + k * barW;
        parts.push(`<rect x="${x.toFixed(1)}" y="${(top + plotH - h).toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${h.toFixed(1)}" fill="${colors[sys] ?? '#b95b2a'}"><title>${esc(`${sys} ${sizeLabel(size)}: ${panel.log ? Math.round(v).toLocaleString('en-US') + ' msgs/s' : v.toFixed(1) + ' MB/s'}`)}</title></rect>`);
        const label = panel.log ? (v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : `${Math.round(v / 1e3)}k`) : v.toFixed(0);
        parts.push(`<text x="${(x + barW / 2 - 1).toFixed(1)}" y="${(top + plotH - h - 4).toFixed(1)}" text-anchor="middle" font-size="9" fill="#333">${label}</text>`);
      });
      parts.push(`<text x="${(x0 + si * groupW + groupW / 2).toFixed(1)}" y="${top + plotH + 18}" text-anchor="middle">${sizeLabel(size)}</text>`);
    });
  });
  systems.forEach((sys, k) => {
    const x = left0 + k * 150;
    const y = H - 28;
    parts.push(`<rect x="${x}" y="${y - 10}" width="12" height="12" fill="${colors[sys] ?? '#b95b2a'}"/>`);
    parts.push(`<text x="${x + 18}" y="${y}">${esc(sys === 'pipe' ? 'bare node:net pipe' : sys === 'nats' ? 'nats-server' : sys)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
