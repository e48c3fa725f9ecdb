//! Bytes waiting to be written to one socket, filled by any task of the proxy thread
//! and drained by that socket's writer task in one write per wake-up.

use std::cell::{Cell, RefCell};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

#[derive(Default)]
pub struct Outbox {
    buffer: RefCell<Vec<u8>>,
    notify: Notify,
    closed: Cell<bool>,
    /// Wakes whoever waits in [`Outbox::closed`].
    closing: Notify,
    limit: usize,
}

impl Outbox {
    pub fn new(limit: usize) -> Self {
        Outbox {
            limit,
            ..Default::default()
        }
    }

    /// Queues `bytes`; false (and the outbox closes) when the peer has let more than
    /// the limit pile up, or the outbox is already closed.
    pub fn push(&self, bytes: &[u8]) -> bool {
        if self.closed.get() {
            return false;
        }
        let mut buffer = self.buffer.borrow_mut();
        if buffer.len() + bytes.len() > self.limit {
            drop(buffer);
            self.close();
            return false;
        }
        let was_empty = buffer.is_empty();
        buffer.extend_from_slice(bytes);
        if was_empty {
            self.notify.notify_one();
        }
        true
    }

    pub fn close(&self) {
        self.closed.set(true);
        self.notify.notify_one();
        self.closing.notify_waiters();
    }

    /// Resolves once the outbox is closed (by overflow, a failed write, or its owner).
    pub async fn closed(&self) {
        while !self.closed.get() {
            self.closing.notified().await;
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Writes whatever is queued until the outbox closes or the socket fails.
    pub async fn drain<W: AsyncWrite + Unpin>(&self, mut socket: W) {
        let mut sending = Vec::new();
        loop {
            // Swap, so the next batch fills the old allocation.
            std::mem::swap(&mut *self.buffer.borrow_mut(), &mut sending);
            if sending.is_empty() {
                if self.closed.get() {
                    break;
                }
                self.notify.notified().await;
                continue;
            }
            if socket.write_all(&sending).await.is_err() {
                self.close();
                break;
            }
            sending.clear();
        }
        let _ = socket.shutdown().await;
    }
}
