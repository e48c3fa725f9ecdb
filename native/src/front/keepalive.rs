//! Keep-alive PINGs of one HTTP/2 connection, either side: at most one outstanding.

use std::task::{Context, Poll};

use h2::{Ping, PingPong};

#[derive(Default)]
pub struct Keepalive {
    ping_pong: Option<PingPong>,
    outstanding: bool,
}

impl Keepalive {
    /// Takes the connection's PING handle once it is open.
    pub fn attach(&mut self, ping_pong: Option<PingPong>) {
        self.ping_pong = ping_pong;
    }

    /// Sends a PING. False when the previous one is still unanswered: the peer is gone or
    /// stuck, and the caller should drop the connection.
    pub fn ping(&mut self) -> bool {
        if self.outstanding {
            return false;
        }
        if let Some(ping_pong) = self.ping_pong.as_mut() {
            if ping_pong.send_ping(Ping::opaque()).is_ok() {
                self.outstanding = true;
            }
        }
        true
    }

    /// A PING was sent and its answer has not been read yet.
    pub fn is_outstanding(&self) -> bool {
        self.outstanding
    }

    /// True when the outstanding PING has just been answered.
    pub fn poll_answered(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.outstanding {
            return false;
        }
        let answered = self
            .ping_pong
            .as_mut()
            .is_some_and(|ping_pong| matches!(ping_pong.poll_pong(cx), Poll::Ready(Ok(_))));
        if answered {
            self.outstanding = false;
        }
        answered
    }
}
