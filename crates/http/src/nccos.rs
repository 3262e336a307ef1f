//! The NCCOs of routed calls and the URLs of our own webhooks they name.

use voice_proxy_domain::call_options::{CallOptions, render_whisper};
use voice_proxy_domain::ncco::RoutedCall;
use voice_proxy_domain::routing::RouteDetails;
use voice_proxy_domain::{Ncco, PhoneNumber};

use crate::HttpSettings;

/// Where Vonage sends the events of the callee's leg: here, when we know our public URL.
pub(crate) fn event_url(settings: &HttpSettings) -> Option<String> {
    own_url(settings, "/webhooks/event")
}

/// One of our webhooks' URLs, when we know our public URL.
pub(crate) fn own_url(settings: &HttpSettings, path: &str) -> Option<String> {
    settings
        .public_base_url
        .as_ref()
        .map(|base| format!("{}{path}", base.trim_end_matches('/')))
}

/// The NCCO of a call connected to `callee`, showing `shown`: with the pairing's call options
/// (the defaults for those it does not set), and our webhooks for the whisper and the
/// recording. Without a public URL there is no whisper and no recording (a pairing cannot ask
/// for them then, nor can the defaults).
pub(crate) fn routed_ncco(
    settings: &HttpSettings,
    callee: &PhoneNumber,
    shown: &PhoneNumber,
    details: Option<&RouteDetails>,
) -> Ncco {
    let resolved: CallOptions;
    let options = match details {
        Some(d) if !d.options.is_empty() => {
            resolved = d.options.resolve(&settings.call_defaults);
            &resolved
        }
        _ => &settings.call_defaults,
    };
    let whisper_url = options.whisper.as_ref().and_then(|template| {
        let text = render_whisper(
            template,
            details.and_then(|d| d.caller_label.as_deref()),
            details.and_then(|d| d.reference.as_deref()),
        );
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("text", &text)
            .finish();
        own_url(settings, &format!("/webhooks/whisper?{query}"))
    });
    Ncco::routed(RoutedCall {
        callee,
        shown_number: shown,
        event_url: event_url(settings),
        options,
        whisper_url,
        recording_url: options
            .record
            .then(|| own_url(settings, "/webhooks/recording"))
            .flatten(),
        language: &settings.message_language,
    })
}
