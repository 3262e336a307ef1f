-- Pairing creates write fewer index entries.
--
-- participants_by_pairing_number (number, pairing_id) duplicated what participants_history
-- (number, upper(active_during) DESC) already serves (every lookup of a person's pairings: the
-- pairing list's number filter; the release step of a create uses participants_one_route), and
-- cost one more index insert per participant, two per create.
DROP INDEX IF EXISTS participants_by_pairing_number;

-- Load counter updates become HOT (no new index entries, no dead ones in front of every
-- candidate search). active_load changes with every pairing given or ended; it was indexed, so
-- each change put a new entry into three indexes, and the old entries, dead but with autovacuum
-- off never removed, sat at the low-load end where every candidate search starts: after 30 s of
-- creates at 1M pairings one search read 300 buffers and fetched 137 dead heap tuples for 16 + n
-- candidates. The searches now order by a coarse load bucket (active_load / 8), a stored column
-- that only changes when a counter crosses a multiple of 8; active_load itself is in no index, so
-- other updates of it are HOT (given room on the page: fillfactor 50; the table is small).
-- Within a bucket, the service picks the least loaded of the candidates it read, by their real
-- counters; so numbers stay within a bucket's width of each other.
-- pool_numbers_free, the same over all countries, is not rebuilt: on (load_bucket, number),
-- Postgres chose it for one country's search too (it cannot know that the other country's numbers
-- come first) and filtered 2,606 numbers away per search. A search over any country now runs the
-- per-country search in each country (crates/persistence/src/pairings.rs, find_candidates).
ALTER TABLE pool_numbers SET (fillfactor = 50);
ALTER TABLE pool_numbers ADD COLUMN load_bucket bigint GENERATED ALWAYS AS (active_load / 8) STORED;
DROP INDEX pool_numbers_free_by_country;
DROP INDEX pool_numbers_free;
CREATE INDEX pool_numbers_free_by_country ON pool_numbers (country, load_bucket, number)
    WHERE state = 'active' AND NOT reserved;
