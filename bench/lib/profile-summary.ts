// Top self-time functions of a V8 .cpuprofile (as written by node --cpu-prof), and the share of
// busy time spent under given functions (what a copy costs, wherever it is called from).
//
//   node dist/bench/bench/lib/profile-summary.js FILE.cpuprofile [TOP] [START_US END_US]
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

/** Monotonic µs (process.hrtime, the clock V8 stamps samples with): only samples between them count. */
export type ProfileWindow = [startUs: number, endUs: number];

/** Self µs per node id, over the whole profile or only the samples taken in window. */
function selfTimes(profile: CpuProfile, window?: ProfileWindow): Map<number, number> {
  const selfUs = new Map<number, number>();
  if (profile.samples && profile.timeDeltas) {
    let t = profile.startTime;
    for (let i = 0; i < profile.samples.length; i++) {
      t += profile.timeDeltas[i] ?? 0;
      if (window && (t < window[0] || t > window[1])) continue;
      const id = profile.samples[i]!;
      selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0));
    }
  } else {
    const interval = (profile.endTime - profile.startTime) / Math.max(1, profile.nodes.reduce((a, n) => a + (n.hitCount ?? 0), 0));
    for (const n of profile.nodes) selfUs.set(n.id, (n.hitCount ?? 0) * interval);
  }
  return selfUs;
}

export function summarizeProfile(path: string, top = 15, window?: ProfileWindow): { totalMs: number; idleMs: number; rows: SelfTime[] } {
  const profile = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = selfTimes(profile, window);
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

/** A frame to look for: its function name, and optionally its script. */
export interface FrameMatch { name: RegExp; url?: RegExp }

export interface StackRule {
  label: string;
  /** Counts a sample whose stack has this frame (the leaf or any caller)... */
  under: FrameMatch;
  /** ...and, when given, whose leaf is this one (a copy called from `under`)... */
  leaf?: FrameMatch;
  /** ...unless this frame sits between them (the copy belongs to another rule). */
  notUnder?: FrameMatch;
}

export interface StackShare { label: string; ms: number; pct: number }

/** Busy time under each rule's frame, as ms and % of busy time (in window, when given). */
export function stackShares(path: string, rules: StackRule[], window?: ProfileWindow): { busyMs: number; shares: StackShare[] } {
  const profile = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const is = (n: ProfileNode, m: FrameMatch) => m.name.test(n.callFrame.functionName) && (m.url === undefined || m.url.test(n.callFrame.url));
  const matches = (id: number, rule: StackRule): boolean => {
    const leaf = byId.get(id)!;
    if (rule.leaf && !is(leaf, rule.leaf)) return false;
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const n = byId.get(at)!;
      if (is(n, rule.under)) return true;
      if (rule.notUnder && is(n, rule.notUnder)) return false;
    }
    return false;
  };
  let busyUs = 0;
  const us = rules.map(() => 0);
  for (const [id, t] of selfTimes(profile, window)) {
    const node = byId.get(id);
    if (!node || node.callFrame.functionName === '(idle)') continue;
    busyUs += t;
    rules.forEach((rule, k) => { if (matches(id, rule)) us[k]! += t; });
  }
  return {
    busyMs: busyUs / 1000,
    shares: rules.map((r, k) => ({ label: r.label, ms: us[k]! / 1000, pct: busyUs > 0 ? (us[k]! / busyUs) * 100 : 0 })),
  };
}

export function formatSummary(s: ReturnType<typeof summarizeProfile>): string {
  const lines = [`sampled ${(s.totalMs / 1000).toFixed(1)} s, idle ${(s.idleMs / 1000).toFixed(1)} s; self time as % of busy time:`];
  for (const r of s.rows) lines.push(`  ${r.pct.toFixed(1).padStart(5)}%  ${r.selfMs.toFixed(0).padStart(7)} ms  ${r.name}  ${r.where}`);
  return lines.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: profile-summary FILE.cpuprofile [TOP] [START_US END_US]');
    process.exit(2);
  }
  // A window (the bench prints the measured one in each summary) keeps only the samples in it.
  const window: ProfileWindow | undefined = process.argv[5] ? [Number(process.argv[4]), Number(process.argv[5])] : undefined;
  console.log(formatSummary(summarizeProfile(file, Number(process.argv[3] ?? 20), window)));
}
