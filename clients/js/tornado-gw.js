// tornado-gw.js: the browser client of the tornado_gw WebSocket gateway (docs/clients.md).
// One dependency-free ES module; the same behaviour and names as tornado_gw.client (Python),
// camelCase where Python has snake_case. Types: tornado-gw.d.ts beside this file.
//
// Shape: ClientState holds the protocol logic with no I/O and no clock (`now` comes in, in
// seconds); Client is the thin socket loop around it. Rules (same as the Python client):
// 1. Resume: `auth` carries the last session_id and the highest seq seen; a session the server
//    lost (resumed: false) is recovered with `subscribe` + `last_seq`.
// 2. Per channel, an event whose seq is not above the highest seen on that channel is dropped.
// 3. Subscriptions are remembered across reconnects; denied ones, `unsubscribed` by the server
//    and `membership.removed` end them.
// 4. Presence is a set per conversation from `presence.state` pages and `presence.diff`;
//    typing users expire typingTtlS after `typing.start`.
// 5. After close 4001 the client waits for setToken(); after 4010/4011 it stops.

export const AUTH_FAILED = 4001;
export const NEVER_RECONNECT = new Set([4010, 4011]);
const NO_CLOSE_FRAME = 1006;
const RECONNECT_BY_USER = 4000;

export const DEFAULT_SETTINGS = Object.freeze({
  pingIntervalS: 30,
  backoffBaseS: 0.5,
  backoffCapS: 30,
  refreshBeforeS: 30,
  typingTtlS: 10,
  typingEveryS: 2,
  presencePage: 500,
});

/** Delay before reconnect number `attempt` (1, 2, ...): capped exponential, full jitter. */
export function reconnectDelayS(attempt, { baseS, capS, jitter }) {
  return Math.min(capS, baseS * 2 ** Math.max(0, attempt - 1)) * jitter;
}

/** The `exp` claim of a JWT, read without verifying it (the server verifies). */
export function tokenExpiry(token) {
  try {
    const body = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(body + "=".repeat((4 - (body.length % 4)) % 4)));
    return typeof claims?.exp === "number" ? claims.exp : null;
  } catch {
    return null;
  }
}

/** The channel an outbox event came on: conversation events carry payload.conversation_id. */
export function eventChannel(type, payload) {
  const conversationId = payload.conversation_id;
  return type !== "membership.removed" && typeof conversationId === "string" ? "conv:" + conversationId : "user";
}

export class ClientState {
  constructor(settings = {}) {
    this.settings = { ...DEFAULT_SETTINGS, ...settings };
    this.phase = "idle"; // idle | connecting | authenticating | open | waiting_token | closed
    this.userId = null;
    this.sessionId = null;
    this.lastSeq = null;
    this.channelSeqs = new Map();
    this.wanted = new Set(); // insertion-ordered: what the user subscribed to
    this.live = new Set(); // confirmed by `subscribed` on this connection
    this.presence = new Map();
    this.presenceCount = new Map();
    this.presencePages = new Map(); // queries under way
    this.typingUntil = new Map();
    this.tokenExp = null;
    this.refreshAt = null;
    this.pingAt = null;
    this.pongDue = null; // a ping went out: something must arrive before this
    this._typingSent = new Map();
    this._frames = [];
    this._events = [];
    this._changes = [];
  }

  /** Frames to send, events for the user, state changes, in order; clears them. */
  take() {
    const out = { frames: this._frames, events: this._events, changes: this._changes };
    this._frames = [];
    this._events = [];
    this._changes = [];
    return out;
  }

  connecting() {
    this.phase = "connecting";
    this._changes.push({ state: "connecting", code: null, reason: "" });
  }

  opened(token, now) {
    this.phase = "authenticating";
    const payload = { token };
    if (this.sessionId !== null) {
      payload.session_id = this.sessionId;
      if (this.lastSeq !== null) payload.last_seq = this.lastSeq;
    }
    this._send("auth", payload);
    this._tokenUsed(token, now);
    this.pingAt = now + this.settings.pingIntervalS;
  }

  refresh(token, now) {
    if (this.phase === "open") this._send("auth", { token });
    this._tokenUsed(token, now);
  }

