// The official TypeScript SDK pointed at Reverie: agents, environments, a session streamed
// through one turn, event pages both ways, and refusals as the SDK's own error classes.
//
//   REVERIE_BASE_URL=http://127.0.0.1:8080 REVERIE_API_KEY=... REVERIE_SMOKE_MODEL=... \
//   REVERIE_SMOKE_TEXT="what the model answers" node tests/ts/smoke.mjs
//
// Prints one JSON line: {"ok": true, ...} with what was checked, or {"ok": false, "step",
// "route", "error"} (and the same in words on stderr) and exits 1 at the first mismatch.
// tests/test_api_typescript.py runs it against the test stack with a scripted fake model.

import Anthropic, { AuthenticationError, BadRequestError, NotFoundError } from "@anthropic-ai/sdk";
import { VERSION } from "@anthropic-ai/sdk/version";

const STREAM_TIMEOUT_MS = 30_000;

function env(name) {
  const value = process.env[name];
  if (!value) {
    fail("setup", "environment", `${name} is not set`);
  }
  return value;
}

const baseURL = env("REVERIE_BASE_URL");
const apiKey = env("REVERIE_API_KEY");
const model = env("REVERIE_SMOKE_MODEL");
const expectedText = env("REVERIE_SMOKE_TEXT");

const client = new Anthropic({ baseURL, apiKey, maxRetries: 0 });
const checked = [];

class Mismatch extends Error {}

function fail(step, route, error) {
  const result = { ok: false, step, route, error };
  console.log(JSON.stringify(result));
  console.error(`smoke.mjs: FAILED at ${step} (${route}): ${error}`);
  process.exit(1);
}

function expect(condition, what, got) {
  if (!condition) {
    throw new Mismatch(`expected ${what}, got ${JSON.stringify(got)}`);
  }
}

function describe(error) {
  if (error instanceof Anthropic.APIError) {
    const body = JSON.stringify(error.error ?? null);
    return `${error.constructor.name} ${error.status ?? ""}: ${body} (request-id ${error.requestID})`;
  }
  return error instanceof Mismatch ? error.message : String(error?.stack ?? error);
}

// One named SDK call and its checks; the first thing that goes wrong ends the run.
async function step(name, route, body) {
  try {
    const result = await body();
    checked.push(name);
    return result;
  } catch (error) {
    fail(name, route, describe(error));
  }
}

// A refusal the SDK must raise as `errorClass`, with the API's error type in its body.
async function refused(name, route, errorClass, type, call) {
  await step(name, route, async () => {
    let caught;
    try {
      await call();
    } catch (error) {
      caught = error;
    }
    expect(caught instanceof errorClass, `${errorClass.name}`, describe(caught ?? "no error"));
    expect(caught.error?.error?.type === type, `error.type ${type}`, caught.error);
    expect(caught.requestID?.startsWith("req_"), "a request-id", caught.requestID);
  });
}

async function all(pagePromise) {
  const items = [];
  for await (const item of pagePromise) {
    items.push(item);
  }
  return items;
}

// Agents

const agent = await step("agents.create", "POST /v1/agents", async () => {
  const created = await client.beta.agents.create({
    name: "ts-smoke",
    model,
    system: "Be brief.",
    tools: [{ type: "agent_toolset_20260401" }],
    metadata: { sdk: "typescript" },
  });
  expect(created.id?.startsWith("agent_"), "an agent id", created.id);
  expect(created.version === 1, "version 1", created.version);
  expect(created.model?.id === model, `model.id ${model}`, created.model);
  expect(created.tools?.[0]?.type === "agent_toolset_20260401", "the toolset", created.tools);
  expect(created.metadata?.sdk === "typescript", "the metadata", created.metadata);
  return created;
});

await step("agents.retrieve", "GET /v1/agents/{id}", async () => {
  const fetched = await client.beta.agents.retrieve(agent.id);
  expect(fetched.id === agent.id && fetched.version === 1, "the same agent", fetched);
});

