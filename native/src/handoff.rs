//! The design the native front is measured against: HTTP/2 on its own thread, calls
//! handed to the event loop in batches.
//!
//! A one-thread tokio runtime serves h2 connections; each complete unary request is
//! queued, and the first one queued while the queue is empty writes a byte to a
//! socket the event loop watches (one wake-up per batch). The loop takes the batch,
//! runs the handlers and answers through `respond` / `finish`, whose oneshot
//! channels wake the tokio thread again. Unary calls only, no metadata, deadlines or
//! limits beyond h2's own: it exists so that `make bench` can measure this design
//! beside the one the sidecar uses, in the same run. Nothing in the sidecar uses it.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::front::connection::{code, frame_into, response, trailers_only};

const UNARY_EVENT: u8 = 0;

enum Reply {
    Message(Bytes),
    Status(u32, String),
}

struct Queued {
    key: u32,
    method: u32,
    message: Bytes,
}

struct Shared {
    queue: Mutex<Vec<Queued>>,
    waiting: Mutex<HashMap<u32, oneshot::Sender<Reply>>>,
    wake_writer: UnixStream,
    next_key: AtomicU32,
    /// The response headers every answer starts from (content-type).
    head: HeaderMap,
}

impl Shared {
    fn hand_over(&self, method: u32, message: Bytes) -> oneshot::Receiver<Reply> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        self.waiting.lock().expect("lock").insert(key, sender);
        let mut queue = self.queue.lock().expect("lock");
        let first = queue.is_empty();
        queue.push(Queued {
            key,
            method,
            message,
        });
        drop(queue);
        if first {
            // A full socket buffer already holds a wake-up: nothing is lost.
            let _ = (&self.wake_writer).write(&[1]);
        }
        receiver
    }

    fn reply(&self, key: u32, reply: Reply) -> bool {
        match self.waiting.lock().expect("lock").remove(&key) {
            Some(sender) => sender.send(reply).is_ok(),
            None => false,
        }
    }
}

/// A gRPC server on its own thread that hands unary calls to the event loop in batches.
#[pyclass(module = "layotto_fast_native")]
pub struct HandoffServer {
    shared: Arc<Shared>,
    wake_reader: UnixStream,
}

#[pymethods]
impl HandoffServer {
    /// Serve `paths` (a call's method number is its index here) on 127.0.0.1:`port`.
    #[new]
    fn new(paths: Vec<String>, port: u16) -> PyResult<Self> {
        let (wake_reader, wake_writer) = UnixStream::pair()?;
        wake_reader.set_nonblocking(true)?;
        wake_writer.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Vec::new()),
            waiting: Mutex::new(HashMap::new()),
            wake_writer,
            next_key: AtomicU32::new(1),
            head: HeaderMap::from_iter([(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            )]),
        });
        let methods: Arc<HashMap<String, u32>> = Arc::new(paths.into_iter().zip(0..).collect());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let served = shared.clone();
        std::thread::Builder::new()
            .name("handoff-h2".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("listener");
                    while let Ok((socket, _)) = listener.accept().await {
                        let _ = socket.set_nodelay(true);
                        tokio::spawn(serve_connection(socket, served.clone(), methods.clone()));
                    }
                })
            })
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(HandoffServer {
            shared,
            wake_reader,
        })
    }

    /// The socket that becomes readable when calls are waiting (for `loop.add_reader`).
    fn wake_fileno(&self) -> i32 {
        self.wake_reader.as_raw_fd()
    }

    /// The waiting calls, as the native front's unary events.
    fn take<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        // Drain the wake-ups before the queue: one written after this is kept for the next turn.
        let mut sink = [0u8; 256];
        loop {
            match (&self.wake_reader).read(&mut sink) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        let batch = std::mem::take(&mut *self.shared.queue.lock().expect("lock"));
        let events = PyList::empty(py);
        for call in batch {
            let event = PyTuple::new(
                py,
                [
                    UNARY_EVENT.into_pyobject(py)?.into_any(),
                    call.key.into_pyobject(py)?.into_any(),
                    call.method.into_pyobject(py)?.into_any(),
                    PyBytes::new(py, &call.message).into_any(),
                    (-1i64).into_pyobject(py)?.into_any(),
                    py.None().into_bound(py),
                ],
            )?;
            events.append(event)?;
        }
        Ok(events)
    }

    /// Answer a call with one message and status OK (metadata is not supported here).
    #[pyo3(signature = (key, message, trailers = None, headers = None))]
    fn respond(
        &self,
        key: u32,
        message: &[u8],
        trailers: Option<Vec<(String, String)>>,
        headers: Option<Vec<(String, String)>>,
    ) -> bool {
        let _ = (trailers, headers);
        self.shared
            .reply(key, Reply::Message(Bytes::copy_from_slice(message)))
    }

    /// End a call with a status and no message.
    #[pyo3(signature = (key, code, message, metadata = None))]
    fn finish(
        &self,
        key: u32,
        code: u32,
        message: &str,
        metadata: Option<Vec<(String, String)>>,
    ) -> bool {
        let _ = metadata;
        self.shared
            .reply(key, Reply::Status(code, message.to_owned()))
    }
}

async fn serve_connection(
    socket: tokio::net::TcpStream,
    shared: Arc<Shared>,
    methods: Arc<HashMap<String, u32>>,
) {
    let Ok(mut connection) = h2::server::handshake(socket).await else {
        return;
    };
    while let Some(Ok((request, respond))) = connection.accept().await {
        tokio::spawn(serve_call(
            request,
            respond,
            shared.clone(),
            methods.clone(),
        ));
    }
}

async fn serve_call(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    shared: Arc<Shared>,
    methods: Arc<HashMap<String, u32>>,
) {
    let method = methods.get(request.uri().path()).copied();
    let mut body = request.into_body();
    let mut received = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        received.extend_from_slice(&chunk);
    }
    let Some(method) = method else {
        trailers_only(
            &mut respond,
            &shared.head,
            code::UNIMPLEMENTED,
            "unknown method",
        );
        return;
    };
    if received.len() < 5 {
        trailers_only(
            &mut respond,
            &shared.head,
            code::INTERNAL,
            "request has no message",
        );
        return;
    }
    let message = received.freeze().slice(5..);
    let Ok(reply) = shared.hand_over(method, message).await else {
        return;
    };
    match reply {
        Reply::Status(status, text) => trailers_only(&mut respond, &shared.head, status, &text),
        Reply::Message(message) => {
            let Ok(mut send) = respond.send_response(response(&shared.head), false) else {
                return;
            };
            let mut framed = BytesMut::new();
            frame_into(&mut framed, &message);
            let mut trailers = HeaderMap::new();
            trailers.insert(
                HeaderName::from_static("grpc-status"),
                HeaderValue::from_static("0"),
            );
            if send.send_data(framed.freeze(), false).is_ok() {
                let _ = send.send_trailers(trailers);
            }
        }
    }
}
