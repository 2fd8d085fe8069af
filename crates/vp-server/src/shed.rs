//! Load shedding: at most `max_in_flight` requests are handled at once and at most `max_queue` more wait for a
//! slot; anything beyond that is answered at once with 503 and `Retry-After` instead of piling up memory and
//! latency. Only inference routes go through it; probes and metrics never queue behind inference.

use crate::{ApiError, MemoryBudget};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Admission control for one server's inference routes.
#[derive(Debug)]
pub struct Shedder {
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    max_queue: usize,
    waiting: AtomicUsize,
    shed: prometheus::IntCounter,
}

/// The request was refused because the server is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "server is at capacity ({in_flight} requests in flight, {queued} queued); retry after a second"
)]
pub struct Overloaded {
    pub in_flight: usize,
    pub queued: usize,
}

/// Holds a queue place until dropped (also when a queued request is cancelled by its timeout).
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shedder {
    /// `shed` counts refused requests.
    pub fn new(max_in_flight: usize, max_queue: usize, shed: prometheus::IntCounter) -> Self {
        let max_in_flight = max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            max_queue,
            waiting: AtomicUsize::new(0),
            shed,
        }
    }

    /// Takes a slot now, or a queue place and then a slot, or refuses.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, Overloaded> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        let place = QueuePlace(&self.waiting);
        if queued >= self.max_queue {
            drop(place);
            self.shed.inc();
            return Err(Overloaded {
                in_flight: self.max_in_flight,
                queued,
            });
        }
        let permit = self.slots.clone().acquire_owned().await;
        drop(place);
        permit.map_err(|_| Overloaded {
            in_flight: self.max_in_flight,
            queued,
        })
    }

    /// Counts a request refused for another overload reason (memory budget busy).
    pub fn count_shed(&self) {
        self.shed.inc();
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.slots.available_permits()
    }
}

/// The 503 reply for a refused request: `Retry-After: 1` and the OIP error body.
pub fn overloaded_reply(e: &Overloaded) -> Response {
    crate::error_reply(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        e.to_string(),
    ))
}

/// What admitting one request to an inference route takes: a slot (or queue place) and memory for its body.
#[derive(Debug)]
pub struct Admission {
    pub shedder: Arc<Shedder>,
    pub budget: MemoryBudget,
    pub cost: BodyCost,
}

/// Memory one request of a route needs: `per_byte` times its body (the body limit when no `Content-Length` is
/// sent) plus `fixed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyCost {
    pub limit: u64,
    pub per_byte: u64,
    pub fixed: u64,
}

impl BodyCost {
    pub fn of(&self, content_length: Option<u64>) -> u64 {
        let body = content_length.map_or(self.limit, |n| n.min(self.limit));
        body.saturating_mul(self.per_byte)
            .saturating_add(self.fixed)
    }

    /// The most any one request can need.
    pub fn worst(&self) -> u64 {
        self.of(None)
    }
}

/// axum middleware for inference routes:
/// `route.layer(axum::middleware::from_fn_with_state(admission, vp_server::shed::layer))`.
pub async fn layer(State(a): State<Arc<Admission>>, req: Request, next: Next) -> Response {
    let permit = match a.shedder.admit().await {
        Ok(p) => p,
        Err(e) => return overloaded_reply(&e),
    };
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let memory = match a.budget.try_reserve(a.cost.of(length)) {
        Ok(r) => r,
        Err(e) => {
            if e == crate::BudgetError::Busy {
                a.shedder.count_shed();
            }
            return crate::error_reply(e.into());
        }
    };
    let r = next.run(req).await;
    drop(memory);
    drop(permit);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shedder(in_flight: usize, queue: usize) -> Arc<Shedder> {
        let c = prometheus::IntCounter::new("shed", "shed").expect("counter");
        Arc::new(Shedder::new(in_flight, queue, c))
    }

    #[tokio::test]
    async fn beyond_slots_and_queue_requests_are_refused_and_counted() {
        let s = shedder(2, 1);
        let a = s.admit().await.expect("slot 1");
        let _b = s.admit().await.expect("slot 2");
        assert_eq!(s.in_flight(), 2);
        let s2 = s.clone();
        let queued = tokio::spawn(async move { s2.admit().await.map(|_| ()) });
        tokio::task::yield_now().await;
        let refused = s.admit().await.expect_err("queue is full");
        assert_eq!(refused.queued, 1);
        assert_eq!(s.shed.get(), 1);
        drop(a);
        assert_eq!(queued.await.expect("join"), Ok(()));
        // The queue place was given back: the next waiter may queue again.
        assert_eq!(s.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_gives_its_queue_place_back() {
        let s = shedder(1, 1);
        let _a = s.admit().await.expect("slot");
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), s.admit()).await;
        assert!(waited.is_err(), "should still be waiting");
        assert_eq!(s.waiting.load(Ordering::SeqCst), 0);
        let again = tokio::time::timeout(std::time::Duration::from_millis(20), s.admit()).await;
        assert!(again.is_err(), "queued again, not refused");
        assert_eq!(s.shed.get(), 0);
    }

    #[test]
    fn refusal_reply_is_503_with_retry_after() {
        assert_eq!(
            BodyCost {
                limit: 100,
                per_byte: 2,
                fixed: 1
            }
            .of(Some(1000)),
            201
        );
        let r = overloaded_reply(&Overloaded {
            in_flight: 4,
            queued: 4,
        });
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
    }
}
