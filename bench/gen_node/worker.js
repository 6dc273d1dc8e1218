// Load generator worker on Node's `ws`: the same job and stdio protocol as bench/worker.py,
// kept so `python -m bench gencost` can compare the CPU each costs per received message.
//
// Usage: node worker.js CONFIG.json   (config and stdio lines: see bench/worker.py)
"use strict";

const fs = require("fs");
const readline = require("readline");
const WebSocket = require("ws");

const STAMP = Buffer.from('"sent_ns":');
const WARM = Buffer.from('"warm":');
const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const sio = config.protocol === "sio";
const stats = { received: 0, warm: 0, other: 0, dropped: 0, stopping: false };
let latencies = new Float64Array(1 << 16);
let pending = 0; // latencies gathered since the last flush
const sockets = [];

function nowUs() {
  return (performance.timeOrigin + performance.now()) * 1000;
}

function record(data, index) {
  let start = index + STAMP.length;
  if (data[start] === 32) start += 1;
  const sentUs = Number(data.toString("latin1", start, start + 19)) / 1000;
  if (pending === latencies.length) {
    const grown = new Float64Array(latencies.length * 2);
    grown.set(latencies);
    latencies = grown;
  }
  latencies[pending] = Math.floor(nowUs() - sentUs);
  pending += 1;
  stats.received += 1;
}

function onControl(ws, spec, text, done) {
  if (!sio) {
    const frame = JSON.parse(text);
    if (frame.type === "auth.success") {
      ws.send(JSON.stringify({ type: "subscribe", payload: { conversation_ids: spec[1] } }));
    } else if (frame.type === "subscribed") done(null);
    else if (frame.type === "auth.error" || frame.type === "error") done(new Error(text));
  } else if (text.startsWith("0")) ws.send("40" + JSON.stringify({ token: spec[0] }));
  else if (text.startsWith("40")) ws.send("42" + JSON.stringify(["subscribe", { conversation_ids: spec[1] }]));
  else if (text.startsWith('42["subscribed"')) done(null);
  else if (text.startsWith("44")) done(new Error(text));
}

function open(spec, index) {
  return new Promise((resolve, reject) => {
    const addrs = config.source_addrs;
    const ws = new WebSocket(config.url, { localAddress: addrs[index % addrs.length], perMessageDeflate: false });
    let settled = false;
    const done = (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => done(new Error("subscribe timed out")), config.connect_timeout_s * 1000);
    sockets.push(ws);
    ws.on("open", () => {
      if (!sio) ws.send(JSON.stringify({ type: "auth", payload: { token: spec[0] } }));
    });
    ws.on("message", (data) => {
      const at = data.indexOf(STAMP);
      if (at >= 0) record(data, at);
      else if (data.indexOf(WARM) >= 0) stats.warm += 1;
      else if (sio && data.length === 1 && data[0] === 0x32) ws.send("3"); // engine.io ping
      else if (settled) stats.other += 1; // presence and the like: counted, never decoded
      else onControl(ws, spec, data.toString(), done);
    });
    ws.on("error", (err) => done(err));
    ws.on("close", () => {
      if (!settled) done(new Error("closed during the handshake"));
      else if (!stats.stopping) stats.dropped += 1;
    });
  });
}

async function openAll() {
  const specs = config.clients;
  const limit = config.connect_concurrency || 200;
  const errors = [];
  let next = 0;
  async function lane() {
    while (next < specs.length) {
      const index = next++;
      await open(specs[index], index).catch((err) => errors.push(String(err)));
    }
  }
  await Promise.all(Array.from({ length: limit }, lane));
  return errors;
}

function emit(event) {
  const { received, warm, other, dropped } = stats;
  process.stdout.write(JSON.stringify({ event, received, warm, other, dropped }) + "\n");
}

function flush() {
  const out = Buffer.alloc(pending * 8);
  for (let i = 0; i < pending; i++) out.writeBigInt64LE(BigInt(latencies[i]), i * 8);
  fs.writeFileSync(config.latency_path, out);
  pending = 0;
  emit("flushed");
}

function stop() {
  stats.stopping = true;
  sockets.forEach((ws) => ws.terminate());
  emit("done");
  process.exit(0);
}

openAll().then((errors) => {
  process.stdout.write(JSON.stringify({
    event: "ready", ok: config.clients.length - errors.length, failed: errors.length, error: errors[0] || "",
  }) + "\n");
  const lines = readline.createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    if (line.trim() === "count") emit("count");
    else if (line.trim() === "flush") flush();
    else if (line.trim() === "stop") stop();
  });
  lines.on("close", stop);
});
