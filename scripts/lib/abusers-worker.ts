// Runs the abusers (./abusers.ts) on a thread of their own, so their floods do not slow the
// fuzz's or soak's own clients on the main thread (what is measured is the relay, not the tool).
// Says 'ready' once loaded (compiling TypeScript takes a while on a thread), then runs until the
// deadline it is sent.
import { parentPort, workerData } from 'node:worker_threads';
import { runAbusers } from './abusers.js';

const { port } = workerData as { port: number };
parentPort!.once('message', async ({ deadline, pipelineFrom }: { deadline: number; pipelineFrom: number }) => {
  parentPort!.postMessage(await runAbusers(port, deadline, pipelineFrom));
});
parentPort!.postMessage('ready');
