-- Stored objects in the SDK's shapes (anthropic 2.14, `anthropic.types.beta`), so that what
-- Reverie answers is what it stores. Readers also accept the older shapes (a worker of the
-- previous version may write them during an upgrade); this rewrites what is already there.

-- Agents ------------------------------------------------------------------------------------
-- `model.effort` as `{"type": level}` rather than a bare level.
UPDATE agent_versions
SET config = jsonb_set(config, '{model,effort}',
                       jsonb_build_object('type', config #>> '{model,effort}'))
WHERE jsonb_typeof(config #> '{model,effort}') = 'string';

-- `execution_identity`, always present.
UPDATE agent_versions
SET config = config || '{"execution_identity": {"type": "service_account"}}'
WHERE NOT config ? 'execution_identity';

-- Tools: a toolset's configs carry `type` (the tool's name), `enabled` and `permission_policy`
-- (resolved against `default_config`, which is always present); a custom tool's input schema
-- says `"type": "object"`.
UPDATE agent_versions v
SET config = jsonb_set(v.config, '{tools}', (
    SELECT coalesce(jsonb_agg(
        CASE
        WHEN t.tool ->> 'type' = 'agent_toolset_20260401' THEN
            t.tool || jsonb_build_object(
                'default_config', d.default_config,
                'configs', (
                    SELECT coalesce(jsonb_agg(
                        c.conf || jsonb_build_object(
                            'type', c.conf ->> 'name',
                            'enabled', CASE WHEN jsonb_typeof(c.conf -> 'enabled') = 'boolean'
                                            THEN c.conf -> 'enabled'
                                            ELSE d.default_config -> 'enabled' END,
                            'permission_policy',
                                CASE WHEN jsonb_typeof(c.conf -> 'permission_policy') = 'object'
                                     THEN c.conf -> 'permission_policy'
                                     ELSE d.default_config -> 'permission_policy' END)
                        ORDER BY c.ord), '[]'::jsonb)
                    FROM jsonb_array_elements(
                        CASE WHEN jsonb_typeof(t.tool -> 'configs') = 'array'
                             THEN t.tool -> 'configs' ELSE '[]'::jsonb END
                    ) WITH ORDINALITY AS c (conf, ord)))
        WHEN t.tool ->> 'type' = 'custom'
             AND jsonb_typeof(t.tool -> 'input_schema') = 'object'
             AND NOT (t.tool -> 'input_schema') ? 'type' THEN
            jsonb_set(t.tool, '{input_schema}', '{"type": "object"}'::jsonb || (t.tool -> 'input_schema'))
        ELSE t.tool
        END
        ORDER BY t.ord), '[]'::jsonb)
    FROM jsonb_array_elements(v.config -> 'tools') WITH ORDINALITY AS t (tool, ord)
    CROSS JOIN LATERAL (
        SELECT jsonb_build_object(
            'enabled', CASE WHEN jsonb_typeof(t.tool #> '{default_config,enabled}') = 'boolean'
                            THEN t.tool #> '{default_config,enabled}' ELSE 'true'::jsonb END,
            'permission_policy',
                CASE WHEN jsonb_typeof(t.tool #> '{default_config,permission_policy}') = 'object'
                     THEN t.tool #> '{default_config,permission_policy}'
                     ELSE '{"type": "always_allow"}'::jsonb END
        ) AS default_config
    ) AS d
))
WHERE jsonb_typeof(v.config -> 'tools') = 'array';

-- Environments ------------------------------------------------------------------------------
-- `networking` keeps `{type, allowed_hosts}` (every version reads that); the rest of the
-- SDK's `config` gets columns of its own.
ALTER TABLE environments
    ADD COLUMN allow_mcp_servers boolean NOT NULL DEFAULT false,
    ADD COLUMN allow_package_managers boolean NOT NULL DEFAULT false,
    ADD COLUMN packages jsonb NOT NULL DEFAULT
        '{"type": "packages", "apt": [], "cargo": [], "gem": [], "go": [], "npm": [], "pip": []}';

UPDATE environments
SET networking = jsonb_build_object(
        'type', 'limited',
        'allowed_hosts', CASE WHEN jsonb_typeof(networking -> 'allowed_hosts') = 'array'
                              THEN networking -> 'allowed_hosts' ELSE '[]'::jsonb END)
WHERE networking ->> 'type' = 'limited';

-- Environments can be deleted now; one that a session names cannot (NOT VALID: rows written
-- before are not re-checked, every new session and every delete is).
ALTER TABLE sessions
    ADD CONSTRAINT sessions_environment_fk FOREIGN KEY (environment_id)
    REFERENCES environments (id) NOT VALID;

-- Events ------------------------------------------------------------------------------------
-- `agent.tool_use.evaluated_permission` is "allow" | "ask" | "deny", beside `evaluation`, the
-- policy that produced it (an event recorded before `evaluation` existed reads as the policy
-- its permission implies, as the SDK documents).
UPDATE events
SET payload = payload
    || jsonb_build_object('evaluated_permission', payload #> '{evaluated_permission,type}')
    || CASE payload #>> '{evaluated_permission,type}'
           WHEN 'allow' THEN '{"evaluation": {"type": "always_allow"}}'::jsonb
           WHEN 'ask' THEN '{"evaluation": {"type": "always_ask"}}'::jsonb
           ELSE '{}'::jsonb END
WHERE type = 'agent.tool_use'
  AND jsonb_typeof(payload -> 'evaluated_permission') = 'object';
