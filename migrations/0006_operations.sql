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

-- cairn.claim exactly as in 0005 (the PL/pgSQL claim over action kinds,
-- see the comments there), plus `last_host = owner`: one more column in the
-- tuple the UPDATE writes anyway. Re-declared here rather than edited in
-- 0005, so databases that ran 0005 get it too.
CREATE OR REPLACE FUNCTION cairn.claim(
    owner text,
    max_rows integer,
    lease_ms bigint,
    modules text[],
    names text[],
    max_attempts integer[]
) RETURNS SETOF cairn.actions
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH served AS (
        SELECT k.id AS kind, s.max_attempts
        FROM unnest(claim.modules, claim.names, claim.max_attempts) AS s(module, name, max_attempts)
        JOIN cairn.kinds k ON k.module = s.module AND k.name = s.name
    ), picked AS (
        SELECT c.ctid, c.default_max_attempts
        FROM served s
        CROSS JOIN LATERAL (
            SELECT a.ctid, a.id, a.priority, a.run_at, s.max_attempts AS default_max_attempts
            FROM cairn.actions a
            WHERE a.kind = s.kind AND a.status = 'queued' AND a.run_at <= now()
            ORDER BY a.priority, a.run_at, a.id
            LIMIT claim.max_rows
            FOR UPDATE OF a SKIP LOCKED
        ) c
        ORDER BY c.priority, c.run_at, c.id
        LIMIT claim.max_rows
    )
    UPDATE cairn.actions a
    SET status = 'running',
        lease_owner = claim.owner,
        last_host = claim.owner,
        lease_expires_at = now() + claim.lease_ms * interval '1 millisecond',
        attempts = a.attempts + 1,
        started_at = now(),
        max_attempts = coalesce(a.max_attempts, p.default_max_attempts)
    FROM picked p
    -- The locked version itself, by its tuple id: no second index lookup.
    -- (Were that version newer than this statement's snapshot — the row
    -- changed and stayed queued meanwhile — the row is simply not claimed
    -- this time.)
    WHERE a.ctid = p.ctid
    RETURNING a.*;
END $$;
