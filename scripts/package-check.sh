#!/usr/bin/env bash
# Checks that Pulltab works as an npm package, the way a user gets it: `npm pack`, then in
# empty directories outside the clone
#   1. `npm install -g` of the tarball into a temporary prefix (nothing is installed on the
#      machine itself), and `pulltab --help`, `--version`, `keygen`, `serve`, `send`, `listen`
#      run from a directory that is not the package's;
#   2. a fresh TypeScript project that installs the tarball, type-checks a small consumer of
#      `import { RelayClient } from 'pulltab'` (strict, library types checked too) and runs it
#      to send a message through that relay, which `pulltab listen` then receives.
# Needs the npm registry (the package's dependencies, typescript, @types/node). Exit status 0
# when everything worked; each failure names its step. Run: bash scripts/package-check.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/pulltab-package-check.XXXXXX")
relay_pid=
cleanup() {
  if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
step() { echo "package-check: $*"; }
fail() { echo "package-check: FAIL: $*" >&2; exit 1; }
npm_quiet=(--no-audit --no-fund --loglevel=error)

version=$(node -p "require('$root/package.json').version")
step "node $(node --version), npm $(npm --version), pulltab $version"

step "npm pack"
(cd "$root" && npm pack --silent --pack-destination "$work" >/dev/null) || fail "npm pack"
tarball="$work/pulltab-$version.tgz"
[ -f "$tarball" ] || fail "npm pack made no $tarball"
listing=$(tar -tzf "$tarball")   # a variable, not a pipe: grep -q would cut tar off (SIGPIPE)
grep -qx 'package/dist/cli/main.js' <<<"$listing" || fail "the tarball lacks dist/cli/main.js"
grep -qx 'package/dist/index.d.ts' <<<"$listing" || fail "the tarball lacks dist/index.d.ts"
if grep -E '^package/(src|test|bench|node_modules)/|\.map$' <<<"$listing"; then fail "the tarball carries files a user does not need (above)"; fi
step "tarball $(du -k "$tarball" | cut -f1) KiB, $(wc -l <<<"$listing") files"

# --- 1. the command, installed globally into a temporary prefix ---------------------------
prefix="$work/prefix"
step "npm install -g (prefix $prefix)"
npm install --global --prefix "$prefix" "${npm_quiet[@]}" "$tarball" >/dev/null || fail "npm install -g of the tarball"
pulltab="$prefix/bin/pulltab"
[ -x "$pulltab" ] || fail "no executable $pulltab after npm install -g"
export PATH="$prefix/bin:$PATH"
[ "$(command -v pulltab)" = "$pulltab" ] || fail "pulltab on PATH is not the one just installed"

elsewhere="$work/elsewhere"
mkdir -p "$elsewhere" && cd "$elsewhere"
help=$(pulltab --help) || fail "pulltab --help exited non-zero"
grep -q '^Usage: pulltab COMMAND' <<<"$help" || fail "pulltab --help printed no usage"
[ "$(pulltab --version)" = "$version" ] || fail "pulltab --version printed '$(pulltab --version)', not $version"
step "pulltab --help and --version ($version) work from $elsewhere"

alice_key=$(pulltab keygen --out alice.key) || fail "pulltab keygen"
bob_key=$(pulltab keygen --out bob.key) || fail "pulltab keygen"
step "pulltab keygen: alice $alice_key, bob $bob_key"

pulltab serve --host 127.0.0.1 --port 0 --metrics-port 0 --data ./data >serve.out 2>serve.err &
relay_pid=$!
address=
for _ in $(seq 1 100); do
  address=$(head -n 1 serve.out 2>/dev/null | grep -E '^pulltab://' || true)
  [ -n "$address" ] && break
  kill -0 "$relay_pid" 2>/dev/null || { cat serve.err >&2; fail "pulltab serve exited"; }
  sleep 0.1
done
[ -n "$address" ] || { cat serve.err >&2; fail "pulltab serve printed no address within 10 s"; }
[ -f data/relay-identity.json ] || fail "pulltab serve did not make ./data/relay-identity.json in the current directory"
step "pulltab serve: $address"

pulltab send --relay "$address" --key alice.key --to "$bob_key" --store 'hello from the installed CLI' 2>send.err \
  || { cat send.err >&2; fail "pulltab send"; }

# --- 2. a fresh TypeScript project using the library --------------------------------------
consumer="$work/consumer"
mkdir -p "$consumer" && cd "$consumer"
cat >package.json <<'JSON'
{ "name": "pulltab-consumer", "private": true, "type": "module" }
JSON
cat >tsconfig.json <<'JSON'
{
  "compilerOptions": {
    "target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext",
    "strict": true, "skipLibCheck": false, "types": ["node"], "outDir": "out", "rootDir": "."
  },
  "files": ["consumer.ts"]
}
JSON
cat >consumer.ts <<'TS'
// Sends one stored message from a new identity to the key in argv[3] through the relay in
// argv[2], then prints the sender's key. Uses only the package's public entry point.
import { RelayClient, generateIdentity, encodeKey, type SendResult } from 'pulltab';

const [relay, to] = process.argv.slice(2);
const identity = generateIdentity();
const client = new RelayClient({ relay, identity, reconnect: false });
await client.connect();
const result: SendResult = await client.send([to], 'hello from a TypeScript consumer', { store: true });
await client.close();
if (!result.ok) throw new Error(`send refused: ${result.codeName}`);
console.log(encodeKey(identity.publicKey), result.outcomes.map((o) => o.codeName).join(','));

// Never called: tsc must reject these, which it does only if the package's types resolved
// (with `any` for types, each @ts-expect-error would itself be an error).
export function typesAreReal(c: RelayClient): void {
  // @ts-expect-error the relay address is a string or a parsed address, not a number
  new RelayClient({ relay: 2652, identity });
  // @ts-expect-error send() takes recipients first
  void c.send('hello');
}
TS
ts_version=$(node -p "require('$root/node_modules/typescript/package.json').version")
types_version=$(node -p "require('$root/node_modules/@types/node/package.json').version")
step "fresh TypeScript project: npm install the tarball, typescript@$ts_version, @types/node@$types_version"
npm install "${npm_quiet[@]}" "$tarball" "typescript@$ts_version" "@types/node@$types_version" >/dev/null \
  || fail "npm install in the consumer project"
npx --no-install tsc -p tsconfig.json || fail "the consumer does not type-check against the package's types"
step "the consumer type-checks (strict, with the package's .d.ts checked)"
sent=$(node out/consumer.js "$address" "$bob_key") || fail "the consumer could not send"
consumer_key=${sent%% *}
step "the consumer sent a message: $sent"

cd "$elsewhere"
heard=$(pulltab listen --relay "$address" --key bob.key --until-empty --timeout 10 --json) || fail "pulltab listen"
node -e '
  const [alice, consumer] = process.argv.slice(1);
  const got = require("fs").readFileSync(0, "utf8").trim().split("\n").map((l) => JSON.parse(l)).map((m) => [m.from, m.body]);
  const want = [[alice, "hello from the installed CLI"], [consumer, "hello from a TypeScript consumer"]];
  if (JSON.stringify(got) !== JSON.stringify(want)) { console.error("got", got, "want", want); process.exit(1); }
' "$alice_key" "$consumer_key" <<<"$heard" || fail "pulltab listen did not print both messages"
step "pulltab listen received both (from the CLI and from the consumer)"

kill -TERM "$relay_pid"
status=0; wait "$relay_pid" || status=$?
relay_pid=
[ "$status" = 0 ] || { cat "$elsewhere/serve.err" >&2; fail "pulltab serve exited $status on SIGTERM"; }
step "pulltab serve stopped on SIGTERM with status 0"
step "OK"
