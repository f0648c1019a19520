-- Memory stores (issue 17): stores, their memories, every memory's versions, and the mounts of
-- stores in sessions.
--
-- Every change to a store's memories takes the store row's lock (it bumps `seq`), so the
-- changes of one store are serialised: the path-taken check, the memory limit and the version
-- order need no more than that. `seq` orders a store's versions, and a session's mount keeps
-- the last `seq` it has on disk, so bringing a mount up to date reads only the versions after
-- it (a sync costs what changed, not the size of the store).

CREATE TABLE memory_stores (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    description   text NOT NULL DEFAULT '',
    metadata      jsonb NOT NULL DEFAULT '{}',
    seq           bigint NOT NULL DEFAULT 0,     -- the last change's number
    memory_count  integer NOT NULL DEFAULT 0,    -- live memories (the per-store limit)
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    archived_at   timestamptz
);
CREATE INDEX memory_stores_created ON memory_stores (created_at DESC, id DESC);

-- Paths compare byte-wise (COLLATE "C"), so prefixes and pages follow the bytes of the path.
CREATE TABLE memories (
    id                  text PRIMARY KEY,
    memory_store_id     text NOT NULL REFERENCES memory_stores (id) ON DELETE CASCADE,
    path                text COLLATE "C" NOT NULL,
    content             text NOT NULL,
    content_sha256      text NOT NULL,
    content_size_bytes  integer NOT NULL,
    memory_version_id   text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (memory_store_id, path)
);

-- Append-only: a version is only ever changed by redaction (content and path cleared).
CREATE TABLE memory_versions (
    id                  text PRIMARY KEY,
    memory_store_id     text NOT NULL REFERENCES memory_stores (id) ON DELETE CASCADE,
    memory_id           text NOT NULL,
    seq                 bigint NOT NULL,
    operation           text NOT NULL CHECK (operation IN ('created', 'modified', 'deleted')),
    path                text COLLATE "C",
    content             text,
    content_sha256      text,
    content_size_bytes  integer,
    created_by          jsonb,
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    redacted_at         timestamptz,
    redacted_by         jsonb,
    -- Who wrote it, as columns the version filters use.
    session_id          text GENERATED ALWAYS AS (created_by ->> 'session_id') STORED,
    api_key_id          text GENERATED ALWAYS AS (created_by ->> 'api_key_id') STORED,
    UNIQUE (memory_store_id, seq)
);
CREATE INDEX memory_versions_memory ON memory_versions (memory_id, seq);
CREATE INDEX memory_versions_session ON memory_versions (session_id, memory_store_id)
    WHERE session_id IS NOT NULL;

-- A store mounted in a session: materialised once, then kept in step after each tool run.
CREATE TABLE memory_mounts (
    session_id       text NOT NULL,
    memory_store_id  text NOT NULL,
    seq              bigint NOT NULL,           -- the store's changes up to this one are on disk
    syncs            bigint NOT NULL DEFAULT 0, -- committed write-backs (ids of their versions)
    mounted_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, memory_store_id)
);

-- What the session's folder held at its last sync, per file: the base of the next change.
CREATE TABLE memory_mount_files (
    session_id         text NOT NULL,
    memory_store_id    text NOT NULL,
    path               text COLLATE "C" NOT NULL,
    memory_id          text NOT NULL,
    content_sha256     text NOT NULL,
    memory_version_id  text NOT NULL,
    PRIMARY KEY (session_id, memory_store_id, path)
);
CREATE INDEX memory_mount_files_memory
    ON memory_mount_files (session_id, memory_store_id, memory_id);
