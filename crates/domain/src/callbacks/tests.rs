use chrono::{Duration, TimeZone};
use serde_json::Value;

use super::*;
use crate::pairing::Participant;

fn number(s: &str) -> PhoneNumber {
    PhoneNumber::parse(s).unwrap()
}

fn pairing() -> Pairing {
    let created = Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 0).unwrap();
    Pairing {
        id: PairingId::new(),
        reference: Some("trip-42".into()),
        created_at: created,
        expires_at: created + Duration::hours(1),
        closed_at: None,
        participants: [
            Participant {
                number: number("+14155550101"),
                label: Some("driver".into()),
                proxy_number: number("+12125550123"),
                pin: None,
            },
            Participant {
                number: number("+14155550102"),
                label: None,
                proxy_number: number("+12125550124"),
                pin: None,
            },
        ],
        call_options: Default::default(),
        pin_access: false,
        read_at: created,
    }
}

fn body(m: &Message) -> Value {
    serde_json::from_str(&m.body).unwrap()
}

#[test]
fn a_pairing_message_carries_labels_and_proxy_numbers_never_the_people() {
    let p = pairing();
    let m = Message::pairing(EventType::PairingCreated, &p, p.created_at);
    assert!(!m.body.contains("4155550101") && !m.body.contains("4155550102"));
    let b = body(&m);
    assert_eq!(b["type"], "pairing.created");
    assert_eq!(b["timestamp"], "2026-05-01T10:00:00.000Z");
    assert_eq!(b["data"]["pairing_id"], p.id.to_string());
    assert_eq!(b["data"]["reference"], "trip-42");
    assert_eq!(b["data"]["status"], "active");
    assert_eq!(b["data"]["participants"][0]["label"], "driver");
    assert_eq!(b["data"]["participants"][0]["proxy_number"], "12125550123");
    assert_eq!(b["data"]["participants"][1]["label"], Value::Null);
    assert_eq!(m.ordering_key, Some(format!("pairing:{}", p.id)));
    // Each message its own id; an expiry is told as expired whatever the clock of the read.
    let expired = Message::pairing(EventType::PairingExpired, &p, p.expires_at);
    assert_ne!(expired.id, m.id);
    assert_eq!(body(&expired)["data"]["status"], "expired");
}

#[test]
fn call_messages_share_the_calls_context_and_add_what_happened() {
    let started = Utc.with_ymd_and_hms(2026, 5, 1, 10, 5, 0).unwrap();
    let call = CallContext {
        call_id: CallId::new(),
        conversation_uuid: Some("CON-1".into()),
        outcome: CallOutcome::Routed,
        pairing_id: Some(PairingId::new()),
        reference: Some("trip-42".into()),
        caller_label: Some("driver".into()),
        callee_label: Some("rider".into()),
        proxy_number: Some("12125550123".into()),
        started_at: started,
    };
    let s = body(&Message::call_started(&call));
    assert_eq!(s["type"], "call.started");
    assert_eq!(s["data"]["outcome"], "routed");
    assert_eq!(s["data"]["caller_label"], "driver");
    assert_eq!(s["data"]["proxy_number"], "12125550123");
    let answered = started + Duration::seconds(7);
    let a = body(&Message::call_answered(&call, answered));
    assert_eq!(a["data"]["answered_at"], "2026-05-01T10:05:07.000Z");
    let end = CallEnd {
        status: Some(CallStatus::Completed),
        answered_at: Some(answered),
        ended_at: answered + Duration::seconds(60),
        talk_seconds: Some(60),
        price: Money::parse("0.0125"),
    };
    let ended = Message::call_ended(&call, &end);
    let e = body(&ended);
    assert_eq!(e["type"], "call.ended");
    assert_eq!(e["timestamp"], "2026-05-01T10:06:07.000Z");
    assert_eq!(e["data"]["status"], "completed");
    assert_eq!(e["data"]["talk_seconds"], 60);
    assert_eq!(e["data"]["price"], "0.0125");
    assert_eq!(
        ended.ordering_key,
        Some(format!("pairing:{}", call.pairing_id.unwrap()))
    );
    let stranger = CallContext {
        pairing_id: None,
        outcome: CallOutcome::NoPairing,
        ..call
    };
    assert_eq!(
        Message::call_started(&stranger).ordering_key.as_deref(),
        Some("conversation:CON-1")
    );
}

#[test]
fn the_out_of_session_request_masks_the_caller() {
    let call = OutOfSessionCall {
        call_id: CallId::new(),
        conversation_uuid: "CON-2".into(),
        caller: number("+14155550101"),
        dialled: number("+12125550123"),
        recent: Some(RecentPairing {
            pairing_id: PairingId::new(),
            reference: Some("trip-42".into()),
            status: PairingStatus::Expired,
            position: 0,
            label: Some("driver".into()),
        }),
    };
    let text = out_of_session_body(&call, Utc::now());
    assert!(!text.contains("4155550101"), "{text}");
    let b: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(b["type"], "call.out_of_session");
    assert_eq!(b["data"]["dialled_number"], "12125550123");
    assert_eq!(b["data"]["recent_pairing"]["status"], "expired");
    assert_eq!(b["data"]["recent_pairing"]["caller_position"], 0);
    assert!(
        b["data"]["caller_masked"]
            .as_str()
            .unwrap()
            .ends_with("0101")
    );
}

#[test]
fn event_type_lists_are_checked_and_kept_as_bits() {
    assert_eq!(EventTypes::All.bits().count_ones(), 8);
    let only = EventTypes::parse(&["call.ended", "pairing.closed"]).unwrap();
    assert!(only.contains(EventType::CallEnded) && !only.contains(EventType::CallStarted));
    assert_eq!(
        only.bits(),
        EventType::CallEnded.bit() | EventType::PairingClosed.bit()
    );
    assert_eq!(only.names(), Some(vec!["call.ended", "pairing.closed"]));
    for bad in [&["call.ringing"][..], &[], &["call.ended", "call.ended"]] {
        assert!(EventTypes::parse(bad).is_err(), "{bad:?}");
    }
    for t in EventType::ALL {
        assert_eq!(EventType::parse(t.as_str()), Some(t));
    }
}
