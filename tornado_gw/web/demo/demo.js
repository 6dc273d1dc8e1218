// The demo chat: a user, some conversations, messages through POST /publish, and the
// connection state of the browser client (tornado-gw.js) as it reconnects and resumes.
import { Client } from "/demo/tornado-gw.js";

const $ = (selector) => document.querySelector(selector);
let client = null;
let user = null;
let current = null;
const joined = new Set();

function item(list, text, className = "") {
  const li = document.createElement("li");
  li.textContent = text;
  if (className) li.className = className;
  $(list).append(li);
  return li;
}

async function devToken() {
  const response = await fetch("/demo/token", { method: "POST", body: JSON.stringify({ user_id: user }) });
  if (!response.ok) throw new Error(`no development token: HTTP ${response.status}`);
  return (await response.json()).token;
}

function showState(change) {
  const text = change.state === "disconnected" ? `disconnected (${change.code}${change.reason ? " " + change.reason : ""})`
    : change.state === "reload" ? "gap: reload from the API" : change.state;
  $("#state").textContent = text;
  $("#state").className = `state ${change.state}`;
  item("#log", `${new Date().toLocaleTimeString()} ${text}`, change.state);
  const open = change.state === "connected" || change.state === "resumed";
  $("#drop").disabled = !open;
}

function showMessage(event) {
  const { conversation_id: conversationId, message = {} } = event.payload;
  const li = item("#messages", "");
  li.title = `seq ${event.seq}`;
  li.innerHTML = '<span class="conversation"></span> <span class="sender"></span>: <span class="content"></span>';
  li.querySelector(".conversation").textContent = `#${conversationId}`;
  li.querySelector(".sender").textContent = message.sender_id ?? "?";
  li.querySelector(".content").textContent = message.content ?? JSON.stringify(event.payload);
}

function render() {
  if (!client || !current) return;
  const typing = [...client.typingUsers(current)].sort();
  $("#typing").textContent = typing.length ? `${typing.join(", ")} ${typing.length > 1 ? "are" : "is"} typing…` : "";
  $("#online").replaceChildren();
  [...client.presence(current)].sort().forEach((u) => item("#online", u));
  $("#joined").replaceChildren();
  [...joined].forEach((c) => {
    const li = item("#joined", `#${c}`, c === current ? "current" : "");
    li.onclick = () => { current = c; render(); };
  });
}

async function readEvents(reader) {
  for await (const event of reader) {
    if (event.type === "message.new") showMessage(event);
    if (event.type === "membership.removed") joined.delete(event.payload.conversation_id);
    render();
  }
}

$("#login").onsubmit = (e) => {
  e.preventDefault();
  client?.close();
  user = $("#user").value;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // A development page: reconnect within 5 s at most, so a restart shows its resume quickly.
  client = new Client(`${scheme}://${location.host}/ws`, { getToken: devToken, settings: { backoffCapS: 5 } });
  client.onState(showState);
  client.start();
  readEvents(client);
  joined.forEach((c) => client.subscribe([c]));
  $("#text").disabled = $("#send").disabled = false;
};

$("#join").onsubmit = async (e) => {
  e.preventDefault();
  const conversationId = $("#conversation").value;
  joined.add(conversationId);
  current = conversationId;
  render();
  if (client) await client.subscribe([conversationId]);
};

$("#drop").onclick = () => client?.reconnect();

$("#text").oninput = () => current && client?.typing(current);

$("#compose").onsubmit = async (e) => {
  e.preventDefault();
  const content = $("#text").value;
  if (!content || !current) return;
  $("#text").value = "";
  const message = { id: crypto.randomUUID(), sender_id: user, content, created_at: new Date().toISOString() };
  const response = await fetch("/publish", { method: "POST", body: JSON.stringify(
    { channel: `conv:${current}`, type: "message.new", payload: { conversation_id: current, message } }) });
  if (!response.ok) item("#log", `send failed: HTTP ${response.status} ${await response.text()}`);
};

// Presence needs no polling: the client keeps the online set from presence.state and
// presence.diff, and every event re-renders. Typing expires without a frame, so a timer.
setInterval(render, 1000);