  /** The socket closed; returns "reconnect", "wait_token" or "stop". */
  closed(code, reason) {
    this.live.clear();
    this.typingUntil.clear();
    this.presencePages.clear();
    this.pingAt = this.refreshAt = this.pongDue = null;
    if (this.phase === "closed") return "stop";
    this._changes.push({ state: "disconnected", code, reason });
    if (code === AUTH_FAILED) {
      this.phase = "waiting_token";
      return "wait_token";
    }
    if (NEVER_RECONNECT.has(code)) {
      this.stop();
      return "stop";
    }
    this.phase = "idle";
    return "reconnect";
  }

  stop() {
    if (this.phase !== "closed") {
      this.phase = "closed";
      this._changes.push({ state: "closed", code: null, reason: "" });
    }
  }

  deadline() {
    const times = [this.pingAt, this.refreshAt, this.pongDue].filter((t) => t !== null);
    for (const users of this.typingUntil.values()) times.push(...users.values());
    return times.length ? Math.min(...times) : null;
  }

  /** Pings and typing expiry; returns true when the token needs refreshing now. */
  tick(now) {
    if (this.pingAt !== null && now >= this.pingAt && this.phase === "open") {
      this._send("ping", null);
      this.pingAt = now + this.settings.pingIntervalS;
      this.pongDue = this.pongDue ?? this.pingAt;
    }
    for (const users of this.typingUntil.values()) {
      for (const [userId, until] of users) if (until <= now) users.delete(userId);
    }
    if (this.refreshAt !== null && now >= this.refreshAt) {
      this.refreshAt = null;
      return true;
    }
    return false;
  }

  /** True when nothing arrived for a ping interval after a ping: the connection is dead. */
  silent(now) {
    return this.pongDue !== null && now >= this.pongDue;
  }

  subscribe(conversationIds) {
    const fresh = conversationIds.filter((c) => !this.wanted.has(c));
    fresh.forEach((c) => this.wanted.add(c));
    if (fresh.length && this.phase === "open") this._subscribe(fresh, false);
  }

  unsubscribe(conversationIds) {
    const gone = conversationIds.filter((c) => this.wanted.has(c));
    gone.forEach((c) => {
      this.wanted.delete(c);
      this._forget(c);
    });
    if (gone.length && this.phase === "open") this._send("unsubscribe", { conversation_ids: gone });
  }

  typing(conversationId, now) {
    if (this.phase !== "open" || !this.live.has(conversationId)) return;
    const last = this._typingSent.get(conversationId) ?? -Infinity;
    if (now < last + this.settings.typingEveryS) return;
    this._typingSent.set(conversationId, now);
    this._send("typing", { conversation_id: conversationId });
  }

  queryPresence(conversationId, after = null) {
    const payload = { conversation_id: conversationId, limit: this.settings.presencePage };
    if (after !== null) payload.after = after;
    else this.presencePages.set(conversationId, new Set());
    this._send("presence.query", payload);
  }

  typingUsers(conversationId, now) {
    const users = this.typingUntil.get(conversationId) ?? new Map();
    return new Set([...users].filter(([, until]) => until > now).map(([userId]) => userId));
  }

  /** One decoded server frame. */
  receive(frame, now) {
    this.pongDue = null; // any frame proves the connection alive
    const type = String(frame.type);
    const payload = frame.payload && typeof frame.payload === "object" ? frame.payload : {};
    const handler = HANDLERS[type];
    if (handler) {
      handler.call(this, payload, now);
      return;
    }
    const seq = Number.isInteger(frame.seq) ? frame.seq : null;
    if (seq !== null && !this._isNew(type, payload, seq)) return;
    if (type === "membership.removed" && typeof payload.conversation_id === "string") {
      this.wanted.delete(payload.conversation_id);
      this._forget(payload.conversation_id);
    }
    this._events.push({ type, payload, seq });
  }

