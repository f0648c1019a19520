-- Dreams (issue 20): memory consolidation over a store and past sessions, on request or on a
-- Temporal schedule, with what each dream read, proposed and wrote kept for review.
--
-- Every step of a dream keeps its result here before the next one starts, keyed so that a
-- retried activity finds it instead of calling the model again: the findings of each session
-- (`dream_findings`), the operations proposed for each topic (`dream_topics`), and each memory
-- the dream wrote (`dream_changes`, keyed by the version it wrote, whose id the dream derives).

CREATE TABLE dreams (
    id               text PRIMARY KEY,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'completed', 'failed', 'canceled')),
    memory_store_id  text NOT NULL,                 -- the input store
    session_ids      text[] NOT NULL,               -- sorted, 1 to 100
    model            jsonb NOT NULL,                -- {id, speed}
    instructions     text,
    output_behavior  jsonb NOT NULL,                -- {type[, memory_store_id]}
    output_store_id  text,                          -- once known
    error            jsonb,
    usage            jsonb NOT NULL DEFAULT
        '{"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
          "cache_read_input_tokens": 0}',
    report           jsonb NOT NULL DEFAULT '{}',   -- Reverie's own: dropped operations, counts
    schedule_id      text,                          -- the schedule that made it, if any
    applied_at       timestamptz,                   -- a create_new result written into the input
    reverted_at      timestamptz,
    discarded_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    ended_at         timestamptz,
    archived_at      timestamptz
);
CREATE INDEX dreams_created ON dreams (created_at DESC, id DESC);
CREATE INDEX dreams_output ON dreams (output_store_id) WHERE status IN ('pending', 'running');
CREATE INDEX dreams_input ON dreams (memory_store_id) WHERE status IN ('pending', 'running');

-- What the input store held when the dream read it: the base of its diff and of `apply`'s
-- preconditions (a memory changed since is a conflict, never overwritten).
CREATE TABLE dream_base (
    dream_id        text NOT NULL REFERENCES dreams (id) ON DELETE CASCADE,
    path            text COLLATE "C" NOT NULL,
    memory_id       text NOT NULL,
    content         text NOT NULL,
    content_sha256  text NOT NULL,
    PRIMARY KEY (dream_id, path)
);

-- One row per session read: its findings (each with its evidence) and what reading it cost.
CREATE TABLE dream_findings (
    dream_id    text NOT NULL REFERENCES dreams (id) ON DELETE CASCADE,
    session_id  text NOT NULL,
    findings    jsonb NOT NULL,
    usage       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dream_id, session_id)
);

-- One row per topic consolidated: the operations kept and dropped, and what it cost.
CREATE TABLE dream_topics (
    dream_id    text NOT NULL REFERENCES dreams (id) ON DELETE CASCADE,
    topic       text NOT NULL,
    operations  jsonb NOT NULL,
    dropped     jsonb NOT NULL,
    usage       jsonb NOT NULL,
    written     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (dream_id, topic)
);

-- Each memory version a dream wrote (or, with `kind` = 'apply', that applying it wrote), with
-- its provenance (the supporting sessions) and the content before, so it can be reverted.
CREATE TABLE dream_changes (
    seq                  bigserial PRIMARY KEY,
    dream_id             text NOT NULL REFERENCES dreams (id) ON DELETE CASCADE,
    kind                 text NOT NULL CHECK (kind IN ('dream', 'apply', 'revert')),
    version_id           text NOT NULL UNIQUE,
    memory_store_id      text NOT NULL,
    memory_id            text NOT NULL,
    topic                text,
    operation            text NOT NULL,    -- create | update | merge | delete
    path                 text COLLATE "C" NOT NULL,
    before_path          text COLLATE "C",
    before_content       text,             -- NULL: the memory did not exist
    before_sha256        text,
    after_content        text,             -- NULL: the memory was deleted
    after_sha256         text,
    supporting_sessions  text[] NOT NULL DEFAULT '{}',
    rationale            text NOT NULL DEFAULT '',
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dream_changes_dream ON dream_changes (dream_id, kind, seq);

-- Scheduled dreams: the Temporal schedule's settings and the cursor of sessions already read.
CREATE TABLE dream_schedules (
    id                 text PRIMARY KEY,     -- also the Temporal schedule's id
    memory_store_id    text NOT NULL,
    agent_id           text,
    mode               text NOT NULL CHECK (mode IN ('review', 'auto')),
    model              text NOT NULL,
    instructions       text,
    cron               text NOT NULL,
    timezone           text NOT NULL DEFAULT 'UTC',
    cursor_created_at  timestamptz,          -- the last session read: (created_at, id)
    cursor_session_id  text,
    created_at         timestamptz NOT NULL DEFAULT now()
);

-- One row per scheduled time run: a second run of the same time finds it and does nothing new.
CREATE TABLE dream_schedule_runs (
    schedule_id     text NOT NULL REFERENCES dream_schedules (id) ON DELETE CASCADE,
    scheduled_time  timestamptz NOT NULL,
    dream_ids       text[] NOT NULL,
    session_count   integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, scheduled_time)
);
