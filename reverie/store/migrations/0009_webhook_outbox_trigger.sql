-- Webhooks (issue 19): the outbox rows of session events, written by a trigger on `events`.
--
-- Every path that records session events inserts into `events` (store/events.py `append`, in
-- one statement with the session's lock), so a row trigger there writes the deliveries an event
-- owes in the very transaction that records the event, with no extra round trip: an event of a
-- type no webhook announces does not even call the function (the WHEN clause), and one that
-- does, in a deployment without endpoints, runs one INSERT ... SELECT that matches nothing.
-- The mapping is `reverie.models.webhooks.SESSION_EVENT_WEBHOOKS` (tests check they agree).
-- Each announcement's id (the body's `id`, the `webhook-id`) is derived from the event's id and
-- the webhook type: `whe_` || md5(event id || '/' || type); a delivery's from that and the
-- endpoint's id, so each (event, endpoint) is owed once.

CREATE FUNCTION webhook_outbox_session_event() RETURNS trigger
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
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        PERFORM pg_notify('reverie_webhooks', '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_outbox AFTER INSERT ON events
FOR EACH ROW
WHEN (NEW.type IN ('session.status_running', 'session.status_idle',
                   'session.status_rescheduled', 'session.status_terminated',
                   'span.outcome_evaluation_end', 'session.thread_created',
                   'session.thread_status_idle', 'session.thread_status_terminated'))
EXECUTE FUNCTION webhook_outbox_session_event();
