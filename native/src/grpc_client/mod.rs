//! A gRPC unary client for the sidecar's calls to the application (pub/sub deliveries to
//! its `AppCallback` server), driven from the event loop's thread.
//!
//! The loop owns the socket (an asyncio protocol) and hands received bytes to
//! `GrpcClientConnection.feed`; finished calls come back as tuples. An earlier design ran
//! h2 on a tokio thread of its own: every batch of deliveries woke that thread and every
//! batch of answers woke the loop, and the scheduler's share of those wake-ups was about a
//! fifth of the sidecar's CPU per delivered message.

pub mod connection;

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use connection::{ClientConnection, Finished};

#[pyclass(module = "layotto_fast_native", unsendable)]
pub struct GrpcClientConnection {
    inner: ClientConnection,
}

fn finished_to_python<'py>(
    py: Python<'py>,
    finished: Vec<Finished>,
) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for f in finished {
        list.append((f.token, f.status, f.detail, PyBytes::new(py, &f.message)))?;
    }
    Ok(list)
}

#[pymethods]
impl GrpcClientConnection {
    /// A connection to the server at `authority` (`host:port`); answers over
    /// `max_message_bytes` fail with RESOURCE_EXHAUSTED.
    #[new]
    #[pyo3(signature = (authority, max_message_bytes = 4 * 1024 * 1024))]
    fn new(authority: String, max_message_bytes: usize) -> Self {
        GrpcClientConnection {
            inner: ClientConnection::new(authority, max_message_bytes),
        }
    }

    /// Start calls, each `(token, path, message, timeout_ms)`; returns the calls already
    /// finished (all of them, failed, when the connection has ended).
    fn start_many<'py>(
        &mut self,
        py: Python<'py>,
        calls: Vec<(u64, String, Bound<'py, PyBytes>, u64)>,
    ) -> PyResult<Bound<'py, PyList>> {
        for (token, path, message, timeout_ms) in calls {
            self.inner.start(
                token,
                path,
                message.as_bytes(),
                Duration::from_millis(timeout_ms),
            );
        }
        self.inner.poll();
        finished_to_python(py, self.inner.take_finished())
    }

    /// Bytes received from the server; returns the calls they finished.
    fn feed<'py>(&mut self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyList>> {
        self.inner.feed(data);
        finished_to_python(py, self.inner.take_finished())
    }

    /// The server closed its sending side.
    fn feed_eof<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.inner.feed_eof();
        finished_to_python(py, self.inner.take_finished())
    }

    /// The socket closed (`reason`): every open call fails, UNAVAILABLE.
    fn lost<'py>(&mut self, py: Python<'py>, reason: &str) -> PyResult<Bound<'py, PyList>> {
        self.inner.lost(reason);
        finished_to_python(py, self.inner.take_finished())
    }

    /// Calls past their deadline fail (DEADLINE_EXCEEDED) and their streams are reset.
    fn expire<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.inner.expire();
        finished_to_python(py, self.inner.take_finished())
    }

    /// Seconds until the earliest open call's deadline; None with no call open.
    fn next_deadline(&mut self) -> Option<f64> {
        self.inner.next_deadline().map(|d| d.as_secs_f64())
    }

    /// The bytes to write, or None; the buffer is emptied.
    fn take_output<'py>(&mut self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.inner
            .take_output(|out| (!out.is_empty()).then(|| PyBytes::new(py, out)))
    }

    /// Send a keepalive PING; False when the previous one is still unanswered.
    fn ping(&mut self) -> bool {
        self.inner.ping()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Why the connection ended, once it has.
    fn error(&self) -> Option<String> {
        self.inner.error().map(str::to_owned)
    }

    /// The connection ended after the app's GOAWAY without an error (the app stopping, or
    /// rotating its connections), not lost.
    fn ended_by_goaway(&self) -> bool {
        self.inner.ended_by_goaway()
    }

    /// A keepalive PING is out and its answer has not come yet.
    fn awaiting_pong(&self) -> bool {
        self.inner.awaiting_pong()
    }

    /// The app sent GOAWAY: calls already taken finish here; start new ones on another
    /// connection (calls not sent come back with status NOT_SENT).
    fn is_draining(&self) -> bool {
        self.inner.is_draining()
    }

    fn open_calls(&self) -> usize {
        self.inner.open_calls()
    }
}
