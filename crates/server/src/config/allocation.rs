//! The allocation policy: geo-matching, stickiness, cool-off.

use voice_proxy_domain::allocation::{AllocationPolicy, CoolOffMode, GeoMatch, Stickiness};

use super::env::Env;

pub fn from_env(env: &Env) -> anyhow::Result<AllocationPolicy> {
    let cool_off_seconds = env.within("COOL_OFF_SECONDS", 24 * 3600, 0..=i64::from(i32::MAX))?;
    Ok(AllocationPolicy {
        geo: env.choice(
            "GEO_MATCH",
            GeoMatch::Strict,
            GeoMatch::parse,
            "strict, prefer, off",
        )?,
        stickiness: env.choice(
            "STICKINESS",
            Stickiness::PreferSticky,
            Stickiness::parse,
            "prefer-sticky, avoid-sticky",
        )?,
        cool_off: chrono::Duration::seconds(cool_off_seconds),
        cool_off_mode: env.choice(
            "COOL_OFF_MODE",
            CoolOffMode::Soft,
            CoolOffMode::parse,
            "soft, strict",
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::env::with;
    use super::*;

    #[test]
    fn the_defaults_are_the_policys_and_a_bad_word_names_the_setting() {
        with(&[], |env| {
            assert_eq!(from_env(env)?, AllocationPolicy::default());
            Ok(())
        })
        .unwrap();
        let err = with(&[("GEO_MATCH", "maybe")], |env| from_env(env).map(drop)).unwrap_err();
        assert!(err.to_string().contains("GEO_MATCH") && err.to_string().contains("strict"));
        let err = with(&[("COOL_OFF_SECONDS", "-1")], |env| from_env(env).map(drop)).unwrap_err();
        assert!(err.to_string().contains("COOL_OFF_SECONDS"), "{err}");
    }
}
