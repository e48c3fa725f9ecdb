//! A queue a worker thread fills and the event loop empties in batches, with one wake-up
//! per batch: the first item pushed while the queue is empty writes a byte to a socket the
//! loop watches, and taking the batch reads those bytes back.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};

/// `mutex` locked, whether or not a panic poisoned it. For state that no panic can leave
/// half-changed while locked (every holder only pushes, takes or copies), and for locking
/// in a Drop, which must not panic (see mesh::reply::InvokeReply).
pub(crate) fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct WakeQueue<T> {
    queue: Mutex<Vec<T>>,
    /// The worker's end: written to wake the loop.
    wake: UnixStream,
    /// The loop's end: watched, and drained when the batch is taken.
    woken: UnixStream,
}

impl<T> WakeQueue<T> {
    pub fn new() -> io::Result<Self> {
        let (woken, wake) = UnixStream::pair()?;
        woken.set_nonblocking(true)?;
        wake.set_nonblocking(true)?;
        Ok(WakeQueue {
            queue: Mutex::new(Vec::new()),
            wake,
            woken,
        })
    }

    pub fn push(&self, item: T) {
        let mut queue = locked(&self.queue);
        let first = queue.is_empty();
        queue.push(item);
        drop(queue);
        if first {
            // A full socket buffer already holds a wake-up: nothing is lost.
            let _ = (&self.wake).write(&[1]);
        }
    }

    /// Wakes the loop with nothing pushed: for news it reads elsewhere.
    pub fn wake(&self) {
        let _ = (&self.wake).write(&[1]);
    }

    /// The descriptor the event loop watches: readable when items are waiting.
    pub fn fd(&self) -> RawFd {
        self.woken.as_raw_fd()
    }

    /// Every item waiting, oldest first.
    pub fn take(&self) -> Vec<T> {
        let mut drain = [0u8; 256];
        while matches!((&self.woken).read(&mut drain), Ok(n) if n > 0) {}
        std::mem::take(&mut *locked(&self.queue))
    }
}
