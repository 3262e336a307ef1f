//! Keeping the background tasks running.
//!
//! The route mirror, the spool drainer, the sweeper and the others loop for the life of the
//! process. If one of them panicked, nothing would notice: the service would keep answering with
//! that part gone (a dead drainer, for one, would leave the database counted as down for good
//! and the spool growing). [`supervised`] runs such a task and starts it again after a panic.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;

/// How long [`supervised`] waits before starting a task again after it panicked, so a task that
/// panics at once does not spin.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Runs the task `start` makes; if it panics, logs it, counts it in
/// `background_task_restarts_total{task}` and starts a new one after `restart_delay`. Returns
/// when a run of the task returns by itself. Aborting the future (or the task running it) also
/// stops the task it runs.
pub async fn supervised<F, Fut>(task: &'static str, restart_delay: Duration, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        // A JoinSet aborts what it holds when dropped, so cancelling this future cancels the
        // run too; a JoinHandle would leave it running detached.
        let mut run = JoinSet::new();
        run.spawn(start());
        match run.join_next().await {
            Some(Err(e)) if e.is_panic() => {
                tracing::error!(task, "a background task panicked; starting it again");
                metrics::counter!("background_task_restarts_total", "task" => task).increment(1);
                tokio::time::sleep(restart_delay).await;
            }
            // It returned, or was cancelled from outside (the runtime shutting down).
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_is_started_again_until_it_returns() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        supervised("test", Duration::from_millis(1), move || {
            let runs = counted.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("the first two runs fail");
                }
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn aborting_the_supervisor_stops_the_task() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let counted = ticks.clone();
        let supervisor = tokio::spawn(supervised("test", RESTART_DELAY, move || {
            let ticks = counted.clone();
            async move {
                loop {
                    ticks.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
        while ticks.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        supervisor.abort();
        assert!(supervisor.await.unwrap_err().is_cancelled());
        let after_abort = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            after_abort,
            "the task still runs"
        );
    }
}
