//! The Python face of the native gRPC front: `GrpcServerConfig` and `GrpcConnection`.
//!
//! One `GrpcConnection` per accepted socket, owned by the event loop's protocol
//! object; events cross to Python as small tuples, once per `feed` call.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::front::budget;
use crate::front::connection::{code::INTERNAL, Connection, Event, Method, Settings};

const UNARY: u8 = 0;
const OPEN: u8 = 1;
const MESSAGE: u8 = 2;
const HALF_CLOSE: u8 = 3;
const CANCELLED: u8 = 4;
const WRITABLE: u8 = 5;
const REFUSED: u8 = 6;

/// Methods and limits shared by every connection of one server.
#[pyclass(module = "layotto_fast_native", frozen)]
pub struct GrpcServerConfig {
    methods: Arc<HashMap<String, Method>>,
    settings: Settings,
}

#[pymethods]
impl GrpcServerConfig {
    #[new]
    #[pyo3(signature = (methods, max_message_bytes = 4 * 1024 * 1024, max_concurrent_streams = 1024,
                        max_header_list_bytes = 16 * 1024, initial_window_bytes = 1024 * 1024,
                        fixed_replies = None))]
    fn new(
        methods: Vec<(String, bool)>,
        max_message_bytes: usize,
        max_concurrent_streams: u32,
        max_header_list_bytes: u32,
        initial_window_bytes: u32,
        fixed_replies: Option<HashMap<String, Vec<u8>>>,
    ) -> PyResult<Self> {
        let fixed_replies = fixed_replies.unwrap_or_default();
        if !fixed_replies.is_empty() && !cfg!(feature = "bench") {
            return Err(PyValueError::new_err(
                "fixed_replies is a benchmark-only design: build layotto_fast_native with --features bench",
            ));
        }
        if initial_window_bytes < 65_535 {
            return Err(PyValueError::new_err(
                "initial_window_bytes must be at least 65535",
            ));
        }
        let methods = methods
            .into_iter()
            .enumerate()
            .map(|(index, (path, client_streaming))| {
                let method = Method::new(index as u32, client_streaming);
                #[cfg(feature = "bench")]
                let method = Method {
                    fixed_reply: fixed_replies
                        .get(&path)
                        .map(|b| bytes::Bytes::copy_from_slice(b)),
                    ..method
                };
                (path, method)
            })
            .collect();
        let (max_incomplete_bytes_per_connection, incomplete_requests) =
            budget::bounds_for(max_message_bytes);
        Ok(GrpcServerConfig {
            methods: Arc::new(methods),
            settings: Settings {
                max_message_bytes,
                max_concurrent_streams,
                max_header_list_bytes,
                initial_window_bytes,
                max_send_buffer_bytes: max_message_bytes.clamp(64 * 1024, 4 * 1024 * 1024),
                max_unconsumed_bytes: max_message_bytes.max(initial_window_bytes as usize),
                max_incomplete_bytes_per_connection,
                incomplete_requests,
            },
        })
    }
}

type FlushResult<'py> = (Option<Bound<'py, PyList>>, Option<Bound<'py, PyBytes>>);

#[pyclass(module = "layotto_fast_native", unsendable)]
pub struct GrpcConnection {
    inner: Connection,
}

fn headers_from(pairs: Option<Vec<(String, String)>>) -> PyResult<Option<HeaderMap>> {
    let Some(pairs) = pairs else {
        return Ok(None);
    };
    let mut map = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| PyValueError::new_err(format!("invalid metadata key {name:?}")))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| PyValueError::new_err(format!("invalid metadata value for {name}")))?;
        map.append(name, value);
    }
    Ok(Some(map))
}

fn events_to_python<'py>(py: Python<'py>, events: Vec<Event>) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for event in events {
        let item: Bound<'py, PyTuple> = match event {
            Event::Unary {
                key,
                method,
                message,
                timeout_us,
                metadata,
            } => (
                UNARY,
                key,
                method,
                PyBytes::new(py, &message),
                timeout_us,
                metadata_to_python(py, metadata)?,
            )
                .into_pyobject(py)?,
            Event::Open {
                key,
                method,
                timeout_us,
                metadata,
            } => (
                OPEN,
                key,
                method,
                timeout_us,
                metadata_to_python(py, metadata)?,
            )
                .into_pyobject(py)?,
            Event::Message { key, message } => {
                (MESSAGE, key, PyBytes::new(py, &message)).into_pyobject(py)?
            }
            Event::HalfClose { key } => (HALF_CLOSE, key).into_pyobject(py)?,
            Event::Cancelled { key, method, code } => {
                (CANCELLED, key, method, code).into_pyobject(py)?
            }
            Event::Writable { key } => (WRITABLE, key).into_pyobject(py)?,
            Event::Refused { method, code, path } => {
                (REFUSED, method, code, path).into_pyobject(py)?
            }
        };
        list.append(item)?;
    }
    Ok(list)
}

