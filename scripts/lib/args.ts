// `--name N` options for the fuzz and soak scripts: numbers only, with defaults, and a usage line on a bad one.
import { parseArgs } from 'node:util';

export function numberOptions<K extends string>(usage: string, defaults: Record<K, number>): Record<K, number> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: Object.fromEntries([...Object.keys(defaults), 'help'].map((k) => [k, { type: k === 'help' ? 'boolean' : 'string' }])) as Record<string, { type: 'string' | 'boolean' }>,
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`usage: ${usage}\n`);
    process.exit(0);
  }
  const out = { ...defaults };
  for (const k of Object.keys(defaults) as K[]) {
    const v = values[k];
    if (v === undefined) continue;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) {
      process.stderr.write(`--${k} must be a positive number\nusage: ${usage}\n`);
      process.exit(2);
    }
    out[k] = n;
  }
  return out;
}
