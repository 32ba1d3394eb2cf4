// The ceiling for any Node relay: a bare node:net pipe in its own process. Each client first
// sends an 8-byte hello ('S' or 'R', u32 group, 3 bytes padding); after that, every byte a
// sender writes is forwarded unparsed to each receiver of its group (fan-out writes the same
// chunk to each). Receivers' own bytes (their ACKs) are read and discarded. Backpressure: a
// sender is paused while any of its receivers' sockets is over its high-water mark.
//
//   node dist/bench/bench/lib/pipe-server.js      prints "PORT" on its first stdout line
import { createServer, type Socket } from 'node:net';

const groups = new Map<number, Socket[]>();

function attachSender(sender: Socket, group: number, first: Buffer): void {
  const receivers = groups.get(group) ?? [];
  const blocked = new Set<Socket>();
  const forward = (chunk: Buffer): void => {
    for (const r of receivers) {
      if (!r.write(chunk) && !blocked.has(r)) {
        blocked.add(r);
        r.once('drain', () => {
          blocked.delete(r);
          if (blocked.size === 0) sender.resume();
        });
      }
    }
    if (blocked.size > 0) sender.pause();
  };
  sender.on('data', forward);
  if (first.length > 0) forward(first);
}

const server = createServer({ noDelay: true }, (socket) => {
  socket.on('error', () => {});
  let hello = Buffer.alloc(0);
  const onHello = (chunk: Buffer): void => {
    hello = Buffer.concat([hello, chunk]);
    if (hello.length < 8) return;
    socket.off('data', onHello);
    const role = hello[0];
    const group = hello.readUInt32BE(1);
    const rest = hello.subarray(8);
    if (role === 0x52) {
      const list = groups.get(group) ?? [];
      list.push(socket);
      groups.set(group, list);
      socket.on('data', () => {});
      socket.on('close', () => {
        const l = groups.get(group);
        if (l) groups.set(group, l.filter((s) => s !== socket));
      });
      socket.write(Buffer.from('OK'));
    } else {
      attachSender(socket, group, rest);
    }
  };
  socket.on('data', onHello);
});

server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`${typeof address === 'object' && address ? address.port : 0}\n`);
});
process.on('SIGTERM', () => process.exit(0));
