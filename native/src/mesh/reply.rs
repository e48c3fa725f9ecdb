//! Where the answer to a forwarded request goes: back to the mesh client that sent it,
//! or to an InvokeService call waiting on the event loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::outbox::Owed;
use crate::codec::{Codec, FrameHead, FrameKind, Refusal};
use crate::wake_queue::{locked, WakeQueue};

/// How an InvokeService call through a channel ended: the response frame, or why not.
pub type Outcome = Result<Vec<u8>, (Refusal, String)>;

pub struct Completion {
    pub token: u64,
    pub outcome: Outcome,
}

/// Finished invocations, taken by the event loop in batches.
pub type Completions = WakeQueue<Completion>;

/// The invocations the mesh holds, by token: one its caller gave up on (cancelled, or past
/// the caller's own deadline) is found here and marked, and the mesh lets it go.
#[derive(Default)]
pub struct Calls(Mutex<HashMap<u64, Weak<InvokeReply>>>);

impl Calls {
    fn add(&self, token: u64, reply: Weak<InvokeReply>) {
        locked(&self.0).insert(token, reply);
    }

    fn remove(&self, token: u64) {
        locked(&self.0).remove(&token);
    }

    /// Marks the call under `token` given up, when the mesh still holds it: its upstream
    /// connection then drops it at its next deadline check, freeing its place in the
    /// cluster (in flight, least-request load), as it would at its own deadline.
    pub fn give_up(&self, token: u64) {
        let held = locked(&self.0).remove(&token); // unlocked before an upgrade may drop the last holder
        if let Some(reply) = held.and_then(|r| r.upgrade()) {
            reply.given_up.store(true, Ordering::Relaxed);
            reply.settled.store(true, Ordering::Relaxed); // nobody waits for its outcome
        }
    }
}

/// The way back to the event loop of one InvokeService call: settled once. The last
/// holder dropping it unsettled (the call's task ended before a connection took it)
/// refuses the call as unavailable, so that its caller is not left waiting for an answer
/// that cannot come. One held by an upstream connection may outlive the mesh thread
/// (the connection and its pending calls hold each other): the event loop refuses those
/// once the thread has ended (`MeshProxy.ended`).
pub struct InvokeReply {
    token: u64,
    completions: Arc<Completions>,
    calls: Arc<Calls>,
    settled: AtomicBool,
    given_up: AtomicBool,
}

/// Why a call dropped unsettled is refused.
pub const DROPPED: &str = "the mesh dropped the call unanswered: its thread failed or ended";

impl InvokeReply {
    /// A call under `token`, held in `calls` until settled.
    pub fn new(token: u64, completions: Arc<Completions>, calls: Arc<Calls>) -> Arc<Self> {
        let reply = Arc::new(InvokeReply {
            token,
            completions,
            calls: calls.clone(),
            settled: AtomicBool::new(false),
            given_up: AtomicBool::new(false),
        });
        calls.add(token, Arc::downgrade(&reply));
        reply
    }

    /// Hands `outcome` to the event loop, unless the call is settled already.
    pub fn settle(&self, outcome: Outcome) {
        if !self.settled.swap(true, Ordering::Relaxed) {
            self.calls.remove(self.token);
            self.completions.push(Completion {
                token: self.token,
                outcome,
            });
        }
    }

    /// Settles the call with nothing handed back: its caller heard of it some other way.
    pub fn forget(&self) {
        if !self.settled.swap(true, Ordering::Relaxed) {
            self.calls.remove(self.token);
        }
    }

    /// Whether its caller gave up on it (see `Calls::give_up`).
    pub fn given_up(&self) -> bool {
        self.given_up.load(Ordering::Relaxed)
    }
}

impl Drop for InvokeReply {
    fn drop(&mut self) {
        self.settle(Err((Refusal::Unavailable, DROPPED.to_string())));
    }
}

pub enum ReplyTo {
    Client(Owed),
    Invoke(Arc<InvokeReply>),
}

impl ReplyTo {
    /// Whether nobody waits for the answer any more: an invocation its caller gave up on.
    /// (A mesh client that went away still has its request answered into nothing: the
    /// client's connection, not the request, is what ended.)
    pub fn given_up(&self) -> bool {
        matches!(self, ReplyTo::Invoke(reply) if reply.given_up())
    }

    /// Delivers a response whose id is already the caller's.
    pub fn answer(&self, frame: &[u8]) {
        match self {
            ReplyTo::Client(outbox) => {
                outbox.push(frame);
            }
            ReplyTo::Invoke(reply) => reply.settle(Ok(frame.to_vec())),
        }
    }

    /// Ends the request without an upstream's answer: the protocol's own refusal for a
    /// client, the reason for an invocation. `request_head` is the request's first bytes.
    pub fn refuse<C: Codec>(&self, request_head: &[u8], id: u64, refusal: Refusal, message: &str) {
        match self {
            ReplyTo::Client(outbox) => {
                let head = FrameHead {
                    kind: FrameKind::Request,
                    request_id: id,
                };
                outbox.push(&C::refusal(request_head, &head, refusal, message));
            }
            ReplyTo::Invoke(reply) => reply.settle(Err((refusal, message.to_string()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcomes(completions: &Completions) -> Vec<(u64, Outcome)> {
        completions
            .take()
            .into_iter()
            .map(|c| (c.token, c.outcome))
            .collect()
    }

    #[test]
    fn a_call_is_settled_once_and_its_first_outcome_stands() {
        let completions = Arc::new(Completions::new().unwrap());
        let reply = InvokeReply::new(7, completions.clone(), Arc::default());
        reply.settle(Ok(b"answer".to_vec()));
        reply.settle(Err((Refusal::Timeout, "late".into())));
        drop(reply);
        assert_eq!(outcomes(&completions), vec![(7, Ok(b"answer".to_vec()))]);
    }

    #[test]
    fn a_call_dropped_unsettled_is_refused_as_unavailable_once_its_last_holder_lets_go() {
        let completions = Arc::new(Completions::new().unwrap());
        let reply = InvokeReply::new(3, completions.clone(), Arc::default());
        let pending = ReplyTo::Invoke(reply.clone());
        drop(reply);
        assert!(
            outcomes(&completions).is_empty(),
            "still held, still pending"
        );
        drop(pending);
        assert_eq!(
            outcomes(&completions),
            vec![(3, Err((Refusal::Unavailable, DROPPED.to_string())))]
        );
        let forgotten = InvokeReply::new(4, completions.clone(), Arc::default());
        forgotten.forget();
        drop(forgotten);
        assert!(outcomes(&completions).is_empty());
    }

    #[test]
    fn a_call_given_up_is_marked_and_settles_into_nothing() {
        let completions = Arc::new(Completions::new().unwrap());
        let calls = Arc::new(Calls::default());
        let reply = InvokeReply::new(5, completions.clone(), calls.clone());
        let answered = InvokeReply::new(6, completions.clone(), calls.clone());
        answered.settle(Ok(b"done".to_vec()));
        assert_eq!(
            locked(&calls.0).len(),
            1,
            "a settled call is no longer held"
        );
        calls.give_up(6); // too late: nothing to mark
        calls.give_up(5);
        assert!(reply.given_up() && !answered.given_up());
        assert!(ReplyTo::Invoke(reply.clone()).given_up());
        drop(reply);
        assert_eq!(outcomes(&completions), vec![(6, Ok(b"done".to_vec()))]);
        assert!(locked(&calls.0).is_empty());
    }
}
