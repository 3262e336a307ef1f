//! Reading settings: from the environment, or from a map in tests. An empty value counts as
//! unset; a value that does not parse is an error naming the setting.

use std::str::FromStr;

/// Where settings are read from.
pub struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl<'a> Env<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self(lookup)
    }

    /// A setting's value, if set and not empty.
    pub fn string(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    /// A setting parsed as `T`, or `default` when unset.
    pub fn parse<T: FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.string(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("{name}={raw:?} is not valid: {e}")),
        }
    }

    /// A setting parsed as `T` and within `range` (inclusive), or `default` when unset.
    pub fn within<T>(
        &self,
        name: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> anyhow::Result<T>
    where
        T: FromStr + PartialOrd + std::fmt::Display,
        T::Err: std::fmt::Display,
    {
        let value = self.parse(name, default)?;
        if !range.contains(&value) {
            anyhow::bail!(
                "{name} must be between {} and {} (it is {value})",
                range.start(),
                range.end()
            );
        }
        Ok(value)
    }

    /// One of a few words, or `default` when unset.
    pub fn choice<T>(
        &self,
        name: &str,
        default: T,
        parse: fn(&str) -> Option<T>,
        allowed: &str,
    ) -> anyhow::Result<T> {
        match self.string(name) {
            None => Ok(default),
            Some(raw) => parse(raw.trim()).ok_or_else(|| {
                anyhow::anyhow!("{name}={raw:?} is not valid: use one of {allowed}")
            }),
        }
    }
}

/// An `Env` over a list of settings, for the sections' tests.
#[cfg(test)]
pub fn with(
    vars: &[(&str, &str)],
    read: impl FnOnce(&Env) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let map: std::collections::HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let lookup = move |k: &str| map.get(k).cloned();
    read(&Env::new(&lookup))
}