await step("agents.update", "POST /v1/agents/{id}", async () => {
  const updated = await client.beta.agents.update(agent.id, {
    version: agent.version,
    description: "updated by the TypeScript SDK",
  });
  expect(updated.version === 2, "version 2", updated.version);
  expect(updated.description === "updated by the TypeScript SDK", "the description", updated);
  expect(updated.system === "Be brief.", "the system prompt kept", updated.system);
});

await step("agents.retrieve(version)", "GET /v1/agents/{id}?version=1", async () => {
  const first = await client.beta.agents.retrieve(agent.id, { version: 1 });
  expect(first.version === 1 && !first.description, "version 1 as it was", first);
});

await step("agents.versions.list", "GET /v1/agents/{id}/versions", async () => {
  const versions = await all(client.beta.agents.versions.list(agent.id, { limit: 1 }));
  const numbers = versions.map((v) => v.version).sort();
  expect(JSON.stringify(numbers) === "[1,2]", "versions 1 and 2", numbers);
});

const other = await step("agents.create(second)", "POST /v1/agents", () =>
  client.beta.agents.create({ name: "ts-smoke-other", model }),
);

await step("agents.list", "GET /v1/agents", async () => {
  const ids = (await all(client.beta.agents.list({ limit: 1 }))).map((a) => a.id);
  expect(ids.includes(agent.id) && ids.includes(other.id), "both agents", ids);
  expect(new Set(ids).size === ids.length, "no agent twice across pages", ids);
});

await step("agents.archive", "POST /v1/agents/{id}/archive", async () => {
  const archived = await client.beta.agents.archive(other.id);
  expect(archived.archived_at, "archived_at set", archived.archived_at);
  const ids = (await all(client.beta.agents.list())).map((a) => a.id);
  expect(!ids.includes(other.id), "the archived agent left out of the list", ids);
});

// Environments

const environment = await step("environments.create", "POST /v1/environments", async () => {
  const created = await client.beta.environments.create({
    name: "ts-smoke-env",
    config: {
      type: "cloud",
      networking: { type: "limited", allowed_hosts: ["example.com"] },
    },
    metadata: { sdk: "typescript" },
  });
  expect(created.id?.startsWith("env_"), "an environment id", created.id);
  expect(created.config?.type === "cloud", "config.type cloud", created.config);
  const networking = created.config?.networking;
  expect(networking?.type === "limited", "limited networking", networking);
  expect(networking?.allowed_hosts?.[0] === "example.com", "the allowed host", networking);
  return created;
});

await step("environments.retrieve", "GET /v1/environments/{id}", async () => {
  const fetched = await client.beta.environments.retrieve(environment.id);
  expect(fetched.id === environment.id && fetched.name === "ts-smoke-env", "the same", fetched);
});

await step("environments.update", "POST /v1/environments/{id}", async () => {
  const updated = await client.beta.environments.update(environment.id, {
    description: "updated by the TypeScript SDK",
  });
  expect(updated.description === "updated by the TypeScript SDK", "the description", updated);
  expect(updated.config?.networking?.type === "limited", "config kept", updated.config);
});

await step("environments.list", "GET /v1/environments", async () => {
  const ids = (await all(client.beta.environments.list({ limit: 1 }))).map((e) => e.id);
  expect(ids.includes(environment.id) && ids.includes("env_default"), "both", ids);
  expect(new Set(ids).size === ids.length, "no environment twice across pages", ids);
});

await step("environments.archive", "POST /v1/environments/{id}/archive", async () => {
  const archived = await client.beta.environments.archive(environment.id);
  expect(archived.archived_at, "archived_at set", archived.archived_at);
  const ids = (await all(client.beta.environments.list())).map((e) => e.id);
  expect(!ids.includes(environment.id), "the archived one left out of the list", ids);
});

// A session through one turn

const session = await step("sessions.create", "POST /v1/sessions", async () => {
  const created = await client.beta.sessions.create({
    agent: agent.id,
    environment_id: "env_default",
  });
  expect(created.id?.startsWith("sesn_"), "a session id", created.id);
  expect(created.status === "idle", "status idle", created.status);
  expect(created.agent?.id === agent.id, "the agent", created.agent);
  expect(created.agent?.version === 2, "the agent's latest version", created.agent);
  return created;
});

