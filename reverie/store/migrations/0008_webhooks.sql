-- Webhooks (issue 19): endpoints, the deliveries owed to them (the outbox) and every attempt.
--
-- A delivery row is written in the same transaction as the event it announces (store/events.py
-- `append`, and `webhooks.record` for agents, environments, sessions and memory stores), one
-- per enabled endpoint subscribed to the event's type, so no event is ever missed. Its key is
-- (event, endpoint): the row exists once, however often the write is retried. `dispatched_at`
-- stays NULL until the dispatcher has woken the endpoint's workflow for it; the endpoint's
-- workflow then attempts it whenever `next_attempt_at` comes, until it is delivered or its
-- retries run out.

CREATE TABLE webhook_endpoints (
    id                          text PRIMARY KEY,
    url                         text NOT NULL,
    name                        text NOT NULL DEFAULT '',
    description                 text NOT NULL DEFAULT '',
    enabled_events              text[] NOT NULL,
    state                       text NOT NULL DEFAULT 'enabled'
                                CHECK (state IN ('enabled', 'disabled')),
    disabled_reason             text NOT NULL DEFAULT '',
    -- Kept as is: signing needs the secret itself (HMAC), not a digest of it.
    signing_secret              text NOT NULL,
    -- During a rotation's grace period deliveries are signed with both secrets.
    previous_secret             text,
    previous_secret_expires_at  timestamptz,
    -- Deliveries that ran out of retries since the last one that succeeded.
    consecutive_failures        integer NOT NULL DEFAULT 0,
    created_by                  text NOT NULL DEFAULT '',
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_created ON webhook_endpoints (created_at DESC, id DESC);

CREATE TABLE webhook_deliveries (
    id                text PRIMARY KEY,            -- whd_: derived from (event_id, endpoint_id)
    event_id          text NOT NULL,               -- whe_: the body's id and `webhook-id`
    endpoint_id       text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_type        text NOT NULL,
    data              jsonb NOT NULL,              -- the body's `data`
    created_at        timestamptz NOT NULL,        -- the event's time (the body's created_at)
    recorded_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    dispatched_at     timestamptz,
    state             text NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts          integer NOT NULL DEFAULT 0,  -- every attempt ever (numbers them)
    -- The current round: the first delivery, or the last redelivery. Backoff and the retry
    -- window count from its start.
    round_started_at  timestamptz NOT NULL DEFAULT now(),
    round_attempts    integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    -- Set while an attempt is in flight (its lease ends at next_attempt_at).
    claimed           boolean NOT NULL DEFAULT false,
    delivered_at      timestamptz,
    last_status       integer,
    last_error        text,
    redeliveries      integer NOT NULL DEFAULT 0,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_undispatched ON webhook_deliveries (recorded_at)
    WHERE dispatched_at IS NULL;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_listed ON webhook_deliveries (endpoint_id, recorded_at DESC, id DESC);

CREATE TABLE webhook_attempts (
    delivery_id   text NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    number        integer NOT NULL,
    webhook_id    text NOT NULL,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    latency_ms    double precision,
    status        integer,                         -- the HTTP status, when one came back
    error         text,                            -- why the attempt failed, if it did
    address       text,                            -- the address actually connected to
    PRIMARY KEY (delivery_id, number)
);
