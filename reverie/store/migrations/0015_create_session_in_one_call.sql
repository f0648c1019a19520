-- Issue 15: a session is created in one call (store/sessions.py `create_with_events`) instead of
-- a transaction of four statements: its row, the `session.created` announcement (as
-- store/webhooks.py `record` writes it), and its initial events appended under its count of 0
-- (reverie_append_events, migration 0013; no one else can see the row yet). Answers the row as
-- written, its event count included.
CREATE FUNCTION reverie_create_session(
    p_id text, p_agent text, p_version integer, p_environment text, p_title text,
    p_metadata jsonb, p_resources jsonb, p_running boolean,
    p_announcement text, p_announcement_data text,
    p_ids text[], p_types text[], p_payloads text[], p_stamps timestamptz[], p_channel text
) RETURNS sessions
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_row sessions;
BEGIN
    INSERT INTO sessions (id, agent_id, agent_version, environment_id, title, metadata,
                          resources, status, running_since)
    VALUES (p_id, p_agent, p_version, p_environment, p_title, p_metadata, p_resources,
            CASE WHEN p_running THEN 'running' ELSE 'idle' END,
            CASE WHEN p_running THEN now() END);
    INSERT INTO webhook_deliveries (id, event_id, endpoint_id, event_type, data, created_at)
    SELECT 'whd_' || md5(p_announcement || '/' || e.id), p_announcement, e.id,
           'session.created', p_announcement_data::jsonb, now()
    FROM webhook_endpoints e
    WHERE e.state = 'enabled' AND 'session.created' = ANY (e.enabled_events)
    FOR KEY SHARE OF e SKIP LOCKED  -- an endpoint a delete holds is skipped (see 0010)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        PERFORM pg_notify('reverie_webhooks', '');
    END IF;
    IF cardinality(p_ids) > 0 THEN
        PERFORM reverie_append_events(p_id, p_ids, p_types, p_payloads, p_stamps, 0, p_channel);
    END IF;
    SELECT * INTO v_row FROM sessions WHERE id = p_id;
    RETURN v_row;
END $$;
