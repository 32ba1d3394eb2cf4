// The quota rule of the mailbox contract (documented in ./mailbox.ts), as one pure function that
// every engine calls, so that no two engines can disagree on what fits.
import type { MailboxLimits, RecipientQuota, RefusalCode, Usage } from './mailbox.js';

/**
 * Whether one recipient entry of `cost` bytes fits, given the recipient's usage now, the store's
 * total bytes, and the entry it replaces (its cost, or -1 when it replaces none: the replaced one
 * counts as freed). `quota` is the recipient's own limits (its policy), undefined for the store-wide
 * ones. Returns null when it fits, else the refusal. Usage equal to a limit is allowed.
 */
export function quotaRefusal(
  usage: Readonly<Usage> | undefined, totalBytes: number, cost: number, replacedCost: number,
  quota: RecipientQuota | undefined, limits: Readonly<MailboxLimits>,
): RefusalCode | null {
  const freedCount = replacedCost >= 0 ? 1 : 0;
  const freedBytes = replacedCost >= 0 ? replacedCost : 0;
  if ((usage?.count ?? 0) + 1 - freedCount > (quota?.maxCount ?? limits.maxCountPerRecipient)) return 'QUOTA_COUNT';
  if ((usage?.bytes ?? 0) + cost - freedBytes > (quota?.maxBytes ?? limits.maxBytesPerRecipient)) return 'QUOTA_BYTES';
  if (totalBytes + cost - freedBytes > limits.maxTotalBytes) return 'STORE_FULL';
  return null;
}
