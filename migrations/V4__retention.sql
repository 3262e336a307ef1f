-- Retention: real numbers of pairings that ended long ago are replaced by a keyed hash
-- ('hmac:' followed by the hex HMAC-SHA256 of the number), computed in the database.

CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- Participants whose numbers are still real, by when their pairing ended.
CREATE INDEX participants_unpurged_by_end ON participants (upper(active_during))
    WHERE number NOT LIKE 'hmac:%';
-- Calls whose numbers are still real, by when they started.
CREATE INDEX calls_unpurged_by_start ON calls (started_at)
    WHERE caller IS NOT NULL AND caller NOT LIKE 'hmac:%';
-- Events whose payloads may still hold real numbers, by when they arrived.
ALTER TABLE call_events ADD COLUMN purged boolean NOT NULL DEFAULT false;
CREATE INDEX call_events_unpurged_by_arrival ON call_events (received_at) WHERE NOT purged;
