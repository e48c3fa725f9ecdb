//! A gRPC unary client on h2, for the sidecar's calls to the application (pub/sub
//! deliveries to its `AppCallback` server).
//!
//! grpcio's asyncio client spends about 220 µs of CPU per call here (its completion
//! queue runs on a thread of its own and every call crosses it), which was most of a
//! delivery's cost. This client keeps one HTTP/2 connection on a one-thread tokio
//! runtime: the event loop hands over each pass's calls at once (one wake-up) and
//! takes finished ones in batches, woken by one byte on a socket it watches, as the
//! mesh's invocations do. Messages go in and out already encoded; statuses are gRPC's.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use h2::client::SendRequest;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::LocalSet;

use crate::wake_queue::WakeQueue;

const UNAVAILABLE: u32 = 14;
const DEADLINE_EXCEEDED: u32 = 4;
const INTERNAL: u32 = 13;
/// The token of the completion reported when a connection ends (calls' tokens start at 1).
const CONNECTION_LOST: u64 = 0;

struct Call {
    token: u64,
    path: String,
    message: Vec<u8>,
    timeout: Duration,
}

/// How a call ended: status 0 with the response message, or a gRPC status and why.
struct Finished {
    token: u64,
    status: u32,
    detail: String,
    message: Vec<u8>,
}

#[derive(Default)]
struct Calls {
    queue: Mutex<Vec<Call>>,
    ready: Notify,
    stopping: std::sync::atomic::AtomicBool,
}

/// Finished calls, taken by the event loop in batches.
type Done = WakeQueue<Finished>;

#[pyclass(module = "layotto_fast_native", name = "GrpcClient")]
pub struct GrpcClient {
    calls: Arc<Calls>,
    done: Arc<Done>,
    thread: Option<JoinHandle<()>>,
}

#[pymethods]
impl GrpcClient {
    /// A client of the server at `address` (`host:port`); it connects on the first call
    /// and again after the connection is lost. With `keepalive_ms` > 0 it PINGs the
    /// connection that often, and one PING left unanswered as long ends it (reported as
    /// lost), so a peer that hangs without closing its socket is noticed.
    #[new]
    #[pyo3(signature = (address, keepalive_ms = 0))]
    fn new(address: String, keepalive_ms: u64) -> PyResult<Self> {
        let done = Arc::new(Done::new()?);
        let calls = Arc::new(Calls::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                PyRuntimeError::new_err(format!("cannot start the client runtime: {e}"))
            })?;
        let (queued, finished) = (calls.clone(), done.clone());
        let thread = std::thread::Builder::new()
            .name("grpc-client".into())
            .spawn(move || {
                let keepalive = Duration::from_millis(keepalive_ms);
                LocalSet::new().block_on(&runtime, run(address, keepalive, queued, finished))
            })
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the client thread: {e}")))?;
        Ok(GrpcClient {
            calls,
            done,
            thread: Some(thread),
        })
    }

    /// Queues calls: each `(token, path, message, timeout_ms)` calls `path`
    /// (`/package.Service/Method`) with `message` (encoded), and its outcome comes back
    /// through `take_completions` under `token`. The event loop hands over one pass's calls
    /// together, for one wake-up of the client's thread.
    fn call_many(&self, calls: Vec<(u64, String, Bound<'_, PyBytes>, u64)>) -> PyResult<()> {
        if self.thread.is_none() {
            return Err(PyRuntimeError::new_err("the client is closed"));
        }
        let mut queue = self.calls.queue.lock().expect("calls poisoned");
        let first = queue.is_empty();
        queue.extend(
            calls
                .into_iter()
                .map(|(token, path, message, timeout_ms)| Call {
                    token,
                    path,
                    message: message.as_bytes().to_vec(),
                    timeout: Duration::from_millis(timeout_ms),
                }),
        );
        drop(queue);
        if first {
            self.calls.ready.notify_one();
        }
        Ok(())
    }

    /// The descriptor the event loop watches: readable when calls have finished.
    fn completions_fd(&self) -> i32 {
        self.done.fd()
    }

    /// Finished calls: (token, grpc status, detail, response message). Token 0 reports
    /// that a connection ended (the next call connects again).
    fn take_completions<'py>(
        &self,
        py: Python<'py>,
    ) -> Vec<(u64, u32, String, Bound<'py, PyBytes>)> {
        self.done
            .take()
            .into_iter()
            .map(|f| (f.token, f.status, f.detail, PyBytes::new(py, &f.message)))
            .collect()
    }

    /// Ends the connection and the thread; calls in flight are not answered.
    fn close(&mut self, py: Python<'_>) {
        self.calls
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.calls.ready.notify_one();
        if let Some(thread) = self.thread.take() {
            py.detach(|| {
                let _ = thread.join();
            });
        }
    }
}

