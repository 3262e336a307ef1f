-- A change feed of pairings, so that every instance can keep an in-memory copy of the routes
-- (used to keep answering calls while the database is unreachable). Every insert, close or
-- expiry change of a pairing stamps it with the database clock; an instance asks for what changed
-- since shortly before its previous question (the overlap covers transactions that commit a
-- little after they stamp).

ALTER TABLE pairings ADD COLUMN changed_at timestamptz NOT NULL DEFAULT clock_timestamp();
CREATE INDEX pairings_by_changed_at ON pairings (changed_at);

CREATE FUNCTION pairings_stamp_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.expires_at IS DISTINCT FROM OLD.expires_at
       OR NEW.closed_at IS DISTINCT FROM OLD.closed_at THEN
        NEW.changed_at := clock_timestamp();
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER pairings_stamp_change
    BEFORE UPDATE ON pairings
    FOR EACH ROW EXECUTE FUNCTION pairings_stamp_change();
