-- What each host has loaded, so that `cairn plugins` and the dashboard can
-- show an operator which version of a plugin every running host serves (did
-- the reload take effect everywhere?).
--
-- A JSON array, one object per plugin file the host knows:
--   {"file": "greet.wasm", "digest": "<sha-256 hex>", "module": "greet",
--    "actions": ["hello"], "rejected": null}
-- `digest`, `module` and `actions` describe the version that serves (null
-- and [] when none does); `rejected` is null, or, when the file's latest
-- content was refused, {"digest": ..., "reason": "(<phase>) <why>"}.
-- Written by the host's worker with every heartbeat (the worker is the one
-- writer of a host's row: host/src/worker.rs), so it is current within a
-- heartbeat of any reload. Never holds config values or secrets.
ALTER TABLE cairn.hosts ADD COLUMN plugins jsonb NOT NULL DEFAULT '[]';

-- The host that ran (or runs) a row's latest attempt. `lease_owner` says it
-- only while the row is running; operators want to know where a failed row
-- failed. Set by the claim, in the UPDATE it makes anyway (the same tuple is
-- written either way), and kept afterwards.
ALTER TABLE cairn.actions ADD COLUMN last_host text;

-- cairn.claim as in 0002, plus `last_host = owner`.
CREATE OR REPLACE FUNCTION cairn.claim(
    owner text,
    max_rows integer,
    lease_ms bigint,
    modules text[],
    names text[],
    max_attempts integer[]
) RETURNS SETOF cairn.actions
LANGUAGE sql
SET enable_sort = off
AS $$
    WITH served AS (
        SELECT * FROM unnest(modules, names, max_attempts) AS s(module, name, max_attempts)
    ), picked AS (
        SELECT a.id, s.max_attempts AS default_max_attempts
        FROM cairn.actions a
        JOIN served s ON s.module = a.module AND s.name = a.name
        WHERE a.status = 'queued' AND a.run_at <= now()
        ORDER BY a.priority, a.run_at, a.id
        LIMIT max_rows
        FOR UPDATE OF a SKIP LOCKED
    )
    UPDATE cairn.actions a
    SET status = 'running',
        lease_owner = owner,
        last_host = owner,
        lease_expires_at = now() + lease_ms * interval '1 millisecond',
        attempts = a.attempts + 1,
        started_at = now(),
        max_attempts = coalesce(a.max_attempts, p.default_max_attempts)
    FROM picked p
    WHERE a.id = p.id
    RETURNING a.*
$$;
