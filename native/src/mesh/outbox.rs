//! Bytes waiting to be written to one socket, filled by any task of the proxy thread
//! and drained by that socket's writer task in one write per wake-up.

use std::cell::{Cell, RefCell};
use std::ops::Deref;
use std::rc::Rc;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// What a batch's allocation keeps once batches are small again.
const KEPT_CAPACITY: usize = 64 * 1024;

#[derive(Default)]
pub struct Outbox {
    buffer: RefCell<Vec<u8>>,
    notify: Notify,
    closed: Cell<bool>,
    /// Wakes whoever waits in [`Outbox::closed`] or [`Outbox::settled`].
    closing: Notify,
    limit: usize,
    /// Requests of this client still to be answered (see [`Owed`]).
    owed: Cell<usize>,
}

/// One request's claim on its client's outbox, held until its answer (or refusal) is
/// queued: a client that stops sending still gets the answers it is owed.
pub struct Owed(Rc<Outbox>);

impl Deref for Owed {
    type Target = Outbox;

    fn deref(&self) -> &Outbox {
        &self.0
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        let owed = self.0.owed.get() - 1;
        self.0.owed.set(owed);
        if owed == 0 {
            self.0.closing.notify_waiters();
        }
    }
}

impl Outbox {
    pub fn new(limit: usize) -> Self {
        Outbox {
            limit,
            ..Default::default()
        }
    }

    /// Queues `bytes`; false (and the outbox closes) when the peer has let the limit pile
    /// up already, or the outbox is already closed. The limit is on what a slow reader
    /// leaves waiting, not on one frame: a frame goes in while less than the limit waits
    /// (frame sizes have limits of their own), so two large answers read from an upstream
    /// in one turn, before the writer could take the first, do not cut off a client that
    /// reads. A reader that stopped is cut off with at most the limit and a frame queued.
    pub fn push(&self, bytes: &[u8]) -> bool {
        if self.closed.get() {
            return false;
        }
        let mut buffer = self.buffer.borrow_mut();
        if buffer.len() >= self.limit {
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

    /// A claim on this outbox for one request's answer.
    pub fn owe(self: &Rc<Self>) -> Owed {
        self.owed.set(self.owed.get() + 1);
        Owed(self.clone())
    }

    /// Resolves once every request of this client is answered, or the outbox is closed.
    pub async fn settled(&self) {
        while self.owed.get() > 0 && !self.closed.get() {
            self.closing.notified().await;
        }
    }

    /// Whether answers are still owed to the client.
    pub fn owes(&self) -> bool {
        self.owed.get() > 0
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Bytes queued and not yet handed to the socket.
    pub fn backlog(&self) -> usize {
        self.buffer.borrow().len()
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
                // Nothing queued: one large answer would leave both allocations at its size
                // for as long as the connection lasts.
                sending.shrink_to(KEPT_CAPACITY);
                self.buffer.borrow_mut().shrink_to(KEPT_CAPACITY);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[test]
    fn one_frame_over_the_limit_goes_into_an_empty_outbox_and_more_behind_it_closes_it() {
        let outbox = Outbox::new(10);
        assert!(outbox.push(&[0; 25]));
        assert!(!outbox.is_closed());
        assert!(!outbox.push(&[0; 1]));
        assert!(outbox.is_closed());
    }

    #[test]
    fn answers_larger_than_half_the_limit_queued_in_one_turn_keep_the_outbox() {
        let outbox = Outbox::new(16);
        assert!(outbox.push(&[0; 9]));
        assert!(
            outbox.push(&[0; 9]),
            "the second answer of one upstream read"
        );
        assert!(!outbox.push(&[0; 1]), "18 bytes wait: the limit is passed");
        assert!(outbox.is_closed());
    }

    #[tokio::test]
    async fn a_large_batch_gives_its_memory_back_once_written() {
        let outbox = Outbox::new(4 << 20);
        // Until the writer has taken what is queued and waits for more.
        let idle = || async {
            while outbox.backlog() > 0 {
                tokio::task::yield_now().await;
            }
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        };
        let pushing = async {
            idle().await;
            outbox.push(&vec![1; 1 << 20]);
            idle().await;
            // the written batch's allocation, now the one the next answers fill
            let kept = outbox.buffer.borrow().capacity();
            outbox.close();
            kept
        };
        let ((), kept) = tokio::join!(outbox.drain(tokio::io::sink()), pushing);
        assert!(
            kept <= KEPT_CAPACITY,
            "{kept} bytes kept for the next answers"
        );
    }

    #[test]
    fn settled_waits_for_every_owed_answer() {
        let outbox = Rc::new(Outbox::new(10));
        let (first, second) = (outbox.owe(), outbox.owe());
        let mut settled = Box::pin(outbox.settled());
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(settled.as_mut().poll(&mut cx).is_pending());
        drop(first);
        assert!(settled.as_mut().poll(&mut cx).is_pending());
        drop(second);
        assert!(settled.as_mut().poll(&mut cx).is_ready());
    }
}
