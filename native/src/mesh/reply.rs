//! Where the answer to a forwarded request goes: back to the mesh client that sent it,
//! or to an InvokeService call waiting on the event loop.

use super::outbox::Owed;
use crate::codec::{Codec, FrameHead, FrameKind, Refusal};
use crate::wake_queue::WakeQueue;

/// How an InvokeService call through a channel ended.
pub struct Completion {
    pub token: u64,
    pub outcome: Result<Vec<u8>, (Refusal, String)>,
}

/// Finished invocations, taken by the event loop in batches.
pub type Completions = WakeQueue<Completion>;

pub enum ReplyTo {
    Client(Owed),
    Invoke {
        token: u64,
        completions: std::sync::Arc<Completions>,
    },
}

impl ReplyTo {
    /// Delivers a response whose id is already the caller's.
    pub fn answer(&self, frame: &[u8]) {
        match self {
            ReplyTo::Client(outbox) => {
                outbox.push(frame);
            }
            ReplyTo::Invoke { token, completions } => completions.push(Completion {
                token: *token,
                outcome: Ok(frame.to_vec()),
            }),
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
            ReplyTo::Invoke { token, completions } => completions.push(Completion {
                token: *token,
                outcome: Err((refusal, message.to_string())),
            }),
        }
    }
}
