// The admin engine: one ADMIN_REQUEST in, one answer out. It parses the request, finds the
// command, validates its arguments, checks the caller's rights, runs it, and records the action
// in the event log (command, caller, target keys and policy names; no other argument). Every
// request gets an explicit answer; nothing here throws to the connection.
//
// The commands live beside this file, one small file per group: policies, users, connections,
// messages, stats. There is no remote shell and no file access, by design.
import { z } from 'zod';
import { decodeKey, encodeKey } from '../crypto/keys.js';
import type { Capability } from '../policy/capabilities.js';
import { Code, codeName } from '../protocol/constants.js';
import { PolicyStoreError } from '../store/policy-store.js';
import type { AdminResponse } from '../protocol/frames.js';
import type { AdminHost, PolicyEnforcement } from './host.js';

/** Status of an answer that conflicts with the relay's state (a policy still assigned). */
export const CONFLICT: number = Code.CONFLICT;

export interface AdminCaller {
  readonly key: Uint8Array;
  readonly keyText: string;
}

export interface CommandContext {
  readonly host: AdminHost;
  readonly caller: AdminCaller;
  /** Pushes the current policies to connected sessions (all of them, or one key's). */
  enforce(only?: Uint8Array): PolicyEnforcement;
}

export interface AuditTargets {
  keys?: string[];
  policy?: string;
}

export interface AdminCommand<A = any> {
  name: string;
  /** One line for the docs and the CLI. */
  summary: string;
  /** The caller needs one of these rights (root has all); empty: any authenticated key. */
  needs: Capability[];
  args: z.ZodType<A>;
  /** Lets a caller through without the rights (reading one's own policy). */
  allowWithout?(caller: AdminCaller, args: A): boolean;
  /** What the event log records besides the command name. Whitelist: keys and policy names only. */
  audit(args: A): AuditTargets;
  run(ctx: CommandContext, args: A): Promise<unknown> | unknown;
}