impl Drop for GrpcClient {
    fn drop(&mut self) {
        self.calls
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.calls.ready.notify_one();
    }
}

/// The current connection's sender and its number (a sender cannot tell which
/// connection it belongs to; the number lets a lost one be forgotten only once).
type Connection = Rc<tokio::sync::Mutex<(u64, Option<SendRequest<Bytes>>)>>;

/// Where to connect, and how often to PING a connection (zero: never).
struct Peer {
    address: String,
    keepalive: Duration,
}

async fn run(address: String, keepalive: Duration, calls: Arc<Calls>, done: Arc<Done>) {
    let connection: Connection = Rc::new(tokio::sync::Mutex::new((0, None)));
    let peer = Rc::new(Peer { address, keepalive });
    let tasks = Rc::new(RefCell::new(tokio::task::JoinSet::new()));
    loop {
        calls.ready.notified().await;
        if calls.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        let batch = std::mem::take(&mut *calls.queue.lock().expect("calls poisoned"));
        for call in batch {
            let (connection, peer, done) = (connection.clone(), peer.clone(), done.clone());
            tasks.borrow_mut().spawn_local(async move {
                let token = call.token;
                let outcome =
                    tokio::time::timeout(call.timeout, unary(&connection, &peer, &done, call))
                        .await;
                let finished = match outcome {
                    Ok(Ok(message)) => Finished {
                        token,
                        status: 0,
                        detail: String::new(),
                        message,
                    },
                    Ok(Err((status, detail))) => Finished {
                        token,
                        status,
                        detail,
                        message: Vec::new(),
                    },
                    Err(_) => Finished {
                        token,
                        status: DEADLINE_EXCEEDED,
                        detail: "no answer in time".into(),
                        message: Vec::new(),
                    },
                };
                done.push(finished);
            });
        }
        // Reap what has finished, so the set does not grow with the calls made.
        while tasks.borrow_mut().try_join_next().is_some() {}
    }
    tasks.borrow_mut().abort_all();
}

/// The current connection's number and a sender on it, connecting first when there is none.
async fn sender(
    connection: &Connection,
    peer: &Peer,
    done: &Arc<Done>,
) -> Result<(u64, SendRequest<Bytes>), (u32, String)> {
    let address = peer.address.as_str();
    let mut current = connection.lock().await;
    if let (number, Some(send)) = &*current {
        return Ok((*number, send.clone()));
    }
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| (UNAVAILABLE, format!("cannot connect to {address}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (send, mut driver) = h2::client::handshake(stream).await.map_err(|e| {
        (
            UNAVAILABLE,
            format!("HTTP/2 handshake with {address} failed: {e}"),
        )
    })?;
    let number = current.0 + 1;
    *current = (number, Some(send.clone()));
    let (shared, done) = (connection.clone(), done.clone());
    let pings = match peer.keepalive.is_zero() {
        true => None,
        false => driver.ping_pong().map(|pings| (pings, peer.keepalive)),
    };
    tokio::task::spawn_local(async move {
        let detail = match pings {
            None => {
                let _ = driver.await;
                format!("connection {number} ended")
            }
            // Returning drops the driver, which closes the socket: the calls on it fail.
            Some((pings, every)) => tokio::select! {
                _ = &mut driver => format!("connection {number} ended"),
                why = keep_alive(pings, every) => format!("connection {number} closed: {why}"),
            },
        };
        forget(&shared, number).await; // the next call connects again
        done.push(Finished {
            token: CONNECTION_LOST,
            status: UNAVAILABLE,
            detail,
            message: Vec::new(),
        });
    });
    Ok((number, send))
}

