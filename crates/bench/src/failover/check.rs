//! What the failover run checks at the end: everything acknowledged is in Postgres once,
//! nothing was dead-lettered, every instance is ready.

use std::collections::HashSet;
use std::path::PathBuf;

use sqlx::PgPool;

use super::cluster::{metric, ready};
use super::{ANSWER_LIMIT, Seen};

/// What the database and the instances hold, against what was acknowledged.
pub(super) async fn check(
    db: &PgPool,
    seen: &Seen,
    bases: &[String],
    http: &reqwest::Client,
    spool_dirs: &[PathBuf],
) -> anyhow::Result<Vec<String>> {
    let mut failures = Vec::new();
    if !seen.not_connected.is_empty() {
        failures.push(format!(
            "{} callers not connected, e.g. {:?}",
            seen.not_connected.len(),
            &seen.not_connected[..seen.not_connected.len().min(3)]
        ));
    }
    if seen.answers_over_limit > 0 {
        failures.push(format!(
            "{} answers took over {} ms (slowest {} ms)",
            seen.answers_over_limit,
            ANSWER_LIMIT.as_millis(),
            seen.slowest_answer.as_millis()
        ));
    }
    if !seen.not_acknowledged.is_empty() {
        failures.push(format!(
            "{} events not acknowledged, e.g. {:?}",
            seen.not_acknowledged.len(),
            &seen.not_acknowledged[..seen.not_acknowledged.len().min(3)]
        ));
    }
    let other: Vec<&String> = seen
        .create_statuses
        .keys()
        .filter(|s| *s != "201" && *s != "503")
        .collect();
    if !other.is_empty() {
        failures.push(format!(
            "creates answered other than 201 or 503: {:?}",
            seen.create_statuses
        ));
    }

    let stored_calls: Vec<String> =
        sqlx::query_scalar("SELECT conversation_uuid FROM calls WHERE conversation_uuid = ANY($1)")
            .bind(&seen.connected)
            .fetch_all(db)
            .await?;
    let stored_calls: HashSet<String> = stored_calls.into_iter().collect();
    let missing_calls = seen
        .connected
        .iter()
        .filter(|c| !stored_calls.contains(*c))
        .count();
    if missing_calls > 0 || stored_calls.len() != seen.connected.len() {
        failures.push(format!(
            "{} acknowledged calls are not in Postgres ({} stored of {})",
            missing_calls,
            stored_calls.len(),
            seen.connected.len()
        ));
    }

    let conversations: Vec<&String> = seen.acknowledged.iter().map(|e| &e.0).collect();
    let stored_events: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT conversation_uuid, leg_uuid, status, count(*) FROM call_events
          WHERE conversation_uuid = ANY($1) GROUP BY 1, 2, 3",
    )
    .bind(conversations)
    .fetch_all(db)
    .await?;
    let twice = stored_events.iter().filter(|e| e.3 != 1).count();
    let stored: HashSet<(String, String, String)> = stored_events
        .into_iter()
        .map(|(c, l, s, _)| (c, l, s))
        .collect();
    let missing_events = seen
        .acknowledged
        .iter()
        .filter(|e| !stored.contains(*e))
        .count();
    if missing_events > 0 || twice > 0 {
        failures.push(format!(
            "{missing_events} acknowledged events are not in Postgres, {twice} are there twice"
        ));
    }

    let stored_pairings: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pairings WHERE id = ANY($1)")
            .bind(&seen.created)
            .fetch_one(db)
            .await?;
    if stored_pairings != seen.created.len() as i64 {
        failures.push(format!(
            "{} of {} pairings answered 201 are not in Postgres",
            seen.created.len() as i64 - stored_pairings,
            seen.created.len()
        ));
    }

    for dir in spool_dirs {
        if dir.join("dead-letter.jsonl").exists() {
            failures.push(format!("{} holds dead-lettered records", dir.display()));
        }
    }
    for base in bases {
        let dead = metric(http, base, "records_dead_lettered_total").await;
        if dead > 0.0 {
            failures.push(format!("{base} dead-lettered {dead} records"));
        }
        if !ready(http, base).await {
            failures.push(format!("{base} is not ready"));
        }
        println!(
            "failover: {base}: route mirror reloads {}, spool writes failed {}",
            metric(http, base, "route_mirror_reloads_total").await,
            metric(http, base, "spool_write_failures_total").await
        );
    }
    println!(
        "failover: in Postgres: {} of {} calls, {} of {} events, {} of {} pairings",
        stored_calls.len(),
        seen.connected.len(),
        stored.len(),
        seen.acknowledged.len(),
        stored_pairings,
        seen.created.len()
    );
    Ok(failures)
}
