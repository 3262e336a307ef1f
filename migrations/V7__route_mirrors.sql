-- Instances that connect calls from their in-memory copy of the routes, and how far they have
-- read the pairings' change feed (see crates/persistence/src/routes.rs). A request that closes a
-- pairing (or brings its expiry forward) waits, before it returns, until every instance with a
-- recent heartbeat has read from a time after its commit, so that no instance connects a call to
-- a pairing that was closed.
CREATE TABLE route_mirrors (
    instance_id  uuid        PRIMARY KEY,
    -- The database time this instance's latest poll of the change feed read from.
    seen_at      timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);

-- Wake every instance when a pairing is closed or re-timed, so that it polls at once instead of
-- at its next interval.
CREATE FUNCTION pairings_notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('voice_proxy_routes', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER pairings_notify_change
    AFTER UPDATE OF closed_at, expires_at ON pairings
    FOR EACH ROW
    WHEN (NEW.closed_at IS DISTINCT FROM OLD.closed_at OR NEW.expires_at IS DISTINCT FROM OLD.expires_at)
    EXECUTE FUNCTION pairings_notify_change();