  _authSuccess(payload) {
    if (this.phase === "open" || this.phase === "closed") return; // a token refresh, or too late
    const resumed = Boolean(payload.resumed);
    const hadSession = this.sessionId !== null;
    this.userId = payload.user_id ?? null;
    this.sessionId = payload.session_id ?? null;
    this.phase = "open";
    this._changes.push({ state: resumed ? "resumed" : "connected", code: null, reason: "" });
    const granted = (payload.conversation_ids ?? []).map(String);
    if (resumed) {
      granted.filter((c) => this.wanted.has(c)).forEach((c) => this.live.add(c));
      const extra = granted.filter((c) => !this.wanted.has(c));
      if (extra.length) this._send("unsubscribe", { conversation_ids: extra });
    }
    const missing = [...this.wanted].filter((c) => !this.live.has(c));
    if (missing.length) this._subscribe(missing, hadSession);
  }

  _subscribed(payload) {
    const granted = (payload.conversation_ids ?? []).map(String);
    (payload.denied ?? []).forEach((c) => this.wanted.delete(String(c)));
    granted.filter((c) => this.wanted.has(c)).forEach((c) => this.live.add(c));
    granted.forEach((c) => this.queryPresence(c));
    this._events.push({ type: "subscribed", payload, seq: null });
  }

  _unsubscribed(payload) {
    if (payload.reason === "server") {
      (payload.conversation_ids ?? []).forEach((c) => {
        this.wanted.delete(String(c));
        this._forget(String(c));
      });
    }
    this._events.push({ type: "unsubscribed", payload, seq: null });
  }

  _replayDone(payload) {
    if (payload.recovered === false) this._changes.push({ state: "reload", code: null, reason: "" });
    this._events.push({ type: "replay.done", payload, seq: null });
  }

  _presenceState(payload) {
    const conversationId = String(payload.conversation_id);
    const page = this.presencePages.get(conversationId) ?? new Set();
    (payload.user_ids ?? []).forEach((u) => page.add(String(u)));
    this.presencePages.set(conversationId, page);
    if (payload.next !== undefined && payload.next !== null) {
      this.queryPresence(conversationId, String(payload.next)); // CONTRACT v2 paging
      return;
    }
    this.presencePages.delete(conversationId);
    if (this.wanted.has(conversationId)) {
      this.presence.set(conversationId, page);
      this.presenceCount.set(conversationId, Number.isInteger(payload.count) ? payload.count : page.size);
    }
    this._events.push({ type: "presence.state", payload, seq: null });
  }

  _presenceDiff(payload) {
    const conversationId = String(payload.conversation_id);
    const online = this.presence.get(conversationId) ?? new Set();
    (payload.joins ?? []).forEach((u) => online.add(String(u)));
    (payload.leaves ?? []).forEach((u) => online.delete(String(u)));
    this.presence.set(conversationId, online);
    if (Number.isInteger(payload.count)) this.presenceCount.set(conversationId, payload.count);
    this._events.push({ type: "presence.diff", payload, seq: null });
  }

  _typingStart(payload, now) {
    const conversationId = String(payload.conversation_id);
    const users = this.typingUntil.get(conversationId) ?? new Map();
    users.set(String(payload.user_id), now + this.settings.typingTtlS);
    this.typingUntil.set(conversationId, users);
    this._events.push({ type: "typing.start", payload, seq: null });
  }

  _typingStop(payload) {
    this.typingUntil.get(String(payload.conversation_id))?.delete(String(payload.user_id));
    this._events.push({ type: "typing.stop", payload, seq: null });
  }

  _error(payload) {
    this._events.push({ type: "error", payload, seq: null });
  }

  _send(type, payload) {
    this._frames.push(payload === null ? { type } : { type, payload });
  }

  _subscribe(conversationIds, recover) {
    const payload = { conversation_ids: conversationIds };
    if (recover && this.lastSeq !== null) payload.last_seq = this.lastSeq;
    this._send("subscribe", payload);
  }

  _tokenUsed(token, now) {
    this.tokenExp = tokenExpiry(token);
    if (this.tokenExp === null) {
      this.refreshAt = null;
      return;
    }
    const margin = Math.min(this.settings.refreshBeforeS, Math.max(0, this.tokenExp - now) / 2);
    this.refreshAt = this.tokenExp - margin;
  }

