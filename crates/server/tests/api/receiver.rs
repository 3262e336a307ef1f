//! A marketplace's callback receiver, in the test process: a real HTTP server that records every
//! request it is sent, answers as the test tells it, and checks signatures with the
//! `standardwebhooks` crate, as a marketplace would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::Value;
use standardwebhooks::Webhook;

use crate::helpers::wait_until;

/// How the receiver answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status, with an empty body.
    Status(u16),
    /// 200 with this JSON body.
    Json(Value),
    /// Waits this long, then answers the inner reply.
    After(Duration, Box<Reply>),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn id(&self) -> &str {
        self.headers["webhook-id"].to_str().unwrap()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_owned()
    }

    /// Whether `secret` (`whsec_...`) verifies this request, timestamp included.
    pub fn verifies_with(&self, secret: &str) -> bool {
        Webhook::new(secret)
            .expect("a Standard Webhooks secret")
            .verify(&self.body, &self.headers)
            .is_ok()
    }

    /// The number of `v1,` signatures in `webhook-signature`.
    pub fn signatures(&self) -> usize {
        self.headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .filter(|s| s.starts_with("v1,"))
            .count()
    }
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// Requests being answered, by `webhook-id`.
    in_flight: HashMap<String, usize>,
    /// Whether a `webhook-id` was ever being answered twice at once.
    overlapped: bool,
}

struct Shared {
    state: Mutex<State>,
    /// The replies for the next requests, in turn; once used up, `reply`.
    queue: Mutex<Vec<Reply>>,
    reply: Mutex<Reply>,
}

pub struct Receiver {
    pub url: String,
    shared: Arc<Shared>,
}

impl Receiver {
    /// Starts a receiver that answers every request with `reply`.
    pub fn start(reply: Reply) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            queue: Mutex::default(),
            reply: Mutex::new(reply),
        });
        let data = web::Data::from(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(1 << 20))
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("the receiver binds");
        let port = server.addrs()[0].port();
        let server = server.run();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/hooks"),
            shared,
        }
    }

    /// Answers every later request with `reply`.
    pub fn set_reply(&self, reply: Reply) {
        *self.shared.reply.lock().unwrap() = reply;
    }

    /// Answers the next requests with these replies, in turn, before the standing one.
    pub fn queue_replies(&self, replies: Vec<Reply>) {
        self.shared.queue.lock().unwrap().extend(replies);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.state.lock().unwrap().received.clone()
    }

    /// Whether some message was being answered twice at the same time.
    pub fn overlapped(&self) -> bool {
        self.shared.state.lock().unwrap().overlapped
    }

    /// Waits until `n` requests have come in.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        wait_until(&format!("{n} callbacks to arrive"), limit, async || {
            self.received().len() >= n
        })
        .await;
        self.received()
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let mut headers = http::HeaderMap::new();
    for (name, value) in req.headers() {
        headers.append(
            http::HeaderName::from_bytes(name.as_str().as_bytes()).unwrap(),
            http::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
        );
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    {
        let mut state = shared.state.lock().unwrap();
        state.received.push(Received {
            headers,
            body: body.to_vec(),
            at: Instant::now(),
        });
        let n = state.in_flight.entry(id.clone()).or_default();
        *n += 1;
        if *n > 1 {
            state.overlapped = true;
        }
    }
    let reply = {
        let mut queue = shared.queue.lock().unwrap();
        if queue.is_empty() {
            shared.reply.lock().unwrap().clone()
        } else {
            queue.remove(0)
        }
    };
    // Counted out when the answer is done or the sender gave up (the handler is dropped).
    let _answering = Answering {
        shared: &shared,
        id,
    };
    answer(reply).await
}

struct Answering<'a> {
    shared: &'a Shared,
    id: String,
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        if let Some(n) = self
            .shared
            .state
            .lock()
            .unwrap()
            .in_flight
            .get_mut(&self.id)
        {
            *n -= 1;
        }
    }
}

async fn answer(mut reply: Reply) -> HttpResponse {
    loop {
        match reply {
            Reply::Status(code) => {
                return HttpResponse::build(
                    actix_web::http::StatusCode::from_u16(code).expect("a status code"),
                )
                .finish();
            }
            Reply::Json(body) => return HttpResponse::Ok().json(body),
            Reply::After(wait, then) => {
                tokio::time::sleep(wait).await;
                reply = *then;
            }
        }
    }
}
