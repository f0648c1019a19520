-- Agents with immutable versions, sessions, and the per-session event log.

CREATE TABLE agents (
    id           text PRIMARY KEY,
    version      integer NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    archived_at  timestamptz
);

CREATE TABLE agent_versions (
    agent_id     text NOT NULL REFERENCES agents (id),
    version      integer NOT NULL,
    config       jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, version)
);

CREATE TABLE sessions (
    id               text PRIMARY KEY,
    agent_id         text NOT NULL REFERENCES agents (id),
    agent_version    integer NOT NULL,
    environment_id   text NOT NULL,
    title            text,
    metadata         jsonb NOT NULL DEFAULT '{}',
    resources        jsonb NOT NULL DEFAULT '[]',
    status           text NOT NULL DEFAULT 'idle',
    event_count      integer NOT NULL DEFAULT 0,
    input_tokens     bigint NOT NULL DEFAULT 0,
    output_tokens    bigint NOT NULL DEFAULT 0,
    cache_creation_input_tokens bigint NOT NULL DEFAULT 0,
    cache_read_input_tokens     bigint NOT NULL DEFAULT 0,
    active_seconds   double precision NOT NULL DEFAULT 0,
    running_since    timestamptz,
    turns            integer NOT NULL DEFAULT 0,
    model_requests   integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    archived_at      timestamptz
);
CREATE INDEX sessions_created ON sessions (created_at DESC, id DESC);

-- The append-only log. `position` is gapless per session (allocated under the session row's
-- lock), so a follower reading `position > n` never skips an event that commits late.
CREATE TABLE events (
    id            text PRIMARY KEY,
    session_id    text NOT NULL REFERENCES sessions (id),
    position      integer NOT NULL,
    type          text NOT NULL,
    payload       jsonb NOT NULL,
    processed_at  timestamptz NOT NULL,
    UNIQUE (session_id, position)
);

-- Input events a client has validated and staged, waiting for the workflow to accept them.
CREATE TABLE staged_events (
    id          text PRIMARY KEY,
    session_id  text NOT NULL REFERENCES sessions (id),
    type        text NOT NULL,
    payload     jsonb NOT NULL,
    staged_at   timestamptz NOT NULL DEFAULT now()
);

-- What the model sees, in order: one row per user turn and per model answer.
CREATE TABLE transcript (
    seq         bigserial PRIMARY KEY,
    id          text NOT NULL UNIQUE,
    session_id  text NOT NULL REFERENCES sessions (id),
    role        text NOT NULL CHECK (role IN ('user', 'assistant')),
    content     jsonb NOT NULL
);
CREATE INDEX transcript_session ON transcript (session_id, seq);

-- One row per completed model step: a retried step returns this instead of calling again.
CREATE TABLE model_steps (
    step_id     text PRIMARY KEY,
    session_id  text NOT NULL REFERENCES sessions (id),
    result      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