/** An answer other than OK, with the text for { "error": ... }. */
export class AdminError extends Error {
  override name = 'AdminError';
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** A base58 public key argument, decoded to 32 bytes. */
export const keyArg = z.string().transform((text, ctx) => {
  try {
    return Buffer.from(decodeKey(text));
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

/**
 * Request envelope: { "command": "...", "args": { ... } }. `args` is passed on as parsed, every
 * member kept, for the command's strict schema to judge: a z.record here would silently drop a
 * "__proto__" member, and the command would never see (or refuse) it.
 */
const requestSchema = z.object({
  command: z.string().min(1).max(64),
  args: z.custom<Record<string, unknown>>((v) => typeof v === 'object' && v !== null && !Array.isArray(v), 'args must be an object').optional(),
}).strict();

/** Requests of one session being carried out at once; more are answered RATE_LIMITED. */
export const MAX_ADMIN_IN_FLIGHT = 8;

export class AdminEngine {
  readonly #host: AdminHost;
  readonly #commands = new Map<string, AdminCommand>();
  readonly #inFlight = new WeakMap<object, number>();
  /** Answers by status name, for metrics. */
  readonly answers: Record<string, number> = {};

  constructor(host: AdminHost, commands: AdminCommand[]) {
    this.#host = host;
    for (const c of commands) {
      if (this.#commands.has(c.name)) throw new Error(`admin command ${c.name} defined twice`);
      this.#commands.set(c.name, c);
    }
  }

  get commands(): AdminCommand[] {
    return [...this.#commands.values()];
  }

  /** Carries out one request; never rejects. */
  async handle(caller: AdminCaller, json: string): Promise<AdminResponse> {
    const running = this.#inFlight.get(caller) ?? 0;
    if (running >= MAX_ADMIN_IN_FLIGHT) {
      return this.#answer(Code.RATE_LIMITED, { error: `more than ${MAX_ADMIN_IN_FLIGHT} admin requests at once` });
    }
    this.#inFlight.set(caller, running + 1);
    let command: AdminCommand | undefined;
    let audit: AuditTargets = {};
    let status: number = Code.INTERNAL_ERROR;
    try {
      const request = parseRequest(json);
      command = this.#commands.get(request.command);
      if (!command) throw new AdminError(Code.NOT_FOUND, `no admin command ${JSON.stringify(request.command)}`);
      const parsed = command.args.safeParse(request.args ?? {});
      if (!parsed.success) throw new AdminError(Code.BAD_REQUEST, `${command.name}: ${describeIssues(parsed.error)}`);
      const args = parsed.data;
      audit = safeAudit(command, args);
      this.#authorize(command, caller, args);
      const result = await command.run(this.#context(caller), args);
      status = Code.OK;
      return this.#answer(Code.OK, result ?? {});
    } catch (err) {
      const [code, message] = this.#failure(err, command);
      status = code;
      return this.#answer(code, { error: message });
    } finally {
      this.#inFlight.set(caller, (this.#inFlight.get(caller) ?? 1) - 1);
      this.#record(caller, command, audit, status);
    }
  }

  #authorize(command: AdminCommand, caller: AdminCaller, args: unknown): void {
    if (command.needs.length === 0) return;
    const policies = this.#host.policies;
    if (command.needs.some((c) => policies.can(caller.key, c))) return;
    if (command.allowWithout?.(caller, args)) return;
    const needs = command.needs.length === 1 ? `the ${command.needs[0]} right` : `one of the rights ${command.needs.join(', ')}`;
    throw new AdminError(Code.FORBIDDEN, `${command.name} needs ${needs}`);
  }

  #context(caller: AdminCaller): CommandContext {
    const host = this.#host;
    return { host, caller, enforce: (only) => host.connections.enforcePolicies(only) };
  }

  #failure(err: unknown, command: AdminCommand | undefined): [number, string] {
    if (err instanceof AdminError) return [err.status, err.message];
    if (err instanceof PolicyStoreError) {
      switch (err.code) {
        case 'NOT_FOUND': return [Code.NOT_FOUND, err.message];
        case 'IN_USE': return [CONFLICT, err.message];
        case 'INVALID': return [Code.BAD_REQUEST, err.message];
        default: return [Code.INTERNAL_ERROR, 'the relay is shutting down'];
      }
    }
    this.#host.log?.error({ event: 'admin_failed', command: command?.name, err: (err as Error)?.message }, 'admin command failed');
    return [Code.INTERNAL_ERROR, `${command?.name ?? 'request'}: the relay failed to carry out the request`];
  }

  #answer(status: number, body: unknown): AdminResponse {
    const name = codeName(status);
    this.answers[name] = (this.answers[name] ?? 0) + 1;
    return { status, json: JSON.stringify(body) };
  }

  #record(caller: AdminCaller, command: AdminCommand | undefined, audit: AuditTargets, status: number): void {
    const events = this.#host.events;
    if (!events) return;
    const fields: Record<string, string | string[]> = { command: command?.name ?? '(unknown)', caller: caller.keyText, status: codeName(status) };
    if (audit.keys && audit.keys.length > 0) fields.keys = audit.keys;
    if (audit.policy !== undefined) fields.policy = audit.policy;
    events.write('admin', fields);
  }
}

/**
 * JSON objects become null-prototype objects, at every level: a member the client did not send
 * (toString, constructor, hasOwnProperty...) can then never be read from one, and a member it
 * did send, "__proto__" included, is an own member that the strict schemas refuse as unknown.
 */
function nullPrototype(_key: string, value: unknown): unknown {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? Object.assign(Object.create(null), value) : value;
}

function parseRequest(json: string): z.infer<typeof requestSchema> {
  let data: unknown;
  try {
    data = JSON.parse(json, nullPrototype);
  } catch {
    throw new AdminError(Code.BAD_REQUEST, 'the request is not JSON');
  }
  const result = requestSchema.safeParse(data);
  if (!result.success) throw new AdminError(Code.BAD_REQUEST, `the request must be {"command": "...", "args": {...}}: ${describeIssues(result.error)}`);
  return result.data;
}

function describeIssues(error: z.ZodError): string {
  return error.issues.slice(0, 3).map((i) => {
    const path = i.path.join('.');
    if (i.code === 'unrecognized_keys') return `unknown argument${i.keys.length === 1 ? '' : 's'} ${i.keys.join(', ')}${path ? ` in ${path}` : ''}`;
    return path ? `${path}: ${i.message}` : i.message;
  }).join('; ');
}

function safeAudit(command: AdminCommand, args: unknown): AuditTargets {
  try {
    const a = command.audit(args);
    return {
      ...(a.keys ? { keys: a.keys.filter((k) => typeof k === 'string').slice(0, 16) } : {}),
      ...(typeof a.policy === 'string' ? { policy: a.policy.slice(0, 64) } : {}),
    };
  } catch {
    return {};
  }
}

/** The base58 text of key bytes. */
export function keyText(key: Uint8Array): string {
  return encodeKey(key);
}
