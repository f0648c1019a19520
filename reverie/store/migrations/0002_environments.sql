-- Environments: where tools run and which network they may reach. One default exists so that
-- a session needs none; it reaches no network.

CREATE TABLE environments (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    description  text,
    networking   jsonb NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    archived_at  timestamptz
);

INSERT INTO environments (id, name, description, networking)
VALUES ('env_default', 'default', 'The default environment: no network access.',
        '{"type": "limited", "allowed_hosts": []}');