/// PINGs every `every`; returns why it stopped: a PING unanswered for `every`, or refused.
async fn keep_alive(mut pings: h2::PingPong, every: Duration) -> String {
    loop {
        tokio::time::sleep(every).await;
        match tokio::time::timeout(every, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => continue,
            Ok(Err(e)) => return format!("PING failed: {e}"),
            Err(_) => return format!("no answer to a PING within {} ms", every.as_millis()),
        }
    }
}

async fn forget(connection: &Connection, number: u64) {
    let mut current = connection.lock().await;
    if current.0 == number {
        current.1 = None;
    }
}

async fn unary(
    connection: &Connection,
    peer: &Peer,
    done: &Arc<Done>,
    call: Call,
) -> Result<Vec<u8>, (u32, String)> {
    let address = peer.address.as_str();
    let (number, send) = sender(connection, peer, done).await?;
    let mut send = match send.ready().await {
        Ok(send) => send,
        Err(e) => {
            forget(connection, number).await;
            return Err((UNAVAILABLE, format!("connection to {address} lost: {e}")));
        }
    };
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{address}{}", call.path))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header(
            "grpc-timeout",
            format!("{}m", call.timeout.as_millis().max(1)),
        )
        .body(())
        .map_err(|e| (INTERNAL, format!("bad request: {e}")))?;
    let (response, mut stream) = send
        .send_request(request, false)
        .map_err(|e| (UNAVAILABLE, e.to_string()))?;
    let mut framed = Vec::with_capacity(5 + call.message.len());
    framed.push(0);
    framed.extend_from_slice(&(call.message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&call.message);
    stream
        .send_data(Bytes::from(framed), true)
        .map_err(|e| (UNAVAILABLE, e.to_string()))?;
    let response = response.await.map_err(|e| (UNAVAILABLE, e.to_string()))?;
    if response.status() != http::StatusCode::OK {
        return Err((UNAVAILABLE, format!("HTTP status {}", response.status())));
    }
    if let Some(status) = grpc_status(response.headers()) {
        return Err(status); // trailers-only answer: an error, or an OK without a message
    }
    let mut body = response.into_body();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| (UNAVAILABLE, e.to_string()))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body
        .trailers()
        .await
        .map_err(|e| (UNAVAILABLE, e.to_string()))?;
    if let Some(status) = trailers.as_ref().and_then(grpc_status) {
        return Err(status);
    }
    if data.len() < 5 || data[0] != 0 {
        return Err((
            INTERNAL,
            "the answer is not one uncompressed gRPC message".into(),
        ));
    }
    let mut data = data.freeze();
    data.advance(1);
    let size = data.get_u32() as usize;
    if data.len() != size {
        return Err((
            INTERNAL,
            format!(
                "the answer's message is {} bytes, its prefix says {size}",
                data.len()
            ),
        ));
    }
    Ok(data.to_vec())
}

/// The call's status when it is not OK, or when OK comes without a message; None for an
/// OK after a message (and while no status has been seen).
fn grpc_status(headers: &http::HeaderMap) -> Option<(u32, String)> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u32>()
        .unwrap_or(INTERNAL);
    if code == 0 {
        return None;
    }
    let detail = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some((code, detail))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(value) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(value);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
