//! layotto-fast's native hot paths: the gRPC front and the gRPC client that delivers to the
//! app (h2 driven from the event loop's thread), the Bolt and Dubbo codecs, and the mesh
//! proxy thread.
//!
//! Protocol logic lives in plain Rust modules that know nothing about Python. The pyo3
//! surface is this file (frames and Bolt) and the `*_py` modules beside the parts they
//! expose (`front_py`, `dubbo_py`, `mesh::python`, `grpc_client`). Errors are
//! [`error::Error`] everywhere and become a Python exception once, via
//! `From<Error> for PyErr`.

pub mod bolt;
pub mod codec;
pub mod dubbo;
mod dubbo_py;
pub mod error;
pub mod frame;
pub mod front;
mod front_py;
pub mod grpc;
mod grpc_client;
#[cfg(feature = "bench")]
mod handoff;
pub mod hessian;
mod mesh;
pub mod sofa_hessian;
#[cfg(test)]
mod testdata;
mod wake_queue;

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBytes, PyDict};

use error::Error;
use frame::{Protocol, Splitter, DEFAULT_MAX_FRAME_SIZE};

create_exception!(
    layotto_fast_native,
    FrameError,
    PyValueError,
    "A malformed or oversized frame. Subclass of ValueError."
);

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        if e.is_argument_error() {
            PyValueError::new_err(e.to_string())
        } else {
            FrameError::new_err(e.to_string())
        }
    }
}

/// Streaming splitter: feed raw bytes, get back whole frames (header included).
#[pyclass(module = "layotto_fast_native", name = "FrameSplitter")]
struct FrameSplitter {
    inner: Splitter,
}

#[pymethods]
impl FrameSplitter {
    #[new]
    #[pyo3(signature = (protocol, max_frame_size = DEFAULT_MAX_FRAME_SIZE))]
    fn new(protocol: &str, max_frame_size: usize) -> Result<Self, Error> {
        Ok(FrameSplitter {
            inner: Splitter::new(Protocol::parse(protocol)?, max_frame_size)?,
        })
    }

    /// Buffer `data` and return every frame it completes, in order.
    fn feed<'py>(
        &mut self,
        py: Python<'py>,
        data: &[u8],
    ) -> Result<Vec<Bound<'py, PyBytes>>, Error> {
        let mut frames = Vec::new();
        self.inner
            .feed(data, |frame| frames.push(PyBytes::new(py, frame)))?;
        Ok(frames)
    }

    /// Bytes held back as the start of an incomplete frame.
    #[getter]
    fn buffered(&self) -> usize {
        self.inner.buffered()
    }

    #[getter]
    fn protocol(&self) -> &'static str {
        self.inner.protocol().name()
    }

    #[getter]
    fn max_frame_size(&self) -> usize {
        self.inner.max_frame_size()
    }

    /// True once a feed call raised FrameError.
    #[getter]
    fn failed(&self) -> bool {
        self.inner.is_failed()
    }

    fn __repr__(&self) -> String {
        format!(
            "FrameSplitter(protocol={:?}, max_frame_size={}, buffered={}, failed={})",
            self.inner.protocol().name(),
            self.inner.max_frame_size(),
            self.inner.buffered(),
            if self.inner.is_failed() {
                "True"
            } else {
                "False"
            },
        )
    }
}

fn header_dict<'py>(py: Python<'py>, header: &[(&str, &str)]) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in header {
        dict.set_item(k, v)?;
    }
    Ok(dict)
}

fn header_pairs(header: &Bound<'_, PyDict>) -> PyResult<Vec<(PyBackedStr, PyBackedStr)>> {
    header
        .iter()
        .map(|(k, v)| Ok((k.extract()?, v.extract()?)))
        .collect()
}

type BoltRequestTuple<'py> = (
    u32,
    u8,
    u16,
    u8,
    i32,
    &'py str,
    Bound<'py, PyDict>,
    Bound<'py, PyBytes>,
);

