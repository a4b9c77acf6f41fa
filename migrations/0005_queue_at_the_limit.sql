-- The queue at the physical limit (issue 9). Measured changes only; each
-- says what it saves (numbers: docs/benchmarks.md, "Per-action budget").
--
-- 1. Action kinds. A claim used to match every candidate row against the
--    served (module, name) text pairs (a nested loop over unnest per row),
--    and walked the one claim index from its head, over every queued row of
--    actions the host does not serve: 20,000 such rows made each claimed
--    row cost three times the PostgreSQL CPU. Now each (module, name) has
--    an integer `kind`, the claim index leads with it, and a claim reads
--    only the kinds it serves.
-- 2. `cairn.claim` and the new `cairn.complete` are PL/pgSQL: their plans
--    are prepared once per connection instead of parsed and planned on
--    every call (a LANGUAGE sql function that cannot be inlined is).
-- 3. Wake-ups are one notification per statement, not per row: a finishing
--    batch sends its ids comma-separated on `cairn_results` (350 per
--    notification at most), and the per-row requeue trigger is folded into
--    the same statement trigger.

------------------------------------------------------------------------------
-- 1. Action kinds
------------------------------------------------------------------------------

-- One row per (module, name) ever enqueued; ids are never reused.
CREATE TABLE cairn.kinds (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    module text NOT NULL,
    name text NOT NULL,
    UNIQUE (module, name)
);

