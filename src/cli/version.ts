// pulltab --version: the version of the installed package, read from its package.json (two
// levels up from dist/cli/, in a clone, an npm install and the Docker image alike) so that
// there is one place to bump it.
import { readFileSync } from 'node:fs';

export function packageVersion(): string {
  const manifest = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return String(manifest.version);
}
