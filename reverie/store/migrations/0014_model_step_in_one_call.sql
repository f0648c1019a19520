-- Issue 15: a model step opens and commits in one call each (store/steps.py), instead of a
-- transaction of three to six statements: every statement was a round trip, and a round trip
-- costs the worker and PostgreSQL about as much CPU as the statement's own work. The statements
-- inside are the ones the worker sent, in the same order; in READ COMMITTED each statement of a
-- VOLATILE function takes a fresh snapshot, as each statement a client sends does.

-- The step's new inputs into the transcript (user rows, in the order given), then its span's
-- start event appended (reverie_append_events, migration 0013). Answers what that answers.
CREATE FUNCTION reverie_open_step(
    p_session text, p_entry_ids text[], p_contents text[],
    p_ids text[], p_types text[], p_payloads text[], p_stamps timestamptz[], p_channel text
) RETURNS text[]
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO transcript (id, session_id, role, content)
    SELECT t.id, p_session, 'user', t.content::jsonb
    FROM unnest(p_entry_ids, p_contents) WITH ORDINALITY AS t(id, content, ord)
    ORDER BY t.ord
    ON CONFLICT (id) DO NOTHING;
    RETURN reverie_append_events(p_session, p_ids, p_types, p_payloads, p_stamps, NULL, p_channel);
END $$;

-- A step's answer, once (activities/model.py `_commit`):
-- 1. the session row's lock (the lock every append takes; taken first, as settle_model_step
--    takes it, so that two writers of one step wait for each other in one order, never deadlock);
-- 2. with `p_idle_after` (the span start's event id) given, whether the answer ends the turn:
--    no user input reached the session after that event (seen under the lock: an input
--    recorded after this commits finds the session idle and starts the next turn);
-- 3. the step's result (`p_result_idle` when it ends the turn, else `p_result`), unless an
--    earlier attempt recorded one: then nothing more is written and the answer is 'recorded';
-- 4. the answer's transcript row (`<step>:out`), the events (`p_ids`...; with the idle event
--    `p_idle_id` after them when the turn ends), the usage, and the idle status and turn count
--    when it ends (as `set_status(idle, turns=p_idle_turns)` leaves a session); a thread's usage
--    is its parent session's too (`p_parent`).
-- Answers 'idle' or 'running' (the turn goes on), 'recorded', or NULL when there is no session.
CREATE FUNCTION reverie_commit_step(
    p_session text, p_step text, p_result text, p_result_idle text, p_answer text,
    p_idle_after text,
    p_ids text[], p_types text[], p_payloads text[], p_stamps timestamptz[],
    p_idle_id text, p_idle_payload text, p_idle_stamp timestamptz, p_idle_turns integer,
    p_input_tokens bigint, p_output_tokens bigint, p_cache_creation bigint, p_cache_read bigint,
    p_parent text, p_channel text
) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_count integer;
    v_idle boolean := false;
BEGIN
    SELECT event_count INTO v_count FROM sessions WHERE id = p_session FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF p_idle_after IS NOT NULL THEN
        v_idle := NOT EXISTS (
            SELECT 1 FROM events
            WHERE session_id = p_session AND type LIKE 'user.%'
              AND position > (SELECT position FROM events WHERE id = p_idle_after)
        );
    END IF;
    INSERT INTO model_steps (step_id, session_id, result)
    VALUES (p_step, p_session, (CASE WHEN v_idle THEN p_result_idle ELSE p_result END)::jsonb)
    ON CONFLICT (step_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'recorded';
    END IF;
    INSERT INTO transcript (id, session_id, role, content)
    VALUES (p_step || ':out', p_session, 'assistant', p_answer::jsonb)
    ON CONFLICT (id) DO NOTHING;
    IF v_idle THEN
        PERFORM reverie_append_events(
            p_session, p_ids || p_idle_id, p_types || 'session.status_idle'::text,
            p_payloads || p_idle_payload, p_stamps || p_idle_stamp, v_count, p_channel);
    ELSE
        PERFORM reverie_append_events(
            p_session, p_ids, p_types, p_payloads, p_stamps, v_count, p_channel);
    END IF;
    UPDATE sessions SET
        input_tokens = input_tokens + p_input_tokens,
        output_tokens = output_tokens + p_output_tokens,
        cache_creation_input_tokens = cache_creation_input_tokens + p_cache_creation,
        cache_read_input_tokens = cache_read_input_tokens + p_cache_read,
        model_requests = model_requests + 1,
        active_seconds = active_seconds + CASE
          WHEN v_idle AND running_since IS NOT NULL
          THEN extract(epoch FROM now() - running_since) ELSE 0 END,
        running_since = CASE WHEN v_idle THEN NULL ELSE running_since END,
        status = CASE WHEN v_idle THEN 'idle' ELSE status END,
        turns = CASE WHEN v_idle THEN p_idle_turns ELSE turns END,
        updated_at = now()
    WHERE id = p_session;
    IF p_parent IS NOT NULL THEN
        UPDATE sessions SET
            input_tokens = input_tokens + p_input_tokens,
            output_tokens = output_tokens + p_output_tokens,
            cache_creation_input_tokens = cache_creation_input_tokens + p_cache_creation,
            cache_read_input_tokens = cache_read_input_tokens + p_cache_read,
            model_requests = model_requests + 1,
            updated_at = now()
        WHERE id = p_parent;
    END IF;
    RETURN CASE WHEN v_idle THEN 'idle' ELSE 'running' END;
END $$;
