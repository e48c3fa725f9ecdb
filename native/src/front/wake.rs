//! Wakers that record *which* stream (or the connection) asked to be polled again,
//! so a drive pass polls only those instead of every open stream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

/// Keys of streams woken since the last drive pass, plus the connection's own flag.
#[derive(Default)]
pub struct ReadySet {
    streams: Mutex<Vec<u32>>,
    connection: AtomicBool,
}

impl ReadySet {
    pub fn take_streams(&self) -> Vec<u32> {
        std::mem::take(&mut *self.streams.lock().expect("ready set poisoned"))
    }

    pub fn push(&self, key: u32) {
        self.streams.lock().expect("ready set poisoned").push(key);
    }

    pub fn take_connection(&self) -> bool {
        self.connection.swap(false, Ordering::Relaxed)
    }

    /// Whether the connection was woken, left for `take_connection`: a drive pass that
    /// woke it (h2 reading a PING's answer wakes the keepalive) must go round again.
    pub fn connection_woken(&self) -> bool {
        self.connection.load(Ordering::Relaxed)
    }
}

struct StreamWake {
    key: u32,
    ready: Arc<ReadySet>,
}

impl Wake for StreamWake {
    fn wake(self: Arc<Self>) {
        self.ready.push(self.key);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.push(self.key);
    }
}

struct ConnectionWake(Arc<ReadySet>);

impl Wake for ConnectionWake {
    fn wake(self: Arc<Self>) {
        self.0.connection.store(true, Ordering::Relaxed);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.connection.store(true, Ordering::Relaxed);
    }
}

pub fn stream_waker(key: u32, ready: &Arc<ReadySet>) -> Waker {
    Waker::from(Arc::new(StreamWake {
        key,
        ready: ready.clone(),
    }))
}

pub fn connection_waker(ready: &Arc<ReadySet>) -> Waker {
    Waker::from(Arc::new(ConnectionWake(ready.clone())))
}
