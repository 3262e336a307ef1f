//! When a message is sent again after a failed attempt, and when it is given up.

use std::time::Duration;

/// The longest wait a `Retry-After` header may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The first attempt is made at once; after each failure the next waits the schedule's next
/// wait (plus up to a tenth more, so that a crowd of retries does not arrive at once, and at
/// least what the endpoint's `Retry-After` asked for), until the schedule is used up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    waits: Vec<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a retry schedule: list the waits before each retry, comma-separated, each a \
     number and a unit (ms, s, m or h), e.g. 5s,5m,30m,2h"
)]
pub struct RetryScheduleError(String);

impl Default for RetrySchedule {
    /// At once, then after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h: eight attempts over
    /// about 27.6 hours.
    fn default() -> Self {
        let s = |n| Duration::from_secs(n);
        Self {
            waits: vec![
                s(5),
                s(300),
                s(1800),
                s(7200),
                s(18_000),
                s(36_000),
                s(36_000),
            ],
        }
    }
}

impl RetrySchedule {
    /// Reads `5s,5m,30m,2h` (the waits before each retry). A wait may be zero; the schedule may
    /// not be empty, nor any wait longer than a week.
    pub fn parse(s: &str) -> Result<Self, RetryScheduleError> {
        let error = || RetryScheduleError(s.to_owned());
        let waits = s
            .split(',')
            .map(|w| parse_wait(w.trim()).ok_or_else(error))
            .collect::<Result<Vec<_>, _>>()?;
        if waits.is_empty() {
            return Err(error());
        }
        Ok(Self { waits })
    }

    /// How many attempts a message gets in all.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.waits.len() + 1).unwrap_or(u32::MAX)
    }

    /// What follows an attempt. `jitter` (from 0 to 1) picks how much of the tenth is added.
    pub fn after(&self, attempt: &Attempt, jitter: f64) -> AfterAttempt {
        if attempt.succeeded {
            return AfterAttempt::Succeeded;
        }
        if attempt.once {
            return AfterAttempt::Failed;
        }
        let index = usize::try_from(attempt.number.max(1) - 1).unwrap_or(usize::MAX);
        let Some(wait) = self.waits.get(index) else {
            return AfterAttempt::Failed;
        };
        let jittered = wait.mul_f64(1.0 + 0.1 * jitter.clamp(0.0, 1.0));
        let asked = attempt
            .retry_after
            .map_or(Duration::ZERO, |r| r.min(MAX_RETRY_AFTER));
        AfterAttempt::RetryIn(jittered.max(asked))
    }

    /// The schedule as it is written in `WEBHOOK_RETRY_SCHEDULE`.
    pub fn describe(&self) -> String {
        self.waits
            .iter()
            .map(|w| match w.as_millis() {
                ms if ms % 3_600_000 == 0 && ms > 0 => format!("{}h", ms / 3_600_000),
                ms if ms % 60_000 == 0 && ms > 0 => format!("{}m", ms / 60_000),
                ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
                ms => format!("{ms}ms"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn parse_wait(w: &str) -> Option<Duration> {
    let split = w.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = w.split_at(split);
    let n: u64 = n.parse().ok()?;
    let wait = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    (wait <= Duration::from_secs(7 * 24 * 3600)).then_some(wait)
}

/// One attempt's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// How many attempts the message has had, this one included.
    pub number: u32,
    /// The endpoint answered 2xx in time.
    pub succeeded: bool,
    /// What the endpoint's `Retry-After` asked for.
    pub retry_after: Option<Duration>,
    /// An operator's one extra attempt at a message that had failed: it is not retried.
    pub once: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    Succeeded,
    RetryIn(Duration),
    /// No more attempts.
    Failed,
}

/// Where a message's delivery to one endpoint stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for its next attempt, or being sent.
    Pending,
    Succeeded,
    /// Every attempt the schedule allows failed.
    Failed,
}

impl DeliveryState {
    pub const ALL: [Self; 3] = [Self::Pending, Self::Succeeded, Self::Failed];

    /// The name stored in the database and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// The state an attempt leaves the delivery in.
    pub fn after(next: AfterAttempt) -> Self {
        match next {
            AfterAttempt::Succeeded => Self::Succeeded,
            AfterAttempt::RetryIn(_) => Self::Pending,
            AfterAttempt::Failed => Self::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(number: u32) -> Attempt {
        Attempt {
            number,
            succeeded: false,
            retry_after: None,
            once: false,
        }
    }

    #[test]
    fn the_default_schedule_is_eight_attempts_over_about_27_hours() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.attempts(), 8);
        assert_eq!(schedule.describe(), "5s,5m,30m,2h,5h,10h,10h");
        let total: Duration = (1..8)
            .map(|n| match schedule.after(&failed(n), 0.0) {
                AfterAttempt::RetryIn(d) => d,
                other => panic!("attempt {n}: {other:?}"),
            })
            .sum();
        assert_eq!(total, Duration::from_secs(99_305));
        assert_eq!(schedule.after(&failed(8), 0.0), AfterAttempt::Failed);
    }

    #[test]
    fn waits_are_read_with_their_units_and_bad_ones_refused() {
        let s = RetrySchedule::parse("1s, 2s,500ms,1m,0s").unwrap();
        assert_eq!(s.describe(), "1s,2s,500ms,1m,0s");
        assert_eq!(s.attempts(), 6);
        for bad in ["", "1", "s", "1d", "-1s", "1s,,2s", "1.5s", "200h", "1 s"] {
            assert!(RetrySchedule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn jitter_adds_at_most_a_tenth_and_retry_after_is_a_floor() {
        let s = RetrySchedule::parse("10s").unwrap();
        assert_eq!(
            s.after(&failed(1), 1.0),
            AfterAttempt::RetryIn(Duration::from_secs(11))
        );
        let asked = Attempt {
            retry_after: Some(Duration::from_secs(60)),
            ..failed(1)
        };
        assert_eq!(
            s.after(&asked, 0.0),
            AfterAttempt::RetryIn(Duration::from_secs(60))
        );
        let greedy = Attempt {
            retry_after: Some(Duration::from_secs(10 * 24 * 3600)),
            ..failed(1)
        };
        assert_eq!(
            s.after(&greedy, 0.0),
            AfterAttempt::RetryIn(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn a_success_ends_it_and_an_operators_extra_attempt_is_not_retried() {
        let s = RetrySchedule::default();
        let ok = Attempt {
            succeeded: true,
            ..failed(3)
        };
        assert_eq!(s.after(&ok, 0.5), AfterAttempt::Succeeded);
        let once = Attempt {
            once: true,
            ..failed(9)
        };
        assert_eq!(s.after(&once, 0.5), AfterAttempt::Failed);
    }
}
