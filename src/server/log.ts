// The relay's structured log (pino, JSON lines on stdout). What goes in: events with names,
// public keys where useful, codes and counts. What never goes in: an IP address, a message
// body, a secret key. Nothing is logged per message unless logDeliveries is on.
import { pino, type Logger } from 'pino';

export function createLogger(level: string, destination: NodeJS.WritableStream = process.stdout): Logger {
  return pino({
    level,
    base: { service: 'pulltab' },
    timestamp: pino.stdTimeFunctions.isoTime,
  }, destination);
}