/// Decode a whole Bolt request frame (v1 or v2).
#[pyfunction]
fn decode_bolt_request<'py>(py: Python<'py>, frame: &'py [u8]) -> PyResult<BoltRequestTuple<'py>> {
    let r = bolt::decode_request(frame)?;
    Ok((
        r.request_id,
        r.ty,
        r.cmdcode,
        r.codec,
        r.timeout_ms,
        r.class_name,
        header_dict(py, &r.header)?,
        PyBytes::new(py, r.content),
    ))
}

type BoltResponseTuple<'py> = (
    u32,
    u16,
    u8,
    u16,
    &'py str,
    Bound<'py, PyDict>,
    Bound<'py, PyBytes>,
);

/// Decode a whole Bolt response frame (v1 or v2).
#[pyfunction]
fn decode_bolt_response<'py>(
    py: Python<'py>,
    frame: &'py [u8],
) -> PyResult<BoltResponseTuple<'py>> {
    let r = bolt::decode_response(frame)?;
    Ok((
        r.request_id,
        r.cmdcode,
        r.codec,
        r.status,
        r.class_name,
        header_dict(py, &r.header)?,
        PyBytes::new(py, r.content),
    ))
}

/// The error message in a SOFARPC answer's content, written in SOFA's Hessian dialect
/// (Bolt codec 1), or `None`.
#[pyfunction]
fn sofa_error_message(content: &[u8]) -> Option<String> {
    sofa_hessian::error_message(content)
}

/// Encode a Bolt v1 response frame.
#[pyfunction]
fn encode_bolt_response<'py>(
    py: Python<'py>,
    request_id: u32,
    codec: u8,
    status: u16,
    class_name: &str,
    header: &Bound<'py, PyDict>,
    content: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let header = header_pairs(header)?;
    let frame = bolt::encode_response(request_id, codec, status, class_name, &header, content)?;
    Ok(PyBytes::new(py, &frame))
}

/// Encode a Bolt v1 request (or oneway) frame.
#[pyfunction]
#[pyo3(signature = (request_id, codec, timeout_ms, class_name, header, content, oneway = false))]
#[allow(clippy::too_many_arguments)]
fn encode_bolt_request<'py>(
    py: Python<'py>,
    request_id: u32,
    codec: u8,
    timeout_ms: i32,
    class_name: &str,
    header: &Bound<'py, PyDict>,
    content: &[u8],
    oneway: bool,
) -> PyResult<Bound<'py, PyBytes>> {
    let header = header_pairs(header)?;
    let frame = bolt::encode_request(
        request_id, codec, timeout_ms, class_name, &header, content, oneway,
    )?;
    Ok(PyBytes::new(py, &frame))
}

/// Encode a Bolt v1 heartbeat ack.
#[pyfunction]
fn encode_bolt_heartbeat_ack(py: Python<'_>, request_id: u32) -> Bound<'_, PyBytes> {
    PyBytes::new(py, &bolt::encode_heartbeat_ack(request_id))
}

/// Native (Rust) hot paths for layotto-fast: frame splitting and protocol codecs.
#[pymodule]
mod layotto_fast_native {
    use super::*;

    #[pymodule_export]
    use super::{
        decode_bolt_request, decode_bolt_response, encode_bolt_heartbeat_ack, encode_bolt_request,
        encode_bolt_response, sofa_error_message, FrameError, FrameSplitter,
    };

    #[pymodule_export]
    use crate::front_py::{GrpcConnection, GrpcServerConfig};

    #[pymodule_export]
    use crate::mesh::python::MeshProxy;

    #[pymodule_export]
    use crate::grpc_client::GrpcClientConnection;

    #[pymodule_export]
    use crate::dubbo_py::{decode_dubbo_response, encode_dubbo_generic, encode_dubbo_request};

    #[cfg(feature = "bench")]
    #[pymodule_export]
    use crate::handoff::HandoffServer;

    #[cfg(feature = "bench")]
    #[pymodule_export]
    use crate::mesh::python::BenchRouteTable;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("DEFAULT_MAX_FRAME_SIZE", DEFAULT_MAX_FRAME_SIZE)?;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("NOT_SENT", crate::grpc_client::connection::NOT_SENT)?;
        Ok(())
    }
}
