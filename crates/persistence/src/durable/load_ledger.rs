//! The load ledger: the pool numbers' load counter changes this process has made and not yet
//! written.

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::PgPool;
use voice_proxy_domain::allocation::{self, Candidate};
use voice_proxy_domain::{CountryCode, PhoneNumber};

/// Changes to the pool numbers' load counters (`pool_numbers.active_load`) that this process has
/// made and not yet written: +1 for each number given to a participant, -1 for each taken back
/// at close.
///
/// The counters only steer the spread of new pairings (among equally good numbers, the least
/// loaded first); correctness never depends on them. Writing them on every create made every
/// create pay two more commits and made concurrent creates queue on the same few rows (they all
/// pick among the same least-loaded numbers). So a create counts its numbers here, at once (the
/// next create of this process sees them when it picks), and [`LoadLedger::flush`] writes what
/// has piled up in one statement, from a background task every ~100 ms and at shutdown. Several
/// processes each see the others' creates only once flushed: a short-lived, bounded unevenness.
/// A process that dies without its last flush leaves its last ~100 ms of changes unwritten: the
/// counters then stay that far off (nothing recounts them; they only steer the spread).
#[derive(Debug, Default)]
pub struct LoadLedger {
    pending: Mutex<HashMap<String, Pending>>,
}

#[derive(Debug, Clone, Default)]
struct Pending {
    delta: i64,
    /// The country of the search the number was found by; `None` when not known.
    country: Option<CountryCode>,
}

impl LoadLedger {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        // A panic while holding the lock cannot leave the map inconsistent (each change is one
        // insert), so a poisoned lock is used as is.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `delta` to the unwritten load of `number`.
    pub fn add(&self, number: &str, delta: i64, country: Option<&CountryCode>) {
        apply(&mut self.lock(), number, delta, country);
    }

    /// The unwritten load of `number`.
    pub fn pending(&self, number: &str) -> i64 {
        self.lock().get(number).map_or(0, |p| p.delta)
    }

    /// How many numbers of `country` (of any, when `None`) carry unwritten load: a search
    /// must read this many more candidates than it needs for the least loaded ones, once that
    /// load is counted, to be among them. Numbers of unknown country count for every country.
    pub fn pending_in(&self, country: Option<&CountryCode>) -> usize {
        self.lock()
            .values()
            .filter(|p| p.delta > 0)
            .filter(|p| match (country, &p.country) {
                (Some(wanted), Some(c)) => wanted == c,
                _ => true,
            })
            .count()
    }

    /// Adds the unwritten load to each candidate's, picks one by
    /// [`voice_proxy_domain::allocation::pick`] and counts it, all under one lock: two creates
    /// of this process never both see a number as the least loaded one.
    pub fn pick(
        &self,
        candidates: &mut [Candidate],
        seed: u64,
        country: Option<&CountryCode>,
    ) -> Option<PhoneNumber> {
        let mut pending = self.lock();
        for c in candidates.iter_mut() {
            c.load += pending.get(c.number.expose()).map_or(0, |p| p.delta);
        }
        let chosen = allocation::pick(candidates, seed)?.number.clone();
        apply(&mut pending, chosen.expose(), 1, country);
        Some(chosen)
    }

    /// Writes the unwritten load to `pool_numbers` in one statement (the numbers in order, so
    /// that two flushing processes lock rows in the same order). The written amounts are taken
    /// off the ledger only once the statement succeeded; what changed meanwhile stays for the
    /// next flush. Returns how many numbers were written.
    #[tracing::instrument(skip_all)]
    pub async fn flush(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        let mut batch: Vec<(String, i64)> = self
            .lock()
            .iter()
            .filter(|(_, p)| p.delta != 0)
            .map(|(n, p)| (n.clone(), p.delta))
            .collect();
        if batch.is_empty() {
            return Ok(0);
        }
        batch.sort_unstable();
        let (numbers, deltas): (Vec<String>, Vec<i64>) = batch.iter().cloned().unzip();
        sqlx::query(
            "UPDATE pool_numbers n SET active_load = GREATEST(n.active_load + d.delta, 0)
               FROM (SELECT number, delta FROM unnest($1::text[], $2::bigint[])
                        AS u (number, delta) ORDER BY number) d
              WHERE n.number = d.number",
        )
        .bind(&numbers)
        .bind(&deltas)
        .execute(pool)
        .await?;
        for (number, delta) in &batch {
            self.add(number, -delta, None);
        }
        Ok(batch.len())
    }
}

/// Adds `delta` to the unwritten load of `number` in `pending`; a number whose changes cancel
/// out leaves the ledger.
fn apply(
    pending: &mut HashMap<String, Pending>,
    number: &str,
    delta: i64,
    country: Option<&CountryCode>,
) {
    let entry = pending.entry(number.to_owned()).or_default();
    entry.delta += delta;
    if entry.country.is_none() {
        entry.country = country.cloned();
    }
    if entry.delta == 0 {
        pending.remove(number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(loads: &[i64]) -> Vec<Candidate> {
        loads
            .iter()
            .enumerate()
            .map(|(i, load)| Candidate {
                number: PhoneNumber::from_trusted_digits(format!("1212555{:04}", 1000 + i)),
                load: *load,
            })
            .collect()
    }

    #[test]
    fn picks_of_one_process_spread_over_equally_loaded_numbers_before_any_flush() {
        let ledger = LoadLedger::new();
        let us = CountryCode::parse("US").unwrap();
        let mut picked = std::collections::HashSet::new();
        for seed in 0..16 {
            // Every create reads the same counters from the database, as nothing is flushed.
            let mut list = candidates(&[7; 16]);
            let n = ledger.pick(&mut list, seed * 7919, Some(&us)).unwrap();
            assert!(
                picked.insert(n),
                "a number was picked twice while others were free"
            );
        }
        assert_eq!(ledger.pending_in(Some(&us)), 16);
        assert_eq!(ledger.pending_in(CountryCode::parse("GB").as_ref()), 0);
        assert_eq!(ledger.pending_in(None), 16);
    }

    #[test]
    fn unwritten_load_counts_when_picking_and_taking_back_clears_it() {
        let ledger = LoadLedger::new();
        let mut list = candidates(&[3, 2]);
        // The second number is less loaded in the database but carries two unwritten pairings.
        ledger.add(list[1].number.expose(), 2, None);
        let n = ledger.pick(&mut list, 0, None).unwrap();
        assert_eq!(n.expose(), "12125551000");
        assert_eq!(ledger.pending("12125551000"), 1);
        ledger.add("12125551000", -1, None);
        ledger.add("12125551001", -2, None);
        assert_eq!(ledger.pending_in(None), 0);
        assert!(ledger.lock().is_empty());
    }
}
