//! Requests whose body stalls: each gets until `REQUEST_BODY_TIMEOUT_MS` to arrive, then its
//! connection is closed, so a crowd of them cannot hold connections and memory for good.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::binary;
use crate::helpers::create_database;

const STALLED: usize = 2000;

/// Opens `n` connections that each send the head of an event and half of its body, then stop.
async fn stall(addr: &str, n: usize) -> Vec<TcpStream> {
    let half = vec![b' '; 16 * 1024];
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let mut socket = TcpStream::connect(addr).await.expect("a connection");
        let head = "POST /webhooks/event HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                    content-length: 32768\r\n\r\n";
        socket.write_all(head.as_bytes()).await.unwrap();
        socket.write_all(&half).await.unwrap();
        sockets.push(socket);
    }
    sockets
}

/// Reads each connection to its end; returns how many the service closed within `limit`.
async fn closed_within(sockets: Vec<TcpStream>, limit: Duration) -> usize {
    let reads = sockets.into_iter().map(|mut s| {
        tokio::spawn(async move {
            let mut answer = Vec::new();
            tokio::time::timeout(limit, s.read_to_end(&mut answer))
                .await
                .is_ok_and(|r| r.is_ok())
                && answer.starts_with(b"HTTP/1.1 408")
        })
    });
    let mut closed = 0;
    for read in reads.collect::<Vec<_>>() {
        if read.await.unwrap() {
            closed += 1;
        }
    }
    closed
}

fn fd_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

#[tokio::test]
async fn stalled_bodies_are_cut_off_and_leave_memory_bounded_and_health_answering() {
    assert!(
        fd_limit() > 2 * STALLED as u64 + 200,
        "this test opens {STALLED} connections: raise the open files limit (ulimit -n)"
    );
    let url = create_database().await;
    let service = binary::start(&[
        ("DATABASE_URL", &url),
        // Long enough for every stalled body of a wave to be open at once, however slowly the
        // connections are made on a busy machine: each wave then holds the same.
        ("REQUEST_BODY_TIMEOUT_MS", "4000"),
        ("RETENTION_DAYS", "0"),
        // One worker: with two, the allocator keeps a heap for each worker's thread, and a wave
        // that lands mostly on the other worker's grows that heap to the same size again, which
        // is not a leak but would look like one below.
        ("HTTP_WORKERS", "1"),
    ])
    .await;
    let addr = service.base.trim_start_matches("http://").to_owned();
    let client = reqwest::Client::new();
    let health = async || {
        let started = Instant::now();
        let r = client
            .get(service.url("/healthz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("/healthz answers beside the stalled bodies");
        assert!(r.status().is_success());
        started.elapsed()
    };
    health().await;
    let before = service.rss_kib();

    // Two waves: memory after the second is what the first left, not twice as much.
    let mut after_wave = Vec::new();
    for wave in 0..2 {
        let opening = Instant::now();
        let sockets = stall(&addr, STALLED).await;
        eprintln!(
            "wave {wave}: {STALLED} stalled bodies sent in {:?}",
            opening.elapsed()
        );
        // Answering at all is what is checked: how fast is for the benchmarks, and this test
        // shares two cores with the rest of the suite.
        let answered_in = health().await;
        eprintln!(
            "wave {wave}: /healthz answered in {answered_in:?} beside {STALLED} stalled bodies"
        );
        let closed = closed_within(sockets, Duration::from_secs(10)).await;
        assert_eq!(
            closed, STALLED,
            "wave {wave}: every stalled request is answered 408 and its connection closed"
        );
        health().await;
        after_wave.push(service.rss_kib());
    }
    let (first, second) = (after_wave[0], after_wave[1]);
    eprintln!(
        "RSS: {before} KiB before, {first} KiB after 2,000 stalled bodies, {second} KiB after 4,000"
    );
    assert!(
        second < first + first / 4 + 8 * 1024,
        "memory keeps growing with stalled bodies: {before} -> {first} -> {second} KiB"
    );
    assert!(
        second < before + 256 * 1024,
        "stalled bodies hold on to memory: {before} -> {second} KiB"
    );
}

#[tokio::test]
async fn a_stalled_admin_request_is_cut_off_too() {
    let app = crate::helpers::spawn_app_with(&[("REQUEST_BODY_TIMEOUT_MS", "500")]).await;
    let mut socket = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/pairings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         authorization: Bearer {}\r\ncontent-length: 100\r\n\r\n{{\"partici",
        crate::helpers::ADMIN_TOKEN
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer))
        .await
        .expect("the connection is closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request-timeout"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(400));
}

/// A body that says it is larger than any webhook takes is refused at once, unread; a method a
/// webhook does not take is a 405.
#[tokio::test]
async fn an_oversized_body_is_refused_before_it_is_read_and_other_methods_are_405() {
    let app = crate::helpers::spawn_app().await;
    let mut socket = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = "POST /webhooks/event HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                content-length: 1000000000\r\n\r\n{";
    socket.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer))
        .await
        .expect("answered and closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not after the body deadline"
    );
    for path in ["/webhooks/event", "/webhooks/answer"] {
        let r = app.client.put(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()["allow"], "GET, POST");
    }
}

/// A chunked body that never ends, sent to routes that answer without reading it (a refused
/// signature, a missing credential, a route that takes no body, no route at all): the
/// connection is closed once the answer is sent, not held while the body is drained for ever.
#[tokio::test]
async fn an_unread_chunked_body_does_not_hold_the_connection() {
    let app = crate::helpers::spawn_app_with(&[
        ("VONAGE_SIGNATURE_SECRET", "vonage-signature-secret"),
        ("REQUEST_BODY_TIMEOUT_MS", "500"),
    ])
    .await;
    for (request, status) in [
        ("POST /webhooks/answer", "503"),
        ("POST /webhooks/event", "503"),
        ("POST /v1/pairings", "401"),
        ("POST /healthz", "404"),
        ("POST /no/such/route", "404"),
    ] {
        let mut socket = TcpStream::connect(app.address.trim_start_matches("http://"))
            .await
            .unwrap();
        let head = format!(
            "{request} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             transfer-encoding: chunked\r\n\r\n1\r\na"
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{request}: the connection is still open after 5 s"))
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{request}: {answer}"
        );
    }
}
