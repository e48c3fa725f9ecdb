//! Where the answer to a forwarded request goes: back to the mesh client that sent it,
//! or to an InvokeService call waiting on the event loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::outbox::Owed;
use crate::codec::{Codec, FrameHead, FrameKind, Refusal};
use crate::wake_queue::WakeQueue;

/// How an InvokeService call through a channel ended: the response frame, or why not.
pub type Outcome = Result<Vec<u8>, (Refusal, String)>;

pub struct Completion {
    pub token: u64,
    pub outcome: Outcome,
}

/// Finished invocations, taken by the event loop in batches.
pub type Completions = WakeQueue<Completion>;

/// The way back to the event loop of one InvokeService call: settled once. The last
/// holder dropping it unsettled (the call's task ended before a connection took it)
/// refuses the call as unavailable, so that its caller is not left waiting for an answer
/// that cannot come. One held by an upstream connection may outlive the mesh thread
/// (the connection and its pending calls hold each other): the event loop refuses those
/// once the thread has ended (`MeshProxy.ended`).
pub struct InvokeReply {
    token: u64,
    completions: Arc<Completions>,
    settled: AtomicBool,
}

/// Why a call dropped unsettled is refused.
pub const DROPPED: &str = "the mesh dropped the call unanswered: its thread failed or ended";

impl InvokeReply {
    pub fn new(token: u64, completions: Arc<Completions>) -> Self {
        InvokeReply {
            token,
            completions,
            settled: AtomicBool::new(false),
        }
    }

    /// Hands `outcome` to the event loop, unless the call is settled already.
    pub fn settle(&self, outcome: Outcome) {
        if !self.settled.swap(true, Ordering::Relaxed) {
            self.completions.push(Completion {
                token: self.token,
                outcome,
            });
        }
    }

    /// Settles the call with nothing handed back: its caller heard of it some other way.
    pub fn forget(&self) {
        self.settled.store(true, Ordering::Relaxed);
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
        let reply = InvokeReply::new(7, completions.clone());
        reply.settle(Ok(b"answer".to_vec()));
        reply.settle(Err((Refusal::Timeout, "late".into())));
        drop(reply);
        assert_eq!(outcomes(&completions), vec![(7, Ok(b"answer".to_vec()))]);
    }

    #[test]
    fn a_call_dropped_unsettled_is_refused_as_unavailable_once_its_last_holder_lets_go() {
        let completions = Arc::new(Completions::new().unwrap());
        let reply = Arc::new(InvokeReply::new(3, completions.clone()));
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
        let forgotten = InvokeReply::new(4, completions.clone());
        forgotten.forget();
        drop(forgotten);
        assert!(outcomes(&completions).is_empty());
    }
}
