//! Where the marketplace receives callbacks (and answers the intercept and out-of-session
//! requests).

use std::fmt;

/// The longest URL we accept.
pub const MAX_URL_LEN: usize = 2048;

/// An absolute `https` URL with a host (or `http`, where the operator allows it), without
/// credentials or a fragment: a secret belongs in the signature, not in a URL that listings show.
#[derive(Clone, PartialEq, Eq)]
pub struct CallbackUrl(url::Url);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackUrlError {
    #[error("not an absolute URL")]
    NotAUrl,
    #[error("the URL must be at most {MAX_URL_LEN} characters")]
    TooLong,
    #[error("the URL must start with https:// (http:// only where WEBHOOK_ALLOW_HTTP=true)")]
    NotHttps,
    #[error("the URL must start with https:// or http://")]
    NotHttp,
    #[error("the URL must name a host")]
    NoHost,
    #[error("the URL must not hold a user name or password; callbacks are signed instead")]
    Credentials,
    #[error("the URL must not have a fragment (#...)")]
    Fragment,
}

impl CallbackUrl {
    pub fn parse(s: &str, allow_http: bool) -> Result<Self, CallbackUrlError> {
        if s.chars().count() > MAX_URL_LEN {
            return Err(CallbackUrlError::TooLong);
        }
        let url = url::Url::parse(s).map_err(|_| CallbackUrlError::NotAUrl)?;
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            "http" => return Err(CallbackUrlError::NotHttps),
            _ if allow_http => return Err(CallbackUrlError::NotHttp),
            _ => return Err(CallbackUrlError::NotHttps),
        }
        // Normalising (percent-encoding, punycode) can lengthen it.
        if url.as_str().chars().count() > MAX_URL_LEN {
            return Err(CallbackUrlError::TooLong);
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(CallbackUrlError::NoHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(CallbackUrlError::Credentials);
        }
        if url.fragment().is_some() {
            return Err(CallbackUrlError::Fragment);
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for CallbackUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CallbackUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallbackUrl({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_urls_are_taken_and_http_only_when_allowed() {
        let u = CallbackUrl::parse("https://hooks.example.com/voice?x=1", false).unwrap();
        assert_eq!(u.as_str(), "https://hooks.example.com/voice?x=1");
        assert_eq!(
            CallbackUrl::parse("http://127.0.0.1:9000/hook", false),
            Err(CallbackUrlError::NotHttps)
        );
        assert!(CallbackUrl::parse("http://127.0.0.1:9000/hook", true).is_ok());
    }

    #[test]
    fn credentials_fragments_other_schemes_and_junk_are_refused() {
        for (bad, why) in [
            (
                "https://user:pw@example.com/",
                CallbackUrlError::Credentials,
            ),
            ("https://token@example.com/", CallbackUrlError::Credentials),
            ("https://example.com/#frag", CallbackUrlError::Fragment),
            ("ftp://example.com/", CallbackUrlError::NotHttp),
            ("file:///etc/passwd", CallbackUrlError::NotHttp),
            ("example.com/hook", CallbackUrlError::NotAUrl),
            ("", CallbackUrlError::NotAUrl),
        ] {
            assert_eq!(CallbackUrl::parse(bad, true), Err(why), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(
            CallbackUrl::parse(&long, true),
            Err(CallbackUrlError::TooLong)
        );
        // Short enough as given, too long once percent-encoded (six characters each).
        let spaces = format!("https://example.com/{}", "é".repeat(500));
        assert!(spaces.chars().count() <= MAX_URL_LEN);
        assert_eq!(
            CallbackUrl::parse(&spaces, true),
            Err(CallbackUrlError::TooLong)
        );
    }
}
