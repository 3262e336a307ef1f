-- EXPLAIN (ANALYZE, BUFFERS) of the statements one pairing create runs, against a seeded benchmark
-- database (KEEP=1 scripts/bench-pairings.sh, then: psql -d vp_bench -f this file). The SQL is
-- the service's own (crates/persistence/src/pairings.rs: LOCK_STATEMENT, STATE_STATEMENT,
-- find_candidates, INSERT_STATEMENT; crates/persistence/src/numbers.rs: LoadLedger::flush),
-- prepared here with the same parameters; keep it in step.
--
-- People: a seeded US driver with 10 active pairings (16462000000), a seeded US passenger
-- (19172000000), and someone never seen (16467770000). Everything that writes is rolled back.

\set ON_ERROR_STOP on
\pset pager off
SET client_min_messages = warning;
-- Generic plans, as the service's prepared statements get after five executions.
SET plan_cache_mode = force_generic_plan;

PREPARE lock_statement(text[], text) AS
SELECT pg_advisory_xact_lock(k)
   FROM (SELECT hashtextextended('reference:' || $2, 0) AS k, 0 AS o WHERE $2::text IS NOT NULL
         UNION ALL
         SELECT hashtextextended('number:' || n, 0), 1 FROM unnest($1::text[]) AS n) AS keys
  ORDER BY o, k;

PREPARE state_statement(text[], text, float8, text[], text[]) AS
WITH released AS (
    UPDATE pairings SET released = true
     WHERE NOT released AND expires_at <= now()
       AND id IN (SELECT pairing_id FROM participants
                   WHERE number = ANY($1) AND NOT released
                  UNION ALL
                  SELECT id FROM pairings WHERE reference = $2 AND NOT released)
    RETURNING id
)
SELECT 'pool' AS kind, NULL::text AS person, number, NULL::text AS other,
       NULL::boolean AS active, state, reserved, country
  FROM pool_numbers WHERE number = ANY($1::text[] || $4::text[])
UNION ALL
SELECT 'reference', NULL, id::text, NULL, NULL, NULL, NULL, NULL
  FROM pairings WHERE reference = $2 AND NOT released AND active_during @> now()
UNION ALL
SELECT 'history', me.n, h.proxy_number, h.counterpart_number, upper(h.active_during) > now(),
       NULL, NULL, NULL
  FROM unnest($1::text[]) AS me (n)
 CROSS JOIN LATERAL (SELECT proxy_number, counterpart_number, active_during FROM participants
                      WHERE number = me.n
                        AND upper(active_during) > now() - make_interval(secs => $3)) h
UNION ALL
SELECT 'sticky', x.me, s.proxy_number, x.other, NULL, n.state, n.reserved, n.country
  FROM unnest($1::text[], $5::text[]) AS x (me, other)
 CROSS JOIN LATERAL (SELECT proxy_number FROM participants
                      WHERE number = x.me AND counterpart_number = x.other
                        AND upper(active_during) IS NOT NULL
                      ORDER BY upper(active_during) DESC LIMIT 1) s
  LEFT JOIN pool_numbers n ON n.number = s.proxy_number;

PREPARE candidates(text, text[], bigint, text, text[], bigint) AS
(SELECT 0::int AS k, number, active_load FROM pool_numbers
  WHERE state = 'active' AND NOT reserved AND country = $1 AND number <> ALL($2)
  ORDER BY load_bucket, number LIMIT $3)
UNION ALL
(SELECT 1::int AS k, number, active_load FROM pool_numbers
  WHERE state = 'active' AND NOT reserved AND country = $4 AND number <> ALL($5)
  ORDER BY load_bucket, number LIMIT $6);

PREPARE insert_statement(uuid, text, float8, text, text, text, text, text, text) AS
WITH p AS (
    INSERT INTO pairings (id, reference, expires_at)
    VALUES ($1, $2, now() + make_interval(secs => $3))
    RETURNING id, reference, created_at, expires_at, closed_at
), x AS (
    INSERT INTO participants
        (pairing_id, position, number, label, proxy_number, counterpart_number, counterpart_proxy)
    SELECT p.id, v.position, v.number, v.label, v.proxy, v.counterpart, v.counterpart_proxy
      FROM p, (VALUES (0::smallint, $4::text, $5::text, $6::text, $7::text, $9::text),
                      (1::smallint, $7::text, $8::text, $9::text, $4::text, $6::text))
              AS v (position, number, label, proxy, counterpart, counterpart_proxy)
)
SELECT p.id, p.reference, p.created_at, p.expires_at, p.closed_at, now() AS read_at,
       $4::text AS a_number, $5::text AS a_label, $6::text AS a_proxy,
       $7::text AS b_number, $8::text AS b_label, $9::text AS b_proxy
  FROM p;

PREPARE flush(text[], bigint[]) AS
UPDATE pool_numbers n SET active_load = GREATEST(n.active_load + d.delta, 0)
  FROM (SELECT number, delta FROM unnest($1::text[], $2::bigint[])
           AS u (number, delta) ORDER BY number) d
 WHERE n.number = d.number;

BEGIN;
\echo '--- 1. the advisory locks: reference, then both people'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
EXECUTE lock_statement(ARRAY['16462000000', '16467770000'], 'bench-explain');

\echo '--- 2. release, pool membership, the reference, history and sticky numbers of both people'
\echo '---    (a driver with 10 active pairings and someone never seen)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
EXECUTE state_statement(ARRAY['16462000000', '16467770000'], 'bench-explain', 86400,
                        ARRAY[]::text[], ARRAY['16467770000', '16462000000']);
\echo '---    the same, for a seeded reference (its pairing is found)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
EXECUTE state_statement(ARRAY['16462000000', '19172000000'], 'seed-0', 86400,
                        ARRAY[]::text[], ARRAY['19172000000', '16462000000']);

\echo '--- 3. both first searches: least loaded free US numbers, the driver\'s 10 held ones excluded'
SELECT array_agg(proxy_number ORDER BY proxy_number) AS held FROM participants
 WHERE number = '16462000000' AND upper(active_during) > now() \gset
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
EXECUTE candidates('US', :'held', 16 + 64, 'US', ARRAY[]::text[], 16 + 64);

\echo '--- 4. the pairing and its two participants (triggers, foreign keys, unique indexes)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
EXECUTE insert_statement('ffffffff-0000-7000-8000-000000000001', 'bench-explain', 3600,
                         '16467770000', 'driver', '12125554999',
                         '16467770001', 'passenger', '12125554998');

\echo '--- the load counter flush (a background task, every 100 ms): 100 numbers'
SELECT array_agg('1212555' || lpad(i::text, 4, '0') ORDER BY i) AS flushed
  FROM generate_series(4000, 4099) i \gset
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
EXECUTE flush(:'flushed', array_fill(1::bigint, ARRAY[100]));
ROLLBACK;

\echo '--- the answer webhook route lookup'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT pairing_id, counterpart_number, counterpart_proxy, active_during @> now()
  FROM participants
 WHERE proxy_number = '12125550000' AND number = '16462000000' AND upper(active_during) IS NOT NULL
 ORDER BY upper(active_during) DESC LIMIT 1;

\echo '--- sizes'
SELECT relname, pg_size_pretty(pg_relation_size(oid)) AS size,
       (SELECT n_dead_tup FROM pg_stat_user_tables s WHERE s.relid = c.oid) AS dead_tuples
  FROM pg_class c
 WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'i')
   AND (relname LIKE 'p%')
 ORDER BY pg_relation_size(oid) DESC;
