-- Reverie's own compactions of a session's transcript: a summary that stands, in what the model
-- is sent, for every transcript row up to `upto_seq`. The id is made by the session workflow, so
-- a retried compaction writes nothing twice. The newest one (highest `upto_seq`) applies.

CREATE TABLE compactions (
    id          text PRIMARY KEY,
    session_id  text NOT NULL REFERENCES sessions (id),
    upto_seq    bigint NOT NULL,
    summary     text NOT NULL,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX compactions_session ON compactions (session_id, upto_seq DESC);
