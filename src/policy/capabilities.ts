// Administrative rights: a policy grants each one separately; the root key holds them all.

export const CAPABILITIES = ['editPolicies', 'assignUsers', 'readUsage', 'manageConnections', 'manageMessages'] as const;
export type Capability = (typeof CAPABILITIES)[number];

/** Every right, granted or not: how a policy stores them (every field explicit). */
export type Rights = Record<Capability, boolean>;

export function isCapability(name: string): name is Capability {
  return (CAPABILITIES as readonly string[]).includes(name);
}

/** Rights with exactly the named ones granted. */
export function rightsFrom(granted: readonly string[]): Rights {
  return Object.fromEntries(CAPABILITIES.map((c) => [c, granted.includes(c)])) as Rights;
}

export function noRights(): Rights {
  return rightsFrom([]);
}

export function allRights(): Rights {
  return rightsFrom(CAPABILITIES);
}

/** The rights granted, in the order of CAPABILITIES. */
export function grantedRights(rights: Rights): Capability[] {
  return CAPABILITIES.filter((c) => rights[c]);
}
