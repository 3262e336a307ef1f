-- Pairing creates write fewer index entries: participants_by_pairing_number (number, pairing_id)
-- duplicated what participants_history (number, upper(active_during) DESC) already serves (every
-- lookup of a person's pairings: the pairing list's number filter, the release step of a create,
-- which uses participants_one_route), and cost one more index insert per participant, two per
-- create.
DROP INDEX IF EXISTS participants_by_pairing_number;
