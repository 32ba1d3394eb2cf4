// Top self-time functions of a V8 .cpuprofile (as written by node --cpu-prof).
//
//   node dist/bench/bench/lib/profile-summary.js FILE.cpuprofile [TOP]
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples?: number[];
  timeDeltas?: number[];
  startTime: number;
  endTime: number;
}

export interface SelfTime {
  name: string;
  where: string;
  selfMs: number;
  pct: number;
}

export function summarizeProfile(path: string, top = 15): { totalMs: number; idleMs: number; rows: SelfTime[] } {
  const profile = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  if (profile.samples && profile.timeDeltas) {
    for (let i = 0; i < profile.samples.length; i++) {
      const id = profile.samples[i]!;
      selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0));
    }
  } else {
    const interval = (profile.endTime - profile.startTime) / Math.max(1, profile.nodes.reduce((a, n) => a + (n.hitCount ?? 0), 0));
    for (const n of profile.nodes) selfUs.set(n.id, (n.hitCount ?? 0) * interval);
  }
  const totals = new Map<string, SelfTime>();
  let totalUs = 0;
  let idleUs = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    totalUs += us;
    const { functionName, url, lineNumber } = node.callFrame;
    const name = functionName || '(anonymous)';
    if (name === '(idle)') { idleUs += us; continue; }
    const short = url.replace(/^file:\/\//, '').replace(/^.*\/(dist|src|node_modules)\//, '$1/');
    const where = short ? `${short}:${lineNumber + 1}` : '';
    const key = `${name}|${where}`;
    const t = totals.get(key) ?? { name, where, selfMs: 0, pct: 0 };
    t.selfMs += us / 1000;
    totals.set(key, t);
  }
  const busyMs = (totalUs - idleUs) / 1000;
  const rows = [...totals.values()].sort((a, b) => b.selfMs - a.selfMs).slice(0, top);
  for (const r of rows) r.pct = busyMs > 0 ? (r.selfMs / busyMs) * 100 : 0;
  return { totalMs: totalUs / 1000, idleMs: idleUs / 1000, rows };
}

export function formatSummary(s: ReturnType<typeof summarizeProfile>): string {
  const lines = [`sampled ${(s.totalMs / 1000).toFixed(1)} s, idle ${(s.idleMs / 1000).toFixed(1)} s; self time as % of busy time:`];
  for (const r of s.rows) lines.push(`  ${r.pct.toFixed(1).padStart(5)}%  ${r.selfMs.toFixed(0).padStart(7)} ms  ${r.name}  ${r.where}`);
  return lines.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: profile-summary FILE.cpuprofile [TOP]');
    process.exit(2);
  }
  console.log(formatSummary(summarizeProfile(file, Number(process.argv[3] ?? 20))));
}
