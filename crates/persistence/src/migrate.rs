//! Schema migrations. The SQL files in `migrations/` are embedded into the binary by refinery and
//! applied over a sqlx connection, so the service needs one Postgres driver only.

use refinery_core::Migration;
use refinery_core::traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction};
use sqlx::{Connection, Executor, PgConnection, Row};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// A lock id shared by every instance, so two instances starting at once migrate one at a time.
const MIGRATION_LOCK: i64 = 0x766f_6963_6570_7278; // "voiceprx"

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("could not connect to the database")]
    Connect(#[source] sqlx::Error),
    #[error("migration failed")]
    Refinery(#[from] refinery_core::Error),
    #[error("database error while migrating")]
    Database(#[from] sqlx::Error),
}

/// Applies every pending migration; returns the names of those applied now.
pub async fn run(conn: &mut PgConnection) -> Result<Vec<String>, MigrateError> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    let result = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run_async(&mut SqlxMigrator(&mut *conn))
        .await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    let report = result?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(ToString::to_string)
        .collect())
}

/// Connects with `options` and applies pending migrations.
pub async fn run_with(
    options: &sqlx::postgres::PgConnectOptions,
) -> Result<Vec<String>, MigrateError> {
    let mut conn = PgConnection::connect_with(options)
        .await
        .map_err(MigrateError::Connect)?;
    let applied = run(&mut conn).await;
    let _ = conn.close().await;
    applied
}

/// The highest migration version embedded in this binary.
pub fn latest_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// The highest migration version applied to the database, if the history table exists.
pub async fn applied_version(pool: &sqlx::PgPool) -> Result<Option<i64>, sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('refinery_schema_history') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    if !exists {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT max(version)::bigint FROM refinery_schema_history")
        .fetch_one(pool)
        .await
}

struct SqlxMigrator<'c>(&'c mut PgConnection);

impl AsyncTransaction for SqlxMigrator<'_> {
    type Error = sqlx::Error;

    async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
        &'a mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        let mut tx = self.0.begin().await?;
        let mut count = 0;
        for query in queries {
            // Migration files hold several statements: send them as one simple query.
            tx.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(query.to_owned())))
                .await?;
            count += 1;
        }
        tx.commit().await?;
        Ok(count)
    }
}

impl AsyncQuery<Vec<Migration>> for SqlxMigrator<'_> {
    async fn query<'a>(&'a mut self, query: &'a str) -> Result<Vec<Migration>, Self::Error> {
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(query.to_owned()))
            .fetch_all(&mut *self.0)
            .await?;
        rows.iter()
            .map(|row| {
                let version: i32 = row.try_get(0)?;
                let name: String = row.try_get(1)?;
                let applied_on: String = row.try_get(2)?;
                let checksum: String = row.try_get(3)?;
                let applied_on = OffsetDateTime::parse(&applied_on, &Rfc3339)
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                let checksum = checksum
                    .parse::<u64>()
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                Ok(Migration::applied(version, name, applied_on, checksum))
            })
            .collect()
    }
}

impl AsyncMigrate for SqlxMigrator<'_> {}
