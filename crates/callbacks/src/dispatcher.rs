//! The dispatcher: sends the deliveries that are due, on every instance, and records each
//! attempt. It claims deliveries in batches (leased, so no other instance sends the same one at
//! the same time), sends up to `concurrency` at once and at most about `per_endpoint` to one
//! endpoint, so that a slow endpoint holds a few slots and never the others' messages; the call
//! path never waits for any of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use voice_proxy_domain::EndpointId;
use voice_proxy_domain::callbacks::{AfterAttempt, Attempt, RetrySchedule};
use voice_proxy_persistence::PgPool;
use voice_proxy_persistence::callbacks::Outbox;
use voice_proxy_persistence::callbacks::deliveries::{self, AttemptResult, Due};

use crate::client::{SendError, Sender};

/// How the dispatcher works.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub schedule: RetrySchedule,
    /// How long an endpoint has to answer an attempt with a 2xx.
    pub timeout: Duration,
    /// Deliveries sent at once, in all.
    pub concurrency: usize,
    /// Deliveries sent at once to one endpoint.
    pub per_endpoint: usize,
    /// How often the database is asked for due deliveries when nothing woke the dispatcher
    /// (deliveries written by another instance, retries coming due).
    pub poll_interval: Duration,
}

/// How often the backlog metrics and the outbox's subscriptions are read again.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(5);

/// Sends due deliveries until the task is aborted.
pub async fn dispatch_forever(
    pool: PgPool,
    outbox: Arc<Outbox>,
    sender: Sender,
    settings: DispatchSettings,
) {
    let settings = Arc::new(settings);
    // Longer than an attempt can take, so that a lease outlives the attempt it covers.
    let lease = settings.timeout + Duration::from_secs(10);
    let mut in_flight: JoinSet<EndpointId> = JoinSet::new();
    let mut per_endpoint: HashMap<EndpointId, usize> = HashMap::new();
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    loop {
        let want = settings.concurrency.saturating_sub(in_flight.len());
        let mut claimed_all = false;
        if want > 0 {
            let busy: Vec<(EndpointId, u32)> = per_endpoint
                .iter()
                .map(|(e, n)| (*e, u32::try_from(*n).unwrap_or(u32::MAX)))
                .collect();
            let cap = u32::try_from(settings.per_endpoint).unwrap_or(u32::MAX);
            match deliveries::claim(&pool, want as u32, cap, lease, &busy).await {
                Ok(due) => {
                    claimed_all = due.len() == want;
                    for d in due {
                        *per_endpoint.entry(d.endpoint_id).or_default() += 1;
                        in_flight.spawn(deliver(pool.clone(), sender.clone(), settings.clone(), d));
                    }
                }
                Err(e) => tracing::debug!(error = %e, "could not claim deliveries; will retry"),
            }
        }
        if claimed_all {
            // There may be more due now.
            continue;
        }
        tokio::select! {
            Some(done) = in_flight.join_next() => {
                if let Ok(endpoint) = done
                    && let Some(n) = per_endpoint.get_mut(&endpoint)
                {
                    *n -= 1;
                    if *n == 0 {
                        per_endpoint.remove(&endpoint);
                    }
                }
            }
            () = outbox.written() => {}
            () = tokio::time::sleep(settings.poll_interval) => {}
            _ = housekeeping.tick() => {
                if let Err(e) = outbox.refresh(&pool).await {
                    tracing::debug!(error = %e, "could not read which events endpoints want");
                }
                match deliveries::backlog(&pool).await {
                    Ok((pending, oldest)) => {
                        metrics::gauge!("callback_deliveries_pending").set(pending as f64);
                        metrics::gauge!("callback_oldest_overdue_seconds").set(oldest);
                    }
                    Err(e) => tracing::debug!(error = %e, "could not read the callback backlog"),
                }
            }
        }
    }
}

/// One attempt at one delivery, recorded. Returns the endpoint, for the dispatcher's count.
async fn deliver(
    pool: PgPool,
    sender: Sender,
    settings: Arc<DispatchSettings>,
    due: Due,
) -> EndpointId {
    let at = chrono::Utc::now();
    let started = Instant::now();
    let sent = sender
        .post(
            &due.url,
            &due.message_id.to_string(),
            &due.body,
            &due.secrets,
            settings.timeout,
        )
        .await;
    let latency = started.elapsed();
    let (status_code, error, succeeded, retry_after) = match &sent {
        Ok(answer) if answer.is_success() => (Some(answer.status), None, true, None),
        Ok(answer) => (
            Some(answer.status),
            Some(format!("answered HTTP {}", answer.status)),
            false,
            answer.retry_after,
        ),
        Err(e) => (None, Some(describe(e)), false, None),
    };
    let next = settings.schedule.after(
        &Attempt {
            number: due.attempt,
            succeeded,
            retry_after,
            once: due.once,
        },
        fastrand::f64(),
    );
    let outcome = match next {
        AfterAttempt::Succeeded => "succeeded",
        AfterAttempt::RetryIn(_) => "retrying",
        AfterAttempt::Failed => "failed",
    };
    metrics::counter!("callback_deliveries_total", "result" => outcome).increment(1);
    metrics::histogram!("callback_delivery_duration_seconds").record(latency.as_secs_f64());
    if !succeeded {
        tracing::info!(
            endpoint_id = %due.endpoint_id,
            message_id = %due.message_id,
            event_type = due.event_type,
            attempt = due.attempt,
            error = error.as_deref(),
            outcome,
            "a callback attempt failed"
        );
    }
    let result = AttemptResult {
        at,
        status_code,
        latency,
        error,
    };
    if let Err(e) = deliveries::finish(&pool, &due, &result, next).await {
        // The lease runs out and the delivery is sent again: at least once, never lost.
        tracing::warn!(error = %e, message_id = %due.message_id, "could not record a callback attempt; it will be sent again");
    }
    due.endpoint_id
}

fn describe(e: &SendError) -> String {
    match e {
        SendError::Timeout(t) => format!("no answer within {} ms", t.as_millis()),
        other => other.to_string(),
    }
}
