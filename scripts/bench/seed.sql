-- Seeds a migrated voice-proxy database with active pairings for the benchmark, in bulk.
--
--   psql -v pool_per_country=5000 -v pairings=1000000 -v drivers_per_country=50000 -f seed.sql
--
-- Two countries, US and GB, each with :pool_per_country pool numbers and half of the pairings.
-- Pairing i (0-based) is in country i % 2; within its country it is number j = i / 2. Its driver
-- (position 0) is person d = j % :drivers_per_country, who thus holds k = j / :drivers_per_country
-- + 1 ... up to K = ceil(pairings / 2 / drivers_per_country) active pairings; its passenger
-- (position 1) is a person of their own. So persons are a realistic mix: few drivers with many
-- pairings each, many passengers with one. Every pairing has a reference (`seed-<i>`), as an
-- order id, so pairings_reference_once holds 1M entries too.
--
-- The exclusion constraint participants_one_route holds by construction: a driver's K pairings
-- get the pool numbers (d + k * S) % P, S = P / K, all distinct as K * S <= P; passengers are
-- distinct people. Passenger proxies (7j + 3) % P spread evenly (7 is prime to P here).
--
-- Numbers (keep in step with crates/bench/src/numbers.rs, whose tests check that the load
-- generator never draws a pool number):
--   pool US      1212555 0000-9999            pool GB      447400 000000-009999
--   US drivers   1646 2dd dddd                US passengers 1917 2jj jjjj
--   GB drivers   447500 0ddddd (< 100000)     GB passengers 447500 1jjjjj-9jjjjj
--
-- Fast and still correct: the session runs with session_replication_role = replica, so no
-- trigger fires (neither the row triggers of the schema nor the foreign-key checks). What the
-- triggers would do is done here: participants.active_during is the pairing's active_during (the
-- same expression as the generated column, closed_at being NULL), and the checks they would make
-- are made once, in bulk, at the end (scripts/bench/check.sql). The secondary indexes (unique
-- ones included) and exclusion constraints of pairings and participants are dropped before the
-- load and rebuilt after it from their own definitions (read from the catalog, so schema changes
-- are followed); rebuilding a unique index or an exclusion constraint checks every row against
-- it. VACUUM (ANALYZE) at the end, as autovacuum may be off.

\set ON_ERROR_STOP on
\timing off
SET client_min_messages = warning;
SET session_replication_role = replica;
SET synchronous_commit = off;
SET maintenance_work_mem = '1GB';
SET work_mem = '256MB';

SELECT :pool_per_country AS p, :pairings AS n, :drivers_per_country AS dr,
       ceil(:pairings / 2.0 / :drivers_per_country)::int AS k \gset
SELECT (:p / :k)::int AS stride \gset
-- One instant for every row: each statement below is a transaction of its own, with its own now().
SELECT now() AS seed_now \gset
SELECT (:k <= :p AND :p <= 10000 AND :dr <= 100000 AND :n / 2 <= 900000) AS sizes_ok \gset
\if :sizes_ok
\else
    DO $$ BEGIN RAISE EXCEPTION 'seed: sizes out of range: need K <= pool_per_country <= 10000, '
        'drivers_per_country <= 100000, pairings <= 1800000'; END $$;
\endif

\echo seed: drop secondary indexes and exclusion constraints of pairings and participants
CREATE TEMP TABLE seed_rebuild (ord serial, undo text NOT NULL, redo text NOT NULL);
INSERT INTO seed_rebuild (undo, redo)
SELECT format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname),
       format('ALTER TABLE %s ADD CONSTRAINT %I %s', c.conrelid::regclass, c.conname,
              pg_get_constraintdef(c.oid))
  FROM pg_constraint c
 WHERE c.conrelid IN ('pairings'::regclass, 'participants'::regclass) AND c.contype = 'x';
