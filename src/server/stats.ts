// Plain counters the relay bumps on its paths; metrics and admin read them when asked, so
// counting costs an increment and nothing more.
export class RelayStats {
  connectionsAccepted = 0;
  connectionsRefusedFull = 0;
  handshakesOk = 0;
  handshakesFailed = 0;
  handshakesTimedOut = 0;
  replaced = 0;
  protocolErrors = 0;
  messagesIn = 0;
  messagesOut = 0;
  deliveredFromMailbox = 0;
  stored = 0;
  /** Storable messages written live and stored until acknowledged (answered DELIVERED). */
  storedLive = 0;
  /** Times a sender was not read from because its (or the relay's) stores awaiting commit passed the bound. */
  storePauses = 0;
  /** Times a sender was not read from because the link to the instance its messages go to was filling. */
  peerPauses = 0;
  /** Times a connection was not read from because its own unread output passed the bound. */
  outputPauses = 0;
  /** Times a connection used its share of an event-loop turn and was read again in the next. */
  turnYields = 0;
  spilled = 0;
  refused = 0;
  refusedStore = 0;
  droppedHeld = 0;
  rateLimitPauses = 0;
  slowConsumers = 0;
  /** A TLS client on a plain port, or a plain one on a TLS port (TRANSPORT_MISMATCH). */
  transportMismatches = 0;
  /** TLS handshakes that failed before the Pulltab handshake began. */
  tlsHandshakeFailures = 0;
  /** AUTH_FAILED over TLS: a forged signature or, far more likely, a TLS-terminating proxy. */
  tlsAuthFailed = 0;
  idleTimeouts = 0;
  readonly dropped = { offline: 0, busy: 0 };
  /** Envelopes a peer instance took (any outcome), and forwards that missed, by reason. */
  forwarded = 0;
  readonly forwardMisses = { gone: 0, busy: 0 };
  /** Welcomes sent before every other instance confirmed it knew the connection (one slower than forwardDeadlineMs). */
  presenceUnconfirmed = 0;
  /** Envelopes another instance forwarded here for a key held here. */
  forwardedIn = 0;
  /** Refused handshakes by code (handshakesFailed counts them all). */
  readonly handshakesRefused = { authFailed: 0, unsupportedVersion: 0, notAuthorized: 0, tooManyConnections: 0 };
  /** Sessions closed by an administrator (kick) or a policy change (block, right to connect withdrawn). */
  readonly policyDisconnects = { kicked: 0, notAuthorized: 0 };
  /** Traffic read from clients; what was written is summed from each connection's output when asked. */
  framesIn = 0;
  bytesIn = 0;
  /** Frames and bytes written on connections that have closed. */
  framesOutClosed = 0;
  bytesOutClosed = 0;
}
