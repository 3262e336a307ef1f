-- A call record keeps the id of the pairing that routed it, as the answer webhook found it.
-- Pairings are never deleted, so the foreign key to pairings guarded nothing that can happen, while
-- costing every recorded call a lookup in pairings and a share lock on the pairing's row, inside
-- the trigger machinery: measured, about a third of Postgres's CPU time on the answer path at 1M
-- pairings (perf, `just bench` load). The index calls_by_pairing stays for the calls API.
ALTER TABLE calls DROP CONSTRAINT calls_pairing_id_fkey;
