-- Call recordings: the event Vonage sends when a `record` action's recording is ready, once per
-- recording (a retried event is stored once), and, where the service archives recordings, the
-- state of the download. See crates/persistence/src/recordings.rs and
-- crates/callbacks/src/archive.rs.
--
-- No foreign key to calls: the call record may still be on an instance's spool when the
-- recording's event arrives. A recording belongs to the call with its conversation_uuid.
--
-- archive_state:
--   none      not archived (no RECORDING_ARCHIVE_DIR when the event arrived): streamed from Vonage;
--   pending   to be downloaded once next_attempt_at has passed (an instance downloading it has
--             pushed next_attempt_at past the end of its attempt: that is its lease);
--   archived  on disk, as archive_file in the archive directory;
--   failed    given up after the maximum number of attempts: streamed from Vonage;
--   purged    past retention (RECORDING_RETENTION_DAYS): the archived file is deleted, and a
--             download not yet made is not made;
--   refused   recording_url is not on Vonage's API hosts: it is never fetched.
CREATE TABLE recordings (
    recording_uuid    text        PRIMARY KEY,
    conversation_uuid text        NOT NULL,
    recording_url     text        NOT NULL,
    size_bytes        bigint,
    start_time        timestamptz,
    end_time          timestamptz,
    received_at       timestamptz NOT NULL DEFAULT now(),
    archive_state     text        NOT NULL,
    attempts          integer     NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz,
    last_error        text,
    archive_file      text,
    content_type      text,
    archived_bytes    bigint,
    archived_at       timestamptz,
    purged_at         timestamptz,
    CONSTRAINT recordings_uuid_form CHECK (recording_uuid ~ '^[A-Za-z0-9_-]{1,64}$'),
    CONSTRAINT recordings_conversation_length CHECK (char_length(conversation_uuid) BETWEEN 1 AND 256),
    CONSTRAINT recordings_url_length CHECK (char_length(recording_url) BETWEEN 1 AND 2048),
    CONSTRAINT recordings_size_not_negative CHECK (size_bytes IS NULL OR size_bytes >= 0),
    CONSTRAINT recordings_archive_state_known CHECK (archive_state IN
        ('none', 'pending', 'archived', 'failed', 'purged', 'refused')),
    CONSTRAINT recordings_due_when_pending CHECK ((archive_state = 'pending') = (next_attempt_at IS NOT NULL)),
    CONSTRAINT recordings_file_when_archived CHECK ((archive_state = 'archived') = (archive_file IS NOT NULL)),
    CONSTRAINT recordings_archived_when CHECK (archive_state <> 'archived' OR archived_at IS NOT NULL),
    CONSTRAINT recordings_purged_when CHECK ((archive_state = 'purged') = (purged_at IS NOT NULL)),
    CONSTRAINT recordings_file_name CHECK (archive_file IS NULL OR archive_file ~ '^[A-Za-z0-9_-]{1,64}\.[a-z0-9]{1,8}$'),
    CONSTRAINT recordings_error_length CHECK (char_length(last_error) <= 1024)
);
CREATE INDEX recordings_by_conversation ON recordings (conversation_uuid, received_at);
CREATE INDEX recordings_due ON recordings (next_attempt_at) WHERE archive_state = 'pending';
CREATE INDEX recordings_kept_by_age ON recordings (received_at) WHERE archive_state IN ('archived', 'pending');

-- A new scope: `recordings:read` (GET /v1/calls/{id}/recording).
ALTER TABLE api_keys DROP CONSTRAINT api_keys_scopes_known;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scopes_known CHECK (
    cardinality(scopes) >= 1 AND scopes <@ ARRAY['admin', 'calls:read', 'recordings:read']::text[]);
