-- Retention (issue 9): finished rows are deleted after a configurable time,
-- in small batches (host/src/queue/prune.rs, host/src/retention.rs).
--
-- Finding the old finished rows must not cost a scan of the table, which
-- holds millions of them when retention is long. This index holds finished
-- row versions only (the partial predicate), by status then finish time: a
-- prune batch reads exactly the rows it deletes, oldest first, per status
-- asked for. Queued and running versions — every claim's and completion's
-- new tuple until the row finishes — get no entry, so the claim path pays
-- nothing for it; each completion adds one entry (its row's new, finished
-- version). Measured cost in docs/benchmarks.md ("Retention").
--
-- Built without CONCURRENTLY (migrations run in a transaction): on an
-- existing installation with many finished rows the first start after the
-- upgrade blocks writes to cairn.actions while it builds (measured: 10.6 s
-- for 6.6 million finished rows on a loaded 2-core machine, about 1.6 s per
-- million).
CREATE INDEX actions_finished_idx ON cairn.actions (status, finished_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled');

------------------------------------------------------------------------------
-- A claim over several kinds locks only the rows it takes
------------------------------------------------------------------------------

-- Same contract as 0005's cairn.claim, plus `last_host = owner` (the
-- column 0006 adds) in both of its UPDATEs. 0005 locked up to `max_rows`
-- candidates in *each* served kind's range and kept the best `max_rows`
-- over all kinds: with k kinds due at once it locked (and wrote a lock
-- record for) up to k times the rows it claimed, and a concurrent claimer
-- skipped the losers until the statement committed.
--
-- Now:
-- 1. The served kinds with a due row are found first (one index probe
--    each). With one such kind, 0005's statement takes its rows: it locks
--    exactly what it claims.
-- 2. With several, the key (priority, run_at, id) of the `max_rows`-th best
--    due row across them is found without locking, and each kind's range is
--    locked only up to that key: about `max_rows` rows in all.
-- 3. If a concurrent claimer took some of those rows meanwhile (SKIP
--    LOCKED passed over them), the shortfall is claimed from beyond the key
--    with 0005's statement — so a claim still returns as many rows as are
--    free, as before.
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
DECLARE
    due_kinds integer[];
    defaults integer[];
    cut_priority integer;
    cut_run_at timestamptz;
    cut_id bigint;
    claimed bigint := 0;
BEGIN
    IF coalesce(max_rows, 0) <= 0 THEN
        RETURN;
    END IF;
    SELECT array_agg(k.id), array_agg(s.max_attempts) INTO due_kinds, defaults
    FROM unnest(claim.modules, claim.names, claim.max_attempts) AS s(module, name, max_attempts)
    JOIN cairn.kinds k ON k.module = s.module AND k.name = s.name
    -- One index probe per served kind: a LATERAL ... LIMIT 1, not EXISTS.
    -- With statistics taken while the queue was empty, the planner turned
    -- EXISTS into a hashed semi-join that read every queued row of the
    -- served kinds (86,000 per claim, measured with auto_explain: PostgreSQL
    -- CPU per action went from 31 to 120-220 µs). A LIMIT inside LATERAL
    -- cannot be flattened into such a join.
    CROSS JOIN LATERAL (SELECT 1 FROM cairn.actions a
                        WHERE a.kind = k.id AND a.status = 'queued' AND a.run_at <= now()
                        LIMIT 1) AS due;
    IF due_kinds IS NULL THEN
        RETURN;
    END IF;

    IF cardinality(due_kinds) > 1 THEN
        SELECT c.priority, c.run_at, c.id INTO cut_priority, cut_run_at, cut_id
        FROM unnest(due_kinds) AS s(kind)
        CROSS JOIN LATERAL (
            SELECT a.priority, a.run_at, a.id
            FROM cairn.actions a
            WHERE a.kind = s.kind AND a.status = 'queued' AND a.run_at <= now()
            ORDER BY a.priority, a.run_at, a.id
            LIMIT claim.max_rows
        ) c
        ORDER BY c.priority, c.run_at, c.id
        OFFSET claim.max_rows - 1
        LIMIT 1;
    END IF;

    IF cut_id IS NOT NULL THEN
        -- Step 2: lock each kind's range only up to the cut.
        RETURN QUERY
        WITH picked AS (
            SELECT c.ctid, c.default_max_attempts
            FROM unnest(due_kinds, defaults) AS s(kind, max_attempts)
            CROSS JOIN LATERAL (
                SELECT a.ctid, a.id, a.priority, a.run_at, s.max_attempts AS default_max_attempts
                FROM cairn.actions a
                WHERE a.kind = s.kind AND a.status = 'queued' AND a.run_at <= now()
                  AND (a.priority, a.run_at, a.id) <= (cut_priority, cut_run_at, cut_id)
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
        WHERE a.ctid = p.ctid
        RETURNING a.*;
        GET DIAGNOSTICS claimed = ROW_COUNT;
        IF claimed >= claim.max_rows THEN
            RETURN;
        END IF;
    END IF;

    -- Step 1 (one due kind, or fewer due rows than max_rows), or step 3
    -- (the shortfall): 0005's statement. Rows claimed above are `running`
    -- by now, so they are not taken twice.
    RETURN QUERY
    WITH picked AS (
        SELECT c.ctid, c.default_max_attempts
        FROM unnest(due_kinds, defaults) AS s(kind, max_attempts)
        CROSS JOIN LATERAL (
            SELECT a.ctid, a.id, a.priority, a.run_at, s.max_attempts AS default_max_attempts
            FROM cairn.actions a
            WHERE a.kind = s.kind AND a.status = 'queued' AND a.run_at <= now()
            ORDER BY a.priority, a.run_at, a.id
            LIMIT claim.max_rows - claimed
            FOR UPDATE OF a SKIP LOCKED
        ) c
        ORDER BY c.priority, c.run_at, c.id
        LIMIT claim.max_rows - claimed
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
    -- The locked version itself, by its tuple id (see 0005).
    WHERE a.ctid = p.ctid
    RETURNING a.*;
END $$;
