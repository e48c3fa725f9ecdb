//! Where the answer to a forwarded request goes: back to the mesh client that sent it,
//! or to an InvokeService call waiting on the event loop.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::Mutex;

use super::outbox::Outbox;
use crate::codec::{Codec, FrameHead, FrameKind, Refusal};

/// How an InvokeService call through a channel ended.
pub struct Completion {
    pub token: u64,
    pub outcome: Result<Vec<u8>, (Refusal, String)>,
}

/// Finished invocations, taken by the event loop in batches: the first one queued while
/// the queue is empty writes a byte to a socket the loop watches (one wake-up per batch).
pub struct Completions {
    queue: Mutex<Vec<Completion>>,
    wake: UnixStream,
}

impl Completions {
    pub fn new(wake: UnixStream) -> Self {
        Completions {
            queue: Mutex::new(Vec::new()),
            wake,
        }
    }

    pub fn complete(&self, completion: Completion) {
        let mut queue = self.queue.lock().expect("completions poisoned");
        let first = queue.is_empty();
        queue.push(completion);
        drop(queue);
        if first {
            // A full socket buffer already holds a wake-up: nothing is lost.
            let _ = (&self.wake).write(&[1]);
        }
    }

    pub fn take(&self) -> Vec<Completion> {
        std::mem::take(&mut *self.queue.lock().expect("completions poisoned"))
    }
}

pub enum ReplyTo {
    Client(Rc<Outbox>),
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
            ReplyTo::Invoke { token, completions } => completions.complete(Completion {
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
            ReplyTo::Invoke { token, completions } => completions.complete(Completion {
                token: *token,
                outcome: Err((refusal, message.to_string())),
            }),
        }
    }
}
