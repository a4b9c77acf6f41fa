-- Fixes found by measuring: the claim's plan, and bulk enqueue's cost.
--
-- 1. The claim as a function, so that its plan does not depend on statistics.
--
-- Right after a bulk enqueue the planner's statistics still say the queue is
-- nearly empty (autovacuum analyzes later), and it would sort every queued
-- row on each claim instead of walking actions_claim_idx in claim order and
-- stopping after `max_rows`. With sorting disabled for this one statement the
-- ordered index walk is the only plan, and it is never much worse than a
-- sort: both read at most every queued row.
--
-- Hosts call this (host/src/queue/claim.rs); so can a host written in another
-- language. It claims up to `max_rows` due rows whose (module, name) is one
-- of the served pairs (the three arrays run in parallel; `max_attempts` is
-- the action's default, written into rows that do not override it), for
-- `owner`, leased for `lease_ms` milliseconds, and returns the claimed rows.
CREATE FUNCTION cairn.claim(
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
        lease_expires_at = now() + lease_ms * interval '1 millisecond',
        attempts = a.attempts + 1,
        started_at = now(),
        max_attempts = coalesce(a.max_attempts, p.default_max_attempts)
    FROM picked p
    WHERE a.id = p.id
    RETURNING a.*
$$;

-- 2. enqueue_many walks its arrays once with unnest. The first version
-- subscripted them per row, which copies each array per row: quadratic, 6 s
-- for 50,000 rows in one call.
-- Public: enqueue many rows in one call, from arrays of equal length (NULL
-- arrays or elements take the defaults). Returns the ids in input order.
-- Rows without an idempotency key are inserted with one statement; rows with
-- one go through the idempotent path one by one.
CREATE OR REPLACE FUNCTION cairn.enqueue_many(
    modules text[],
    names text[],
    args bytea[],
    run_ats timestamptz[] DEFAULT NULL,
    delays interval[] DEFAULT NULL,
    priorities integer[] DEFAULT NULL,
    max_attempts integer[] DEFAULT NULL,
    idempotency_keys text[] DEFAULT NULL,
    timeouts_ms bigint[] DEFAULT NULL,
    initial_backoffs_ms bigint[] DEFAULT NULL,
    max_backoffs_ms bigint[] DEFAULT NULL
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(cardinality(modules), 0);
    ids bigint[];
    positions bigint[];
    keyless_ids bigint[];
BEGIN
    IF coalesce(cardinality(names), 0) <> n
       OR (args IS NOT NULL AND cardinality(args) <> n)
       OR (run_ats IS NOT NULL AND cardinality(run_ats) <> n)
       OR (delays IS NOT NULL AND cardinality(delays) <> n)
       OR (priorities IS NOT NULL AND cardinality(priorities) <> n)
       OR (max_attempts IS NOT NULL AND cardinality(max_attempts) <> n)
       OR (idempotency_keys IS NOT NULL AND cardinality(idempotency_keys) <> n)
       OR (timeouts_ms IS NOT NULL AND cardinality(timeouts_ms) <> n)
       OR (initial_backoffs_ms IS NOT NULL AND cardinality(initial_backoffs_ms) <> n)
       OR (max_backoffs_ms IS NOT NULL AND cardinality(max_backoffs_ms) <> n) THEN
        RAISE EXCEPTION 'cairn enqueue_many: every array must have as many elements as modules (%)', n
            USING ERRCODE = '22023';
    END IF;
    IF n = 0 THEN
        RETURN '{}'::bigint[];
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(modules, names) AS u(m, nm)
               WHERE m IS NULL OR nm IS NULL OR m = '' OR nm = '') THEN
        RAISE EXCEPTION 'cairn enqueue_many: module and name must be non-empty' USING ERRCODE = '22023';
    END IF;
    ids := array_fill(NULL::bigint, ARRAY[n]);
    -- Keyless rows: ids drawn in input order, one INSERT for all of them.
    -- (unnest walks the arrays once; subscripting them per row would copy
    -- them per row.)
    WITH input AS (
        SELECT u.*, nextval('cairn.actions_id_seq') AS id
        FROM unnest(modules, names, args, run_ats, delays, priorities, max_attempts,
                    idempotency_keys, timeouts_ms, initial_backoffs_ms, max_backoffs_ms)
             WITH ORDINALITY AS u(module, name, args, run_at, delay, priority, max_attempts,
                                  idempotency_key, timeout_ms, initial_backoff_ms, max_backoff_ms, i)
        WHERE u.idempotency_key IS NULL
        ORDER BY u.i
    ), ins AS (
        INSERT INTO cairn.actions
            (id, module, name, args, run_at, priority, max_attempts,
             timeout_ms, initial_backoff_ms, max_backoff_ms)
        OVERRIDING SYSTEM VALUE
        SELECT input.id, input.module, input.name, coalesce(input.args, '\x'::bytea),
               coalesce(input.run_at, now()) + coalesce(input.delay, interval '0'),
               coalesce(input.priority, 0), input.max_attempts,
               input.timeout_ms, input.initial_backoff_ms, input.max_backoff_ms
        FROM input ORDER BY input.i
    )
    SELECT array_agg(input.i ORDER BY input.i), array_agg(input.id ORDER BY input.i)
        INTO positions, keyless_ids FROM input;
    FOR k IN 1 .. coalesce(cardinality(positions), 0) LOOP
        ids[positions[k]] := keyless_ids[k];
    END LOOP;
    -- Keyed rows: the idempotent path, in input order (a key repeated in the
    -- batch yields the first row's id).
    IF idempotency_keys IS NOT NULL THEN
        FOR i IN 1 .. n LOOP
            IF idempotency_keys[i] IS NOT NULL THEN
                ids[i] := cairn._enqueue(modules[i], names[i], args[i], run_ats[i], delays[i],
                    priorities[i], max_attempts[i], idempotency_keys[i],
                    timeouts_ms[i], initial_backoffs_ms[i], max_backoffs_ms[i]);
            END IF;
        END LOOP;
    END IF;
    RETURN ids;
END $$;