// Opened before the message goes: a stream starts at the session's present.
const stream = await step("sessions.events.stream", "GET /v1/sessions/{id}/events/stream", () =>
  client.beta.sessions.events.stream(session.id),
);

await step("sessions.events.send", "POST /v1/sessions/{id}/events", async () => {
  const sent = await client.beta.sessions.events.send(session.id, {
    events: [{ type: "user.message", content: [{ type: "text", text: "Hello" }] }],
  });
  expect(sent.data?.[0]?.type === "user.message", "the user.message echoed", sent);
});

const streamed = await step("stream until idle", "GET /v1/sessions/{id}/events/stream", async () => {
  const seen = [];
  const timer = setTimeout(() => stream.controller.abort(), STREAM_TIMEOUT_MS);
  for await (const event of stream) {
    seen.push(event);
    if (event.type === "session.status_idle") {
      break;
    }
  }
  clearTimeout(timer);
  const types = seen.map((e) => e.type);
  expect(types.at(-1) === "session.status_idle", "session.status_idle in 30 s", types);
  const message = seen.find((e) => e.type === "agent.message");
  expect(message?.content?.[0]?.text === expectedText, `agent.message "${expectedText}"`, message);
  return seen;
});

const events = await step("sessions.events.list", "GET /v1/sessions/{id}/events", async () => {
  const ascending = await all(client.beta.sessions.events.list(session.id, { limit: 2 }));
  const ids = ascending.map((e) => e.id);
  const tail = ids.slice(-streamed.length);
  expect(
    JSON.stringify(tail) === JSON.stringify(streamed.map((e) => e.id)),
    "the streamed events last in the list",
    { listed: ids, streamed: streamed.map((e) => e.id) },
  );
  expect(ascending[0]?.type === "user.message", "the user.message first", ascending[0]);
  expect(new Set(ids).size === ids.length, "no event twice across pages", ids);
  return ascending;
});

await step("sessions.events.list(desc)", "GET /v1/sessions/{id}/events?order=desc", async () => {
  const descending = await all(
    client.beta.sessions.events.list(session.id, { limit: 2, order: "desc" }),
  );
  const ids = descending.map((e) => e.id);
  const expected = events.map((e) => e.id).reverse();
  expect(JSON.stringify(ids) === JSON.stringify(expected), "the ascending list reversed", ids);
});

await step("sessions.retrieve", "GET /v1/sessions/{id}", async () => {
  const fetched = await client.beta.sessions.retrieve(session.id);
  expect(fetched.status === "idle", "status idle", fetched.status);
  expect(fetched.usage?.output_tokens > 0, "output tokens counted", fetched.usage);
});

await step("sessions.archive", "POST /v1/sessions/{id}/archive", async () => {
  const archived = await client.beta.sessions.archive(session.id);
  expect(archived.archived_at, "archived_at set", archived.archived_at);
});

// Refusals

await refused(
  "refusal: unknown agent",
  "GET /v1/agents/{id}",
  NotFoundError,
  "not_found_error",
  () => client.beta.agents.retrieve("agent_011CZkZnoSuchAgentHere00"),
);
await refused(
  "refusal: bad body",
  "POST /v1/agents",
  BadRequestError,
  "invalid_request_error",
  () => client.beta.agents.create({ name: "no model" }),
);
const stranger = new Anthropic({ baseURL, apiKey: "sk-ant-not-a-reverie-key", maxRetries: 0 });
await refused(
  "refusal: wrong key",
  "GET /v1/agents",
  AuthenticationError,
  "authentication_error",
  () => stranger.beta.agents.list(),
);

console.log(
  JSON.stringify({
    ok: true,
    sdk: VERSION,
    node: process.version,
    agent: agent.id,
    environment: environment.id,
    session: session.id,
    streamed: streamed.map((e) => e.type),
    listed: events.length,
    checked,
  }),
);