  _isNew(type, payload, seq) {
    const channel = eventChannel(type, payload);
    if (seq <= (this.channelSeqs.get(channel) ?? 0)) return false;
    this.channelSeqs.set(channel, seq);
    this.lastSeq = Math.max(seq, this.lastSeq ?? 0);
    return true;
  }

  _forget(conversationId) {
    this.live.delete(conversationId);
    this.presence.delete(conversationId);
    this.presenceCount.delete(conversationId);
    this.typingUntil.delete(conversationId);
  }
}

const HANDLERS = {
  "auth.success": ClientState.prototype._authSuccess,
  subscribed: ClientState.prototype._subscribed,
  unsubscribed: ClientState.prototype._unsubscribed,
  "replay.done": ClientState.prototype._replayDone,
  "presence.state": ClientState.prototype._presenceState,
  "presence.diff": ClientState.prototype._presenceDiff,
  "typing.start": ClientState.prototype._typingStart,
  "typing.stop": ClientState.prototype._typingStop,
  pong: () => {},
  error: ClientState.prototype._error,
};

const seconds = () => Date.now() / 1000;

/** A gateway connection that reconnects and resumes by itself until close(). */
export class Client {
  constructor(url, { token = null, getToken = null, settings = {}, random = Math.random } = {}) {
    if ((token === null) === (getToken === null)) throw new Error("pass exactly one of token or getToken");
    this.urls = Array.isArray(url) ? [...url] : [url];
    this.state = new ClientState(settings);
    this._token = token;
    this._getToken = getToken;
    this._random = random;
    this._attempts = 0;
    this._failures = 0;
    this._ws = null;
    this._timer = null;
    this._stateListeners = [];
    this._changeWaiters = new Set();
    this._queue = [];
    this._readers = [];
    this._ended = false; // the iterator has had its end
  }

  onState(listener) {
    this._stateListeners.push(listener);
  }

  start() {
    if (this.state.phase === "idle") this._connect();
  }

  /** Resolves once authenticated; rejects if the client stopped or waits for a token. */
  async waitOpen(timeoutS = 10) {
    await this.until(() => ["open", "closed", "waiting_token"].includes(this.state.phase), timeoutS);
    if (this.state.phase !== "open") throw new Error(`gateway refused the connection: client is ${this.state.phase}`);
  }

  async subscribe(conversationIds, timeoutS = 10) {
    this.state.subscribe(conversationIds);
    this._flush();
    if (this.state.phase === "open") {
      await this.until(() => conversationIds.every((c) => this.state.live.has(c) || !this.state.wanted.has(c)),
        timeoutS);
    }
  }

  unsubscribe(conversationIds) {
    this.state.unsubscribe(conversationIds);
    this._flush();
  }

  typing(conversationId) {
    this.state.typing(conversationId, seconds());
    this._flush();
  }

  async queryPresence(conversationId, timeoutS = 10) {
    if (!this.state.live.has(conversationId)) {
      throw new Error(`can't query presence of ${conversationId}: not subscribed on a live connection`);
    }
    this.state.queryPresence(conversationId);
    this._flush();
    await this.until(() => !this.state.presencePages.has(conversationId), timeoutS);
    return this.presence(conversationId);
  }

  presence(conversationId) {
    return new Set(this.state.presence.get(conversationId) ?? []);
  }

  typingUsers(conversationId) {
    return this.state.typingUsers(conversationId, seconds());
  }

  setToken(token) {
    this._token = token;
    if (this.state.phase === "open") {
      this.state.refresh(token, seconds());
      this._flush();
    } else if (this.state.phase === "waiting_token") {
      this._connect();
    }
  }

  /** Drop the connection now (as a network failure would) and resume on a new one. */
  reconnect() {
    if (this._ws) this._ws.close(RECONNECT_BY_USER, "reconnect");
  }

  close() {
    this.state.stop();
    this._flush();
    clearTimeout(this._timer);
    if (this._ws) this._ws.close(1000, "closed by the client");
    this._ws = null;
    this._push(null);
  }

