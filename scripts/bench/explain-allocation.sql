-- EXPLAIN (ANALYZE, BUFFERS) of the statements one pairing create runs, against a seeded benchmark
-- database (KEEP=1 scripts/bench-pairings.sh, then: psql -d vp_bench -f this file). The SQL is
-- copied from crates/persistence/src/pairings.rs (try_create, person_history, choose_proxy,
-- find_candidates, adjust_load, find_active_by_reference); keep it in step.
--
-- People: a seeded US driver with 10 active pairings (16462000000), a seeded US passenger
-- (19172000000), and someone never seen (16467770000). Everything that writes is rolled back.

\set ON_ERROR_STOP on
\pset pager off
SET client_min_messages = warning;

\echo '--- find_active_by_reference'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT p.id, a.proxy_number, b.proxy_number
  FROM pairings p
  JOIN participants a ON a.pairing_id = p.id AND a.position = 0
  JOIN participants b ON b.pairing_id = p.id AND b.position = 1
 WHERE p.reference = 'bench-none' AND p.active_during @> now();

\echo '--- participants in the pool?'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT number FROM pool_numbers WHERE number = ANY(ARRAY['16462000000', '19172000000']);

\echo '--- person_history: held and cooling numbers of a driver with 10 active pairings'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT proxy_number, counterpart_number, upper(active_during) > now()
  FROM participants
 WHERE number = '16462000000' AND upper(active_during) > now() - make_interval(secs => 86400);

\echo '--- person_history: the number last used with this counterpart (sticky)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT proxy_number FROM participants
 WHERE number = '16462000000' AND counterpart_number = '16467770000'
   AND upper(active_during) IS NOT NULL
 ORDER BY upper(active_during) DESC LIMIT 1;

\echo '--- find_candidates: least loaded free numbers of a country, the held ones excluded'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT number, active_load FROM pool_numbers
 WHERE state = 'active' AND NOT reserved AND country = 'US'
   AND number <> ALL((SELECT array_agg(proxy_number) FROM participants
                       WHERE number = '16462000000' AND upper(active_during) > now())::text[])
 ORDER BY active_load, number LIMIT 16;

\echo '--- find_candidates, with a literal exclusion list, as the service sends it'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT number, active_load FROM pool_numbers
 WHERE state = 'active' AND NOT reserved AND country = 'US'
   AND number <> ALL(ARRAY['12125550000', '12125550500', '12125551000']::text[])
 ORDER BY active_load, number LIMIT 16;

BEGIN;
\echo '--- release the expired pairings of these people and this reference (since V5)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
UPDATE pairings SET released = true
 WHERE NOT released AND expires_at <= now()
   AND (id IN (SELECT pairing_id FROM participants
                WHERE number = ANY(ARRAY['16462000000', '16467770000']) AND NOT released)
        OR reference = 'bench-none');
\echo '--- insert a pairing and its two participants (triggers, foreign keys, unique indexes)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
INSERT INTO pairings (id, reference, expires_at)
VALUES ('ffffffff-0000-7000-8000-000000000001', 'bench-explain', now() + interval '1 hour');
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
INSERT INTO participants
    (pairing_id, position, number, label, proxy_number, counterpart_number, counterpart_proxy)
VALUES ('ffffffff-0000-7000-8000-000000000001', 0, '16467770000', 'driver', '12125554999',
        '16467770001', '12125554998'),
       ('ffffffff-0000-7000-8000-000000000001', 1, '16467770001', 'passenger', '12125554998',
        '16467770000', '12125554999');
\echo '--- adjust_load: one pool number counter'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
UPDATE pool_numbers SET active_load = GREATEST(active_load + 1, 0) WHERE number = '12125554999';
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
