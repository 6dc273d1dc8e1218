// Runs tests/client/scenarios.py's scenarios through the browser client's ClientState.
// Selenium's execute_async_script body: arguments = [moduleUrl, scenarios, done].
const [moduleUrl, scenarios, done] = arguments;
const camel = (name) => name.replace(/_(\w)/g, (_, letter) => letter.toUpperCase());
const plain = (value) => (value instanceof Set ? [...value].sort() : value === undefined ? null : value);
const sortedMap = (map) => Object.fromEntries([...map].map(([key, users]) => [key, [...users].sort()]));

function snapshot(state) {
  return {
    phase: state.phase, session_id: state.sessionId, last_seq: state.lastSeq,
    wanted: [...state.wanted], live: [...state.live].sort(), presence: sortedMap(state.presence),
    presence_count: Object.fromEntries(state.presenceCount), presence_pending: [...state.presencePages.keys()].sort(),
    deadline: state.deadline(), refresh_at: state.refreshAt,
  };
}

function run(ClientState, scenario) {
  const settings = Object.fromEntries(Object.entries(scenario.settings ?? {}).map(([k, v]) => [camel(k), v]));
  const state = new ClientState(settings);
  return scenario.steps.map((step) => {
    if (step.call) return plain(state[camel(step.call)](...step.args));
    if (step.take) return state.take();
    return snapshot(state);
  });
}

import(moduleUrl).then(
  ({ ClientState }) => done(Object.fromEntries(Object.entries(scenarios).map(([name, s]) => [name, run(ClientState, s)]))),
  (error) => done({ error: String(error) }),
);