INSERT INTO seed_rebuild (undo, redo)
SELECT format('DROP INDEX %s', i.indexrelid::regclass), pg_get_indexdef(i.indexrelid)
  FROM pg_index i
 WHERE i.indrelid IN ('pairings'::regclass, 'participants'::regclass)
   AND NOT i.indisprimary
   AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid);
SELECT undo FROM seed_rebuild ORDER BY ord \gexec

\echo seed: pool numbers
\timing on
INSERT INTO pool_numbers (number, country)
SELECT '1212555' || lpad(i::text, 4, '0'), 'US' FROM generate_series(0, :p - 1) i
UNION ALL
SELECT '447400' || lpad(i::text, 6, '0'), 'GB' FROM generate_series(0, :p - 1) i;

\timing off
\echo seed: pairings
\timing on
INSERT INTO pairings (id, reference, created_at, expires_at)
SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
       'seed-' || i,
       :'seed_now'::timestamptz - make_interval(secs => i % 1800),
       :'seed_now'::timestamptz - make_interval(secs => i % 1800) + interval '4 hours'
  FROM generate_series(0, :n - 1) i;

\timing off
\echo seed: participants
\timing on
INSERT INTO participants
       (pairing_id, position, number, label, proxy_number, counterpart_number, counterpart_proxy,
        active_during)
SELECT x.id, s.position,
       CASE s.position WHEN 0 THEN x.driver ELSE x.passenger END,
       CASE s.position WHEN 0 THEN 'driver' ELSE 'passenger' END,
       CASE s.position WHEN 0 THEN x.driver_proxy ELSE x.passenger_proxy END,
       CASE s.position WHEN 0 THEN x.passenger ELSE x.driver END,
       CASE s.position WHEN 0 THEN x.passenger_proxy ELSE x.driver_proxy END,
       x.active_during
  FROM (SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid AS id,
               tstzrange(:'seed_now'::timestamptz - make_interval(secs => i % 1800),
                         :'seed_now'::timestamptz - make_interval(secs => i % 1800) + interval '4 hours',
                         '[)') AS active_during,
               CASE WHEN i % 2 = 0
                    THEN '1646' || (200 + d / 10000) || lpad((d % 10000)::text, 4, '0')
                    ELSE '447500' || lpad(d::text, 6, '0') END AS driver,
               CASE WHEN i % 2 = 0
                    THEN '1917' || (200 + j / 10000) || lpad((j % 10000)::text, 4, '0')
                    ELSE '447500' || lpad((100000 + j)::text, 6, '0') END AS passenger,
               CASE WHEN i % 2 = 0 THEN '1212555' || lpad(dp::text, 4, '0')
                    ELSE '447400' || lpad(dp::text, 6, '0') END AS driver_proxy,
               CASE WHEN i % 2 = 0 THEN '1212555' || lpad(pp::text, 4, '0')
                    ELSE '447400' || lpad(pp::text, 6, '0') END AS passenger_proxy
          FROM generate_series(0, :n - 1) i,
               LATERAL (SELECT i / 2 AS j) jj,
               LATERAL (SELECT j % :dr AS d, j / :dr AS k) dk,
               LATERAL (SELECT (d + k * :stride) % :p AS dp, (j * 7 + 3) % :p AS pp) px) x,
       (VALUES (0::smallint), (1::smallint)) s (position);

\timing off
\echo seed: rebuild indexes and constraints, each echoed with its time
\timing on
\set ECHO queries
SELECT redo FROM seed_rebuild ORDER BY ord \gexec
\set ECHO none

\timing off
\echo seed: pool load counters
\timing on
UPDATE pool_numbers n SET active_load = c.n
  FROM (SELECT proxy_number, count(*) AS n FROM participants
         WHERE upper(active_during) > now() GROUP BY proxy_number) c
 WHERE n.number = c.proxy_number;

\timing off
\echo seed: vacuum and analyze (sets the visibility map, so index-only scans skip the heap)
\timing on
VACUUM (ANALYZE) pool_numbers, pairings, participants;