-- The kind of (module, name), created on first use. Concurrent first uses
-- agree: the loser of the insert race reads the winner's row.
CREATE FUNCTION cairn._kind(p_module text, p_name text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    k integer;
BEGIN
    SELECT id INTO k FROM cairn.kinds WHERE module = p_module AND name = p_name;
    IF k IS NULL THEN
        INSERT INTO cairn.kinds (module, name) VALUES (p_module, p_name)
        ON CONFLICT (module, name) DO NOTHING
        RETURNING id INTO k;
        IF k IS NULL THEN
            SELECT id INTO k FROM cairn.kinds WHERE module = p_module AND name = p_name;
        END IF;
    END IF;
    RETURN k;
END $$;

-- Set by every enqueue path; rows finished before this migration keep NULL
-- (only queued and running rows are ever claimed or requeued).
ALTER TABLE cairn.actions ADD COLUMN kind integer;

UPDATE cairn.actions SET kind = cairn._kind(module, name)
WHERE status IN ('queued', 'running');

-- A row inserted without a kind (not through cairn's functions) gets one,
-- so that it can be claimed. The WHEN keeps the common path trigger-free.
CREATE FUNCTION cairn._fill_kind() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.kind := cairn._kind(NEW.module, NEW.name);
    RETURN NEW;
END $$;

CREATE TRIGGER actions_fill_kind
    BEFORE INSERT ON cairn.actions
    FOR EACH ROW
    WHEN (NEW.kind IS NULL)
    EXECUTE FUNCTION cairn._fill_kind();

CREATE TRIGGER actions_refill_kind
    BEFORE UPDATE OF module, name ON cairn.actions
    FOR EACH ROW
    WHEN (OLD.module IS DISTINCT FROM NEW.module OR OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION cairn._fill_kind();

-- Queued rows by kind, in claim order within a kind. Replaces
-- actions_claim_idx: a claim walks one range per served kind and never sees
-- another kind's rows.
CREATE INDEX actions_claim_kind_idx ON cairn.actions (kind, priority, run_at, id)
    WHERE status = 'queued';
DROP INDEX cairn.actions_claim_idx;

------------------------------------------------------------------------------
-- Enqueue: the two insert paths set the kind
------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION cairn._enqueue(
    p_module text, p_name text, p_args bytea, p_run_at timestamptz, p_delay interval,
    p_priority integer, p_max_attempts integer, p_idempotency_key text,
    p_timeout_ms bigint, p_initial_backoff_ms bigint, p_max_backoff_ms bigint
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
    k integer;
BEGIN
    IF p_module IS NULL OR p_name IS NULL OR p_module = '' OR p_name = '' THEN
        RAISE EXCEPTION 'cairn enqueue: module and name must be non-empty' USING ERRCODE = '22023';
    END IF;
    k := cairn._kind(p_module, p_name);
    LOOP
        INSERT INTO cairn.actions AS a
            (module, name, kind, args, run_at, priority, max_attempts, idempotency_key,
             timeout_ms, initial_backoff_ms, max_backoff_ms)
        VALUES (p_module, p_name, k, coalesce(p_args, '\x'::bytea),
                coalesce(p_run_at, now()) + coalesce(p_delay, interval '0'),
                coalesce(p_priority, 0), p_max_attempts, p_idempotency_key,
                p_timeout_ms, p_initial_backoff_ms, p_max_backoff_ms)
        ON CONFLICT (idempotency_key)
            WHERE idempotency_key IS NOT NULL AND status IN ('queued', 'running')
            DO NOTHING
        RETURNING a.id INTO new_id;
        IF new_id IS NOT NULL THEN
            RETURN new_id;
        END IF;
        -- The key is live: return its row. Each statement here sees a fresh
        -- snapshot, so if that row finished in between, the insert is tried
        -- again and now succeeds.
        SELECT a.id INTO new_id FROM cairn.actions a
        WHERE a.idempotency_key = p_idempotency_key AND a.status IN ('queued', 'running');
        IF new_id IS NOT NULL THEN
            RETURN new_id;
        END IF;
    END LOOP;
END $$;

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
    -- Keyless rows: ids drawn in input order, one INSERT for all of them,
    -- the kind looked up once per distinct (module, name).
    WITH input AS (
        SELECT u.*, nextval('cairn.actions_id_seq') AS id
        FROM unnest(modules, names, args, run_ats, delays, priorities, max_attempts,
                    idempotency_keys, timeouts_ms, initial_backoffs_ms, max_backoffs_ms)
             WITH ORDINALITY AS u(module, name, args, run_at, delay, priority, max_attempts,
                                  idempotency_key, timeout_ms, initial_backoff_ms, max_backoff_ms, i)
        WHERE u.idempotency_key IS NULL
        ORDER BY u.i
    ), kinds AS (
        SELECT d.module, d.name, cairn._kind(d.module, d.name) AS kind
        FROM (SELECT DISTINCT input.module, input.name FROM input) d
    ), ins AS (
        INSERT INTO cairn.actions
            (id, module, name, kind, args, run_at, priority, max_attempts,
             timeout_ms, initial_backoff_ms, max_backoff_ms)
        OVERRIDING SYSTEM VALUE
        SELECT input.id, input.module, input.name, kinds.kind, coalesce(input.args, '\x'::bytea),
               coalesce(input.run_at, now()) + coalesce(input.delay, interval '0'),
               coalesce(input.priority, 0), input.max_attempts,
               input.timeout_ms, input.initial_backoff_ms, input.max_backoff_ms
        FROM input JOIN kinds ON kinds.module = input.module AND kinds.name = input.name
        ORDER BY input.i
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

------------------------------------------------------------------------------
-- 2. Claim and complete, with prepared plans
------------------------------------------------------------------------------

-- Public (hosts in any language): claim up to `max_rows` due rows of the
-- served (module, name) pairs for `owner`, leased for `lease_ms`; same
-- contract as before (0002). One range of actions_claim_kind_idx per served
-- kind, `FOR UPDATE SKIP LOCKED` inside it, then the best `max_rows` over
-- all kinds. A row locked in a kind's range but not among the best is only
-- skipped by concurrent claimers until this statement commits.
--
-- Scans are pinned to the index (enable_seqscan/bitmapscan off): right after
-- a bulk enqueue the planner's statistics still describe an empty queue.
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

-- Public (hosts in any language): write the outcomes of rows `owner`
-- holds, in one statement, and return the ids written. The arrays run in
-- parallel; `outcomes` are 'succeeded' (payload = result), 'failed'
-- (payload = error), 'retry' (payload = error, due again after
-- backoffs_ms), 'requeue' (given back, attempt not counted). A row is
-- written only while `owner` holds its lease (so a rescued or cancelled
-- row is left alone and its id is not returned); a duplicated id takes its
-- first outcome; locks are taken in id order (no deadlocks between
-- completers). Same statement as host/src/queue/complete.rs had.
CREATE FUNCTION cairn.complete(
    owner text,
    ids bigint[],
    outcomes text[],
    payloads bytea[],
    backoffs_ms bigint[] DEFAULT NULL
) RETURNS SETOF bigint
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    IF coalesce(cardinality(outcomes), 0) <> coalesce(cardinality(ids), 0)
       OR (payloads IS NOT NULL AND cardinality(payloads) <> cardinality(ids))
       OR (backoffs_ms IS NOT NULL AND cardinality(backoffs_ms) <> cardinality(ids)) THEN
        RAISE EXCEPTION 'cairn complete: ids, outcomes, payloads and backoffs_ms must have the same length'
            USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(outcomes) o
               WHERE o IS NULL OR o NOT IN ('succeeded', 'failed', 'retry', 'requeue')) THEN
        RAISE EXCEPTION 'cairn complete: an outcome is not succeeded, failed, retry or requeue'
            USING ERRCODE = '22023';
    END IF;
    -- One UPDATE, driven by the ids in ascending order through a nested
    -- loop on the primary key (the only join the settings above leave; it
    -- follows a row's update chain, so a renewal committed meanwhile is no
    -- obstacle): rows are locked in id order, so completers cannot
    -- deadlock, and a row is written only where `owner` holds its lease
    -- (`lease_owner = owner` implies running, by the table's CHECK). No
    -- separate FOR UPDATE pass: it cost a second index lookup per row
    -- (21 instead of 15 buffer accesses per row).
    RETURN QUERY
    WITH input AS (
        SELECT DISTINCT ON (u.id) u.id, u.outcome, u.payload, coalesce(u.backoff_ms, 0) AS backoff_ms
        FROM unnest(complete.ids, complete.outcomes, complete.payloads, complete.backoffs_ms)
             WITH ORDINALITY AS u(id, outcome, payload, backoff_ms, i)
        ORDER BY u.id, u.i
    )
    UPDATE cairn.actions a
    SET status = CASE l.outcome WHEN 'succeeded' THEN 'succeeded'
                                WHEN 'failed' THEN 'failed'
                                ELSE 'queued' END,
        result = CASE WHEN l.outcome = 'succeeded' THEN l.payload ELSE a.result END,
        error = CASE WHEN l.outcome IN ('failed', 'retry') THEN l.payload ELSE a.error END,
        run_at = CASE WHEN l.outcome = 'retry'
                      THEN now() + l.backoff_ms * interval '1 millisecond'
                      ELSE a.run_at END,
        attempts = CASE WHEN l.outcome = 'requeue' THEN greatest(a.attempts - 1, 0)
                        ELSE a.attempts END,
        lease_owner = NULL,
        lease_expires_at = NULL,
        finished_at = CASE WHEN l.outcome IN ('succeeded', 'failed') THEN now() END
    FROM input l
    WHERE a.id = l.id AND a.lease_owner = complete.owner
    RETURNING a.id;
END $$;

------------------------------------------------------------------------------
-- 3. One notification per statement
------------------------------------------------------------------------------

DROP TRIGGER actions_notify_finished ON cairn.actions;
DROP TRIGGER actions_notify_requeued ON cairn.actions;
DROP FUNCTION cairn._notify_finished();
DROP FUNCTION cairn._notify_requeued();

-- After any statement that changes `status`:
-- * `cairn_results`: the ids of the rows it finished (succeeded, failed,
--   cancelled), ascending, comma-separated, at most 350 per notification.
-- * `cairn_actions`: the distinct `module:name` keys of rows it put back in
--   the queue, due now (retry without delay, requeue, rescue) — '' when they
--   would not fit a notification.
-- (A transition table cannot go with `UPDATE OF status`, so every UPDATE
-- statement fills one; renewals and the like touch few rows.)
CREATE FUNCTION cairn._notify_status() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    chunk text;
    keys text;
BEGIN
    FOR chunk IN
        SELECT string_agg(id::text, ',' ORDER BY id)
        FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / 350 AS g
              FROM new_rows WHERE status IN ('succeeded', 'failed', 'cancelled')) s
        GROUP BY g ORDER BY g
    LOOP
        PERFORM pg_notify('cairn_results', chunk);
    END LOOP;
    SELECT string_agg(k, ',') INTO keys
    FROM (SELECT DISTINCT module || ':' || name AS k
          FROM new_rows WHERE status = 'queued' AND run_at <= now()) s;
    IF keys IS NOT NULL THEN
        PERFORM pg_notify('cairn_actions', CASE WHEN octet_length(keys) < 7000 THEN keys ELSE '' END);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER actions_notify_status
    AFTER UPDATE ON cairn.actions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cairn._notify_status();