fn metadata_to_python<'py>(
    py: Python<'py>,
    metadata: Option<Vec<(String, Vec<u8>)>>,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let Some(pairs) = metadata else {
        return Ok(None);
    };
    let list = PyList::empty(py);
    for (name, value) in pairs {
        list.append((name, PyBytes::new(py, &value)))?;
    }
    Ok(Some(list))
}

#[pymethods]
impl GrpcConnection {
    /// `repair_authority`: set for Unix-socket peers, whose grpc-core clients send the
    /// socket path as :authority.
    #[new]
    #[pyo3(signature = (config, repair_authority = false))]
    fn new(config: &GrpcServerConfig, repair_authority: bool) -> Self {
        GrpcConnection {
            inner: Connection::new(
                config.methods.clone(),
                config.settings.clone(),
                repair_authority,
            ),
        }
    }

    /// Bytes received from the peer; returns the events they caused.
    fn feed<'py>(&mut self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyList>> {
        let events = self.inner.feed(data);
        events_to_python(py, events)
    }

    /// The peer closed its sending side.
    fn feed_eof<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let events = self.inner.feed_eof();
        events_to_python(py, events)
    }

    /// The socket closed: end every open call; returns their events (CANCELLED, REFUSED).
    fn lost<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let events = self.inner.lost();
        events_to_python(py, events)
    }

    /// Run the protocol and take the bytes to write, in one call: `(events, bytes or None)`.
    fn flush<'py>(&mut self, py: Python<'py>) -> PyResult<FlushResult<'py>> {
        let events = self.inner.poll();
        let output = self
            .inner
            .drain_output(|output| (!output.is_empty()).then(|| PyBytes::new(py, output)));
        let events = if events.is_empty() {
            None
        } else {
            Some(events_to_python(py, events)?)
        };
        Ok((events, output))
    }

    /// Answer a unary-response call with one message and status OK.
    #[pyo3(signature = (key, message, trailers = None, headers = None))]
    fn respond(
        &mut self,
        key: u32,
        message: &[u8],
        trailers: Option<Vec<(String, String)>>,
        headers: Option<Vec<(String, String)>>,
    ) -> PyResult<bool> {
        let (headers, trailers) = match (headers_from(headers), headers_from(trailers)) {
            (Ok(headers), Ok(trailers)) => (headers, trailers),
            // The handler's own metadata cannot go on the wire: the call fails, not the
            // connection (an exception here would reach the loop's protocol callback).
            (Err(why), _) | (_, Err(why)) => {
                let message = format!("the handler's response metadata: {why}");
                return Ok(self.inner.finish(key, INTERNAL, &message, None));
            }
        };
        let trailers = trailers.map(|mut map| {
            map.insert(
                HeaderName::from_static("grpc-status"),
                HeaderValue::from_static("0"),
            );
            map
        });
        Ok(self.inner.respond(key, message, headers, trailers))
    }

    /// Queue a streaming-response message; False means wait for the WRITABLE event.
    #[pyo3(signature = (key, message, headers = None))]
    fn send(
        &mut self,
        key: u32,
        message: &[u8],
        headers: Option<Vec<(String, String)>>,
    ) -> PyResult<bool> {
        Ok(self.inner.send(key, message, headers_from(headers)?))
    }

    /// End a call with a gRPC status code and message.
    #[pyo3(signature = (key, code, message = "", trailers = None))]
    fn finish(
        &mut self,
        key: u32,
        code: u32,
        message: &str,
        trailers: Option<Vec<(String, String)>>,
    ) -> PyResult<bool> {
        Ok(match headers_from(trailers) {
            Ok(trailers) => self.inner.finish(key, code, message, trailers),
            Err(why) => {
                let message = format!("{message} (trailers not sent: {why})");
                self.inner.finish(key, code, &message, None)
            }
        })
    }

    /// The handler took `n` bytes of a streaming request: let the client send more.
    fn consumed(&mut self, key: u32, n: usize) {
        self.inner.consumed(key, n);
    }

    /// Send a keepalive PING; False when the previous one was never answered.
    fn ping(&mut self) -> bool {
        self.inner.ping()
    }

    /// Send GOAWAY: no new calls, open ones finish.
    fn graceful_shutdown(&mut self) {
        self.inner.graceful_shutdown();
    }

    /// True once the peer sent the HTTP/2 client preface and its first frame (SETTINGS).
    #[getter]
    fn greeted(&self) -> bool {
        self.inner.greeted()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    #[getter]
    fn error(&self) -> Option<String> {
        self.inner.error().map(str::to_owned)
    }

    #[getter]
    fn open_streams(&self) -> usize {
        self.inner.open_streams()
    }
}
