//! A deadline for request bodies: a body that has not arrived in full within the deadline, counted
//! from when the request's head was read, ends in an error (the handler answers 408 and the
//! connection is closed). Without it, a client that sends headers and then stalls holds its
//! connection, and the buffers of a half-read body, for as long as it likes.
//!
//! And a body left unread must not hold the connection either: when a handler answers without
//! reading the body (a refused signature, a 401, a 404), actix-web closes the connection after
//! the response if the body is still unfinished and still referenced, but once the handler has
//! dropped a chunked body it keeps reading and discarding it, with no time limit. So the request's
//! body is kept referenced by the response ([`Guarded`]) until the response is sent.
//!
//! Only the body is covered: actix-web already bounds the time to send the head
//! (`client_request_timeout`, 5 s).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::HttpMessage;
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::web::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

/// The error a body stream ends with when its deadline passes.
pub fn is_body_timeout(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

/// Wraps the body of `req`, if it has one, so that reading it fails once `limit` has passed.
/// Returns a reference to the body for the response to keep ([`Guarded`]).
pub fn limit_body(req: &mut ServiceRequest, limit: Duration) -> Option<BodyRef> {
    let has_body =
        req.headers().contains_key(CONTENT_LENGTH) || req.headers().contains_key(TRANSFER_ENCODING);
    if !has_body {
        return None;
    }
    let inner = Rc::new(RefCell::new(req.take_payload()));
    let deadline = Instant::now() + limit;
    let stream: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(DeadlineBody {
        inner: inner.clone(),
        deadline,
        sleep: None,
        done: false,
    });
    req.set_payload(Payload::from(stream));
    Some(BodyRef(inner))
}

/// A reference to a request's body: while one is held, actix-web sees the body as still wanted.
pub struct BodyRef(#[allow(dead_code)] Rc<RefCell<Payload>>);

/// A response body that holds its request's body until the response has been sent, so that an
/// unfinished request body closes the connection instead of being drained for ever.
pub struct Guarded<B> {
    body: B,
    _request_body: Option<BodyRef>,
}

impl<B> Guarded<B> {
    pub fn new(body: B, request_body: Option<BodyRef>) -> Self {
        Self {
            body,
            _request_body: request_body,
        }
    }
}

impl<B: MessageBody + Unpin> MessageBody for Guarded<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

struct DeadlineBody {
    inner: Rc<RefCell<Payload>>,
    deadline: Instant,
    /// Created the first time the body is not all there: most bodies arrive with their head,
    /// and their requests then register no timer.
    sleep: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl Stream for DeadlineBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut *self.inner.borrow_mut()).poll_next(cx);
        match polled {
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Pending => {
                let deadline = self.deadline;
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => {
                        self.done = true;
                        metrics::counter!("request_body_timeouts_total").increment(1);
                        Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the request body did not arrive in time",
                        )))))
                    }
                }
            }
        }
    }
}
