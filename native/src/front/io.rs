//! The connection's byte pipe: the event loop pushes received bytes in and takes
//! bytes to send out; h2 sees an ordinary AsyncRead + AsyncWrite.
//!
//! Nothing here blocks or registers wakers: the owner re-drives the connection
//! after every push, so "no bytes yet" is simply `Pending`.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Default)]
pub struct Buffers {
    pub input: BytesMut,
    pub output: Vec<u8>,
    pub eof: bool,
}

/// The most output buffer a connection keeps between flushes.
pub const KEPT_OUTPUT_CAPACITY: usize = 64 * 1024;

#[derive(Clone, Default)]
pub struct LoopIo(pub Rc<RefCell<Buffers>>);

impl LoopIo {
    /// Hand the bytes to write to `send`, then empty the buffer. Its capacity is kept (up
    /// to [`KEPT_OUTPUT_CAPACITY`]): growing a fresh buffer on every flush cost a chain of
    /// reallocs, and malloc consolidations, per read.
    pub fn drain_output<R>(&self, send: impl FnOnce(&[u8]) -> R) -> R {
        let mut shared = self.0.borrow_mut();
        let sent = send(&shared.output);
        shared.output.clear();
        if shared.output.capacity() > KEPT_OUTPUT_CAPACITY {
            shared.output.shrink_to(KEPT_OUTPUT_CAPACITY);
        }
        sent
    }
}

impl AsyncRead for LoopIo {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut shared = self.0.borrow_mut();
        if shared.input.is_empty() {
            return if shared.eof {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            };
        }
        let n = shared.input.len().min(buf.remaining());
        buf.put_slice(&shared.input[..n]);
        shared.input.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for LoopIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.borrow_mut().output.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
