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
  spilled = 0;
  refused = 0;
  refusedStore = 0;
  requeueFailed = 0;
  droppedHeld = 0;
  rateLimitPauses = 0;
  slowConsumers = 0;
  idleTimeouts = 0;
  readonly dropped = { offline: 0, busy: 0 };
}
