-- Webhooks (issue 19): an endpoint being deleted while an event is recorded must not fail the
-- recording. The outbox trigger of 0009 read the endpoint (still visible: the delete had not
-- committed) and then met the foreign key once the delete committed, which refused the event's
-- whole transaction. Now the endpoints an event owes deliveries to are locked FOR KEY SHARE
-- with SKIP LOCKED: one a delete holds is skipped (it will not exist), while updates (FOR NO
-- KEY UPDATE) never make an endpoint skipped. `store.webhooks.record` does the same.

CREATE OR REPLACE FUNCTION webhook_outbox_session_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    kinds  text[];
    thread text;
    extra  jsonb := '{}';
BEGIN
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
