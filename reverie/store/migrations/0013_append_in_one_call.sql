-- Issue 15: fewer round trips per turn. Two steps that took two statements each (a lock, then
-- what must run under it) become one call each, with the very same statements inside: in READ
-- COMMITTED each statement of a VOLATILE function takes a fresh snapshot, as each statement a
-- client sends does, so what runs after the lock sees every commit made before it was granted.

-- store/events.py `append`: lock the session row and read its count (unless the caller passes
-- the count of a row it inserted in this very transaction), then the statement `append` ran
-- before (the rows not recorded yet, numbered on from the count, the new count, the NOTIFY).
-- Answers the ids inserted ('{}' when none was new), or NULL when there is no such session.
CREATE FUNCTION reverie_append_events(
    p_session text, p_ids text[], p_types text[], p_payloads text[], p_stamps timestamptz[],
    p_count integer, p_channel text
) RETURNS text[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_count integer := p_count;
    v_ids text[];
BEGIN
    IF v_count IS NULL THEN
        SELECT event_count INTO v_count FROM sessions WHERE id = p_session FOR UPDATE;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
    END IF;
    WITH fresh AS (
      SELECT t.id, t.type, t.payload, t.processed_at, row_number() OVER (ORDER BY t.ord) AS n
      FROM unnest(p_ids, p_types, p_payloads, p_stamps)
           WITH ORDINALITY AS t(id, type, payload, processed_at, ord)
      WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = t.id)
    ), ins AS (
      INSERT INTO events (id, session_id, position, type, payload, processed_at)
      SELECT fresh.id, p_session, v_count + fresh.n, fresh.type, fresh.payload::jsonb,
             fresh.processed_at
      FROM fresh
      RETURNING events.id
    ), total AS (SELECT count(*)::int AS n, array_agg(ins.id) AS ids FROM ins)
    UPDATE sessions SET event_count = v_count + total.n, updated_at = now()
    FROM total
    WHERE sessions.id = p_session AND total.n > 0
      AND pg_notify(p_channel, p_session || ' ' || (v_count + total.n)) IS NOT NULL
    RETURNING total.ids INTO v_ids;
    RETURN coalesce(v_ids, '{}');
END $$;

-- activities/model.py `_commit`: whether a user input reached the session after the event
-- `p_after` (the step's span start), checked under the session row's lock, which every append
-- takes: an input recorded after this transaction commits finds the session idle. NULL when
-- there is no such session.
CREATE FUNCTION reverie_input_since(p_session text, p_after text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM sessions WHERE id = p_session FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN EXISTS (
        SELECT 1 FROM events
        WHERE session_id = p_session AND type LIKE 'user.%'
          AND position > (SELECT position FROM events WHERE id = p_after)
    );
END $$;
