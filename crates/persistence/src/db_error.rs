//! What a database error means for what we were doing: the one place that decides whether an
//! error is the database being unavailable for a while (the same write may succeed later,
//! unchanged) or the database refusing this data (it never will).
//!
//! Transient, so records go back to the spool and are retried, never dead-lettered, and admin
//! requests get 503 with `Retry-After`:
//! - the connection: lost, refused, reset, TLS, a protocol error, the pool timing out or closed;
//! - the server going away or not there yet: shutdown, crash, starting up or in recovery
//!   (SQLSTATE 57P01, 57P02, 57P03), an idle session ended (57P05), a statement cancelled
//!   (57014: a statement timeout or an administrator);
//! - a server that cannot write now: a read-only transaction (25006: a standby, or a leader
//!   still in recovery after a crash or a failover);
//! - concurrency: serialization failure and deadlock (40001, 40P01), a lock not available
//!   (55P03);
//! - resources: connection exceptions (class 08), insufficient resources (class 53: too many
//!   connections, disk full, out of memory), and system errors (class 58: I/O on the server).
//!
//! Everything else is permanent: a constraint the data breaks (class 23), data Postgres cannot
//! take (class 22), a statement it does not understand, a missing column.

/// How to treat a database error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database could not do it now: retry later, unchanged.
    Transient,
    /// The database refused it: retrying the same will fail the same way.
    Permanent,
}

/// Classifies a database error; see the module's documentation.
pub fn classify(err: &sqlx::Error) -> Failure {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => Failure::Transient,
        sqlx::Error::Database(db) => db
            .code()
            .map_or(Failure::Permanent, |code| classify_sqlstate(&code)),
        _ => Failure::Permanent,
    }
}

/// Classifies a Postgres SQLSTATE.
pub fn classify_sqlstate(code: &str) -> Failure {
    let transient = code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("58")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "57P05" | "57014" | "25006" | "40001" | "40P01" | "55P03"
        );
    if transient {
        Failure::Transient
    } else {
        Failure::Permanent
    }
}

/// Whether the error means the database could not be reached or could not write for now (as
/// opposed to refusing this data): the write may succeed later, unchanged.
pub fn is_transient(err: &sqlx::Error) -> bool {
    classify(err) == Failure::Transient
}

/// Whether Postgres aborted the transaction to let a concurrent one through (serialization
/// failure, deadlock): trying again at once is the right answer.
pub fn lost_to_concurrency(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "40001" || c == "40P01")
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::error::Error as StdError;

    use super::*;

    /// A database error with a given SQLSTATE, as Postgres would report it.
    #[derive(Debug)]
    struct Refusal(&'static str);

    impl std::fmt::Display for Refusal {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl StdError for Refusal {}

    impl sqlx::error::DatabaseError for Refusal {
        fn message(&self) -> &str {
            "refused"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn database(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Refusal(code)))
    }

    #[test]
    fn an_unavailable_or_read_only_server_is_transient() {
        for code in [
            "25006", // cannot execute INSERT in a read-only transaction
            "57P01", // terminating connection due to administrator command
            "57P02", // terminating connection due to unexpected postmaster exit
            "57P03", // the database system is starting up / in recovery
            "57P05", // idle session timeout
            "57014", // canceling statement due to statement timeout
            "08006", // connection failure
            "08001", // unable to connect
            "40001", // could not serialize access
            "40P01", // deadlock detected
            "55P03", // lock not available
            "53300", // too many connections
            "53100", // disk full
            "58030", // I/O error on the server
        ] {
            assert_eq!(classify(&database(code)), Failure::Transient, "{code}");
        }
        for err in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
            sqlx::Error::Protocol("unexpected message".into()),
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        ] {
            assert!(is_transient(&err), "{err}");
        }
    }

    #[test]
    fn a_refusal_of_the_data_itself_is_permanent() {
        for code in [
            "23505", // unique violation
            "23514", // check violation
            "23503", // foreign key violation
            "22P02", // invalid text representation
            "22021", // character not in repertoire (a NUL byte)
            "54000", // program limit exceeded (an index row too large)
            "42703", // undefined column
            "57P04", // database dropped
            "XX000", // internal error
        ] {
            assert_eq!(classify(&database(code)), Failure::Permanent, "{code}");
        }
        assert_eq!(classify(&sqlx::Error::RowNotFound), Failure::Permanent);
        assert_eq!(
            classify(&sqlx::Error::ColumnNotFound("x".into())),
            Failure::Permanent
        );
    }
}
