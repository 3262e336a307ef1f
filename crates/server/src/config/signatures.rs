//! Signed webhooks: the secrets, what a token must carry, and the explicit opt-out.

use anyhow::bail;
use voice_proxy_http::signature::{PayloadHashMode, SignatureSettings};

use super::env::Env;

/// `VONAGE_SIGNATURE_SECRET` (comma-separated, for rotation), `VONAGE_API_KEY`,
/// `VONAGE_APPLICATION_ID`, `SIGNATURE_MAX_AGE_SECONDS`, `SIGNATURE_PAYLOAD_HASH`. Without a
/// secret, the service refuses to start unless `ALLOW_UNSIGNED_WEBHOOKS=true`.
pub fn from_env(env: &Env) -> anyhow::Result<SignatureSettings> {
    let secrets: Vec<String> = env
        .string("VONAGE_SIGNATURE_SECRET")
        .map(|s| {
            s.split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let allow_unsigned: bool = env.parse("ALLOW_UNSIGNED_WEBHOOKS", false)?;
    if secrets.is_empty() && !allow_unsigned {
        bail!(
            "VONAGE_SIGNATURE_SECRET is not set: without it anyone who can reach the webhooks \
             can ask whom a pool number connects to. Set it to your Vonage account's \
             signature secret, or, for local development only, set \
             ALLOW_UNSIGNED_WEBHOOKS=true to serve the webhooks unauthenticated"
        );
    }
    Ok(SignatureSettings {
        secrets,
        api_key: env.string("VONAGE_API_KEY"),
        application_id: env.string("VONAGE_APPLICATION_ID"),
        max_age_seconds: env.within("SIGNATURE_MAX_AGE_SECONDS", 300, 1..=86_400)?,
        payload_hash: env.choice(
            "SIGNATURE_PAYLOAD_HASH",
            PayloadHashMode::LogOnly,
            PayloadHashMode::parse,
            "enforce, log",
        )?,
    })
}