  /** Resolves when predicate() holds after some frame or change; rejects after timeoutS. */
  until(predicate, timeoutS) {
    if (predicate()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = () => {
        if (!predicate()) return;
        clearTimeout(timer);
        this._changeWaiters.delete(waiter);
        resolve();
      };
      const timer = setTimeout(() => {
        this._changeWaiters.delete(waiter);
        reject(new Error(`timed out after ${timeoutS} s`));
      }, timeoutS * 1000);
      this._changeWaiters.add(waiter);
    });
  }

  [Symbol.asyncIterator]() {
    return {
      next: () => {
        if (this._queue.length) return Promise.resolve(this._item(this._queue.shift()));
        return new Promise((resolve) => this._readers.push((event) => resolve(this._item(event))));
      },
    };
  }

  _item(event) {
    return event === null ? { value: undefined, done: true } : { value: event, done: false };
  }

  _push(event) {
    if (this._ended) return;
    this._ended = event === null;
    const reader = this._readers.shift();
    if (reader) reader(event);
    else this._queue.push(event);
  }

  async _connect() {
    this.state.connecting();
    this._flush();
    let token;
    try {
      token = this._getToken ? await this._getToken() : this._token;
      this._token = token;
    } catch (error) {
      this._closed(NO_CLOSE_FRAME, `getToken failed: ${error}`, false);
      return;
    }
    if (this.state.phase === "closed") return;
    const url = this.urls[this._attempts++ % this.urls.length];
    const ws = new WebSocket(url);
    this._ws = ws;
    let authenticated = false;
    ws.onopen = () => {
      this.state.opened(token, seconds());
      this._flush();
      this._schedule();
    };
    ws.onmessage = (message) => {
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      this.state.receive(frame, seconds());
      authenticated = authenticated || this.state.phase === "open";
      this._flush();
      this._schedule();
    };
    ws.onclose = (close) => {
      if (this._ws === ws) this._ws = null;
      this._closed(close.code || NO_CLOSE_FRAME, close.reason, authenticated);
    };
  }

  _closed(code, reason, authenticated) {
    clearTimeout(this._timer);
    const after = this.state.closed(code, reason);
    this._flush();
    this._failures = authenticated ? 1 : this._failures + 1;
    if (after === "reconnect") {
      const s = this.state.settings;
      const delay = reconnectDelayS(this._failures, { baseS: s.backoffBaseS, capS: s.backoffCapS,
        jitter: this._random() });
      this._timer = setTimeout(() => this._connect(), delay * 1000);
    } else if (after === "stop") {
      this._push(null);
    }
  }

  _schedule() {
    clearTimeout(this._timer);
    const deadline = this.state.deadline();
    if (deadline === null) return;
    this._timer = setTimeout(() => {
      if (this.state.tick(seconds())) this._refresh();
      this._flush();
      if (this.state.silent(seconds()) && this._ws) {
        // A half-open link: the close handshake would never finish, so do not wait for it.
        const ws = this._ws;
        ws.onclose = ws.onmessage = null;
        ws.close(RECONNECT_BY_USER, "no answer to ping");
        this._ws = null;
        this._closed(NO_CLOSE_FRAME, "no answer to ping", true);
        return;
      }
      this._schedule();
    }, Math.max(0, deadline - seconds()) * 1000);
  }

  async _refresh() {
    if (!this._getToken) return;
    try {
      const token = await this._getToken();
      this._token = token;
      this.state.refresh(token, seconds());
      this._flush();
      this._schedule();
    } catch (error) {
      console.warn("tornado-gw: getToken failed; the gateway closes with 4003 at exp and the client reconnects",
        error);
    }
  }

  _flush() {
    const { frames, events, changes } = this.state.take();
    const ws = this._ws;
    if (ws && ws.readyState === WebSocket.OPEN) frames.forEach((frame) => ws.send(JSON.stringify(frame)));
    events.forEach((event) => this._push(event));
    changes.forEach((change) => this._stateListeners.forEach((listener) => listener(change)));
    [...this._changeWaiters].forEach((waiter) => waiter());
  }
}

/** A started client, once authenticated (timeoutS bounds the first connection). */
export async function connect(url, { onState = null, timeoutS = 10, ...options } = {}) {
  const client = new Client(url, options);
  if (onState) client.onState(onState);
  client.start();
  try {
    await client.waitOpen(timeoutS);
  } catch (error) {
    client.close();
    throw error;
  }
  return client;
}
