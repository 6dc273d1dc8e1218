// Socket.IO 4 peer for the tornado_gw benchmark: the stack a Node developer would pick.
//
// Clients authenticate with the CONNECT packet's auth payload ({token}), then emit
// "subscribe" {conversation_ids} and get "subscribed" back; each conversation is a room.
// Events come from Redis through @socket.io/redis-adapter: the bench publisher writes the
// redis-emitter format (msgpack [uid, packet, opts]) to `<key>#/#<room>#`, exactly what
// @socket.io/redis-emitter does for an API server.
//
// Usage: node server.js --port=P   env: REDIS_HOST=host:port, JWT_SECRET, SIO_KEY (adapter key)
"use strict";

const http = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");
const jwt = require("jsonwebtoken");

function portArg() {
  const arg = process.argv.find((a) => a.startsWith("--port="));
  return arg ? Number(arg.slice("--port=".length)) : 8082;
}

async function main() {
  const [host, port] = (process.env.REDIS_HOST || "127.0.0.1:6379").split(":");
  const secret = process.env.JWT_SECRET || "dev-secret";
  const pubClient = createClient({ socket: { host, port: Number(port) } });
  const subClient = pubClient.duplicate();
  await Promise.all([pubClient.connect(), subClient.connect()]);

  const httpServer = http.createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ service: "socket.io peer", status: "ok" }));
  });
  const io = new Server(httpServer, { transports: ["websocket"], serveClient: false });
  io.adapter(createAdapter(pubClient, subClient, { key: process.env.SIO_KEY || "socket.io" }));

  io.use((socket, next) => {
    try {
      const claims = jwt.verify(socket.handshake.auth.token, secret, { algorithms: ["HS256"] });
      socket.data.userId = String(claims.sub);
      next();
    } catch (err) {
      next(new Error("auth failed: " + err.message));
    }
  });

  io.on("connection", (socket) => {
    socket.on("subscribe", (payload) => {
      const ids = (payload && payload.conversation_ids) || [];
      socket.join(ids);
      socket.emit("subscribed", { conversation_ids: ids });
    });
    socket.on("unsubscribe", (payload) => {
      const ids = (payload && payload.conversation_ids) || [];
      ids.forEach((id) => socket.leave(id));
      socket.emit("unsubscribed", { conversation_ids: ids });
    });
  });

  httpServer.listen(portArg(), "127.0.0.1");
  const stop = () => {
    io.close();
    Promise.allSettled([pubClient.quit(), subClient.quit()]).then(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
