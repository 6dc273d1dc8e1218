// Types of tornado-gw.js, the browser client of the tornado_gw gateway (docs/clients.md).

export declare const AUTH_FAILED: 4001;
export declare const NEVER_RECONNECT: ReadonlySet<number>;

export interface Settings {
  /** an application `ping` this often while connected (the server's idle timer), default 30 */
  pingIntervalS: number;
  /** reconnect delay: uniform in [0, min(backoffCapS, backoffBaseS * 2^(attempt-1))) */
  backoffBaseS: number;
  backoffCapS: number;
  /** refresh the token this long before `exp` (at most half its life), default 30 */
  refreshBeforeS: number;
  /** a typing user without `typing.stop` expires after this, default 10 */
  typingTtlS: number;
  /** at most one `typing` frame per conversation per this interval, default 2 */
  typingEveryS: number;
  /** `limit` of each `presence.query` page, default 500 */
  presencePage: number;
}

export declare const DEFAULT_SETTINGS: Readonly<Settings>;

/** A server frame for the user; outbox events carry `seq`. */
export interface GatewayEvent {
  type: string;
  payload: Record<string, unknown>;
  seq: number | null;
}

export type ConnectionState = "connecting" | "connected" | "resumed" | "disconnected" | "closed" | "reload";

/** `disconnected` carries the close code (1006 when no close frame came) and reason;
 * `reload` means `replay.done` said `recovered: false`: reload from the API. */
export interface StateChange {
  state: ConnectionState;
  code: number | null;
  reason: string;
}

export type Phase = "idle" | "connecting" | "authenticating" | "open" | "waiting_token" | "closed";
export type After = "reconnect" | "wait_token" | "stop";

export declare function reconnectDelayS(
  attempt: number, options: { baseS: number; capS: number; jitter: number }): number;
export declare function tokenExpiry(token: string): number | null;
export declare function eventChannel(type: string, payload: Record<string, unknown>): string;

/** The protocol logic with no I/O and no clock (`now` in seconds). */
export declare class ClientState {
  constructor(settings?: Partial<Settings>);
  settings: Settings;
  phase: Phase;
  userId: string | null;
  sessionId: string | null;
  lastSeq: number | null;
  channelSeqs: Map<string, number>;
  wanted: Set<string>;
  live: Set<string>;
  presence: Map<string, Set<string>>;
  presenceCount: Map<string, number>;
  presencePages: Map<string, Set<string>>;
  typingUntil: Map<string, Map<string, number>>;
  take(): { frames: object[]; events: GatewayEvent[]; changes: StateChange[] };
  connecting(): void;
  opened(token: string, now: number): void;
  refresh(token: string, now: number): void;
  closed(code: number, reason: string): After;
  stop(): void;
  deadline(): number | null;
  tick(now: number): boolean;
  subscribe(conversationIds: string[]): void;
  unsubscribe(conversationIds: string[]): void;
  typing(conversationId: string, now: number): void;
  queryPresence(conversationId: string, after?: string | null): void;
  typingUsers(conversationId: string, now: number): Set<string>;
  receive(frame: Record<string, unknown>, now: number): void;
}

export interface ClientOptions {
  token?: string | null;
  getToken?: (() => Promise<string>) | null;
  settings?: Partial<Settings>;
  random?: () => number;
}

/** A gateway connection that reconnects and resumes by itself until close(). */
export declare class Client implements AsyncIterable<GatewayEvent> {
  constructor(url: string | string[], options: ClientOptions);
  readonly urls: string[];
  readonly state: ClientState;
  onState(listener: (change: StateChange) => void): void;
  start(): void;
  waitOpen(timeoutS?: number): Promise<void>;
  subscribe(conversationIds: string[], timeoutS?: number): Promise<void>;
  unsubscribe(conversationIds: string[]): void;
  typing(conversationId: string): void;
  queryPresence(conversationId: string, timeoutS?: number): Promise<Set<string>>;
  presence(conversationId: string): Set<string>;
  typingUsers(conversationId: string): Set<string>;
  setToken(token: string): void;
  reconnect(): void;
  close(): void;
  until(predicate: () => boolean, timeoutS: number): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<GatewayEvent>;
}

export declare function connect(
  url: string | string[],
  options: ClientOptions & { onState?: ((change: StateChange) => void) | null; timeoutS?: number },
): Promise<Client>;
