-- Multi-agent threads (issue 18). A subagent thread is a row of `sessions` with a parent: it
-- has its own event log, transcript and model steps (every table keyed by session id serves it
-- as is), runs its own agent version, and works in its parent session's workspace. Threads are
-- never listed as sessions; their usage is added to the parent's too.

ALTER TABLE sessions
    ADD COLUMN parent_session_id text REFERENCES sessions (id),
    ADD COLUMN agent_name text;
CREATE INDEX sessions_parent ON sessions (parent_session_id, created_at, id)
    WHERE parent_session_id IS NOT NULL;

-- A coordinator's delegation tool use, checked once: a retried activity answers the same.
CREATE TABLE thread_delegations (
    result_event_id  text PRIMARY KEY,
    session_id       text NOT NULL REFERENCES sessions (id),
    decision         jsonb NOT NULL
);
CREATE INDEX thread_delegations_session ON thread_delegations (session_id);

-- Events on a thread's own log announce no webhooks: the primary thread's copies do (they
-- name the thread with `session_thread_id`, and `id` is the session's).
CREATE OR REPLACE FUNCTION webhook_outbox_session_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    kinds  text[];
    thread text;
    extra  jsonb := '{}';
BEGIN
    IF NEW.session_id LIKE 'sth\_%' THEN
        RETURN NULL;
    END IF;
    kinds := CASE NEW.type
        WHEN 'session.status_running' THEN ARRAY['session.status_run_started', 'session.running']
        WHEN 'session.status_idle' THEN ARRAY['session.status_idled', 'session.idled']
        WHEN 'session.status_rescheduled' THEN ARRAY['session.status_rescheduled']
        WHEN 'session.status_terminated' THEN ARRAY['session.status_terminated']
        WHEN 'span.outcome_evaluation_end' THEN ARRAY['session.outcome_evaluation_ended']
        WHEN 'session.thread_created' THEN ARRAY['session.thread_created']
        WHEN 'session.thread_status_idle' THEN ARRAY['session.thread_idled']
        WHEN 'session.thread_status_terminated' THEN ARRAY['session.thread_terminated']
    END;
    IF NEW.type = 'session.status_idle'
       AND NEW.payload #>> '{stop_reason,type}' = 'requires_action' THEN
        kinds := kinds || 'session.requires_action'::text;
    END IF;
    IF NEW.type LIKE 'session.thread%' THEN
        thread := NEW.payload ->> 'session_thread_id';
        IF thread IS NULL THEN
            RETURN NULL;
        END IF;
        extra := jsonb_build_object('session_thread_id', thread);
    END IF;
    INSERT INTO webhook_deliveries (id, event_id, endpoint_id, event_type, data, created_at)
    SELECT 'whd_' || md5(w.event_id || '/' || e.id), w.event_id, e.id, w.kind,
           jsonb_build_object('type', w.kind, 'id', NEW.session_id,
                              'organization_id', 'org_reverie',
                              'workspace_id', 'wrkspc_default') || extra,
           NEW.processed_at
    FROM (SELECT k AS kind, 'whe_' || md5(NEW.id || '/' || k) AS event_id
          FROM unnest(kinds) AS k) AS w
    JOIN webhook_endpoints e ON e.state = 'enabled' AND w.kind = ANY (e.enabled_events)
    FOR KEY SHARE OF e SKIP LOCKED
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        PERFORM pg_notify('reverie_webhooks', '');
    END IF;
    RETURN NULL;
END $$;
