//! A bound on the request bytes the front holds for calls whose message is not complete.
//!
//! A unary call is handed to its handler only once its whole message is in, so until then
//! the front buffers what came: up to the message limit per call, and with 1024 calls per
//! connection a single peer could make the process hold gigabytes of messages it never
//! finishes. Flow control cannot stop it: holding a window back until a message completes
//! would deadlock honest clients sending several large messages at once, each waiting for
//! the window the others hold. So the front sheds instead: a call whose next bytes would
//! take its connection, or the process, past its share is ended RESOURCE_EXHAUSTED, which
//! frees what it held, and the other calls carry on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::grpc::PREFIX_LEN;

/// How many messages at the size limit, still arriving, the calls of one connection may
/// hold together, and those of every connection of a server: 128 MiB and 256 MiB at the
/// default 4 MiB.
pub const MESSAGES_PER_CONNECTION: usize = 32;
pub const MESSAGES_PER_SERVER: usize = 64;

/// The bounds for messages of up to `max_message` bytes: what the calls of one connection
/// may hold, and the budget every connection of a server shares.
pub fn bounds_for(max_message: usize) -> (usize, Arc<Budget>) {
    (
        bytes_of(MESSAGES_PER_CONNECTION, max_message),
        Budget::new(bytes_of(MESSAGES_PER_SERVER, max_message)),
    )
}

/// The bytes of `messages` messages of `max_message` bytes, their prefixes included.
pub fn bytes_of(messages: usize, max_message: usize) -> usize {
    max_message
        .saturating_add(PREFIX_LEN)
        .saturating_mul(messages)
}

/// Bytes held by incomplete requests on one connection, or in the whole process, and the
/// most it may hold.
#[derive(Debug)]
pub struct Budget {
    held: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Budget {
            held: AtomicUsize::new(0),
            limit,
        })
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether `more` bytes fit beside what is held now.
    fn admits(&self, more: usize) -> bool {
        self.held().saturating_add(more) <= self.limit
    }
}

/// Which bound a call's bytes would pass.
#[derive(Debug, PartialEq, Eq)]
pub enum Over {
    Connection { held: usize, limit: usize },
    Process { held: usize, limit: usize },
}

impl Over {
    /// The status message the shed call gets.
    pub fn message(&self) -> String {
        match self {
            Over::Connection { held, limit } => format!(
                "this connection holds {held} bytes of requests not yet complete, at its limit of {limit}"
            ),
            Over::Process { held, limit } => format!(
                "the sidecar holds {held} bytes of requests not yet complete over all connections, at its limit of {limit}"
            ),
        }
    }
}

/// One call's share of its connection's and the process's budgets: the bytes it holds are
/// counted in both until it is dropped.
#[derive(Debug)]
pub struct Held {
    bytes: usize,
    connection: Arc<Budget>,
    process: Arc<Budget>,
}

impl Held {
    pub fn new(connection: &Arc<Budget>, process: &Arc<Budget>) -> Self {
        Held {
            bytes: 0,
            connection: Arc::clone(connection),
            process: Arc::clone(process),
        }
    }

    /// The bytes this call holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether this call may hold `more` bytes beyond what it holds now.
    pub fn check(&self, more: usize) -> Result<(), Over> {
        if !self.connection.admits(more) {
            return Err(Over::Connection {
                held: self.connection.held(),
                limit: self.connection.limit,
            });
        }
        if !self.process.admits(more) {
            return Err(Over::Process {
                held: self.process.held(),
                limit: self.process.limit,
            });
        }
        Ok(())
    }

    /// This call now holds `bytes`.
    pub fn set(&mut self, bytes: usize) {
        if bytes == self.bytes {
            return;
        }
        for budget in [&self.connection, &self.process] {
            if bytes > self.bytes {
                budget.held.fetch_add(bytes - self.bytes, Ordering::Relaxed);
            } else {
                budget.held.fetch_sub(self.bytes - bytes, Ordering::Relaxed);
            }
        }
        self.bytes = bytes;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_share_their_connection_and_the_process() {
        let process = Budget::new(250);
        let (first, second) = (Budget::new(150), Budget::new(150));
        let mut a = Held::new(&first, &process);
        let mut b = Held::new(&first, &process);
        let mut c = Held::new(&second, &process);
        a.set(100);
        assert_eq!(
            b.check(51),
            Err(Over::Connection {
                held: 100,
                limit: 150
            })
        );
        b.set(50);
        c.set(100);
        assert_eq!(
            c.check(1),
            Err(Over::Process {
                held: 250,
                limit: 250
            })
        );
        drop(a);
        assert_eq!((first.held(), process.held()), (50, 150));
        assert_eq!(c.check(50), Ok(()));
        b.set(10);
        drop(c);
        assert_eq!((first.held(), second.held(), process.held()), (10, 0, 10));
    }
}
