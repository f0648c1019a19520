-- Outcomes (`user.define_outcome`): what the session's `outcome_evaluations[]` shows, each
-- grader evaluation's verdict, and each grader sample's verdict.
--
-- An outcome row is written in the same transaction as its `user.define_outcome` event (see
-- store/events.py `append`), so a refused or unstaged event leaves no outcome behind. Its
-- `result` is the API's evaluation state: pending, running, evaluating, then satisfied,
-- max_iterations_reached, failed or interrupted. The session workflow moves it on through
-- activities, always together with the span event that says so.

CREATE TABLE outcomes (
    id              text PRIMARY KEY,
    session_id      text NOT NULL REFERENCES sessions (id),
    event_id        text NOT NULL UNIQUE,
    description     text NOT NULL,
    rubric          jsonb NOT NULL,
    max_iterations  integer NOT NULL,
    -- Reverie's grader options (`grader` of the event): model, samples, inspect.
    grader          jsonb NOT NULL DEFAULT '{}',
    result          text NOT NULL DEFAULT 'pending',
    iteration       integer NOT NULL DEFAULT 0,
    explanation     text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz
);
CREATE INDEX outcomes_session ON outcomes (session_id, created_at, id);

-- One row per evaluation, keyed by its `span.outcome_evaluation_start` event id (made by the
-- workflow). Whoever inserts first decides the verdict: the grader committing it, or the
-- workflow settling an evaluation it gave up on (interrupted, or the grader failed), so a
-- verdict is recorded once and never contradicted by a late attempt.
CREATE TABLE outcome_evaluations (
    id           text PRIMARY KEY,
    outcome_id   text NOT NULL REFERENCES outcomes (id),
    session_id   text NOT NULL REFERENCES sessions (id),
    iteration    integer NOT NULL,
    result       text NOT NULL,
    explanation  text NOT NULL,
    -- The grader's structured verdict: per-criterion results and every sample's verdict.
    verdict      jsonb NOT NULL DEFAULT '{}',
    usage        jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outcome_evaluations_outcome ON outcome_evaluations (outcome_id, iteration);

-- Each grader sample's valid verdict, so that an evaluation retried after its worker died
-- does not grade (nor pay for) the samples it already has.
CREATE TABLE outcome_samples (
    evaluation_id  text NOT NULL,
    sample         integer NOT NULL,
    session_id     text NOT NULL REFERENCES sessions (id),
    verdict        jsonb NOT NULL,
    usage          jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (evaluation_id, sample)
);
CREATE INDEX outcome_samples_session ON outcome_samples (session_id);
