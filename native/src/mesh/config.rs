//! The mesh's configuration as the proxy thread uses it. Python validates the YAML and
//! names the file and field of any mistake; these structs only carry the result.

use pyo3::prelude::*;

use super::router::RouteMatch;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Balancing {
    #[default]
    RoundRobin,
    LeastRequest,
}

impl<'py> FromPyObject<'_, 'py> for Balancing {
    type Error = PyErr;

    fn extract(value: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        match value.extract::<String>()?.as_str() {
            "round_robin" => Ok(Balancing::RoundRobin),
            "least_request" => Ok(Balancing::LeastRequest),
            other => Err(pyo3::exceptions::PyValueError::new_err(format!(
                "balancing {other:?}: expected \"round_robin\" or \"least_request\""
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, FromPyObject)]
#[pyo3(from_item_all)]
pub struct ClusterConfig {
    pub name: String,
    pub protocol: String,
    pub hosts: Vec<String>,
    pub balancing: Balancing,
    pub connect_timeout_ms: u64,
    /// Circuit breaking: requests in flight on the cluster, and requests waiting for a
    /// connection, beyond which new ones are refused.
    pub max_requests: usize,
    pub max_pending: usize,
    /// Outlier ejection: this many failures in a row take a host out for `ejection_ms`
    /// (0: never).
    pub outlier_consecutive_failures: u32,
    pub ejection_ms: u64,
    /// Active health checks with heartbeat frames (0: none).
    pub health_check_interval_ms: u64,
    pub health_check_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: String::new(),
            protocol: "bolt".into(),
            hosts: Vec::new(),
            balancing: Balancing::RoundRobin,
            connect_timeout_ms: 1000,
            max_requests: 10_000,
            max_pending: 1024,
            outlier_consecutive_failures: 5,
            ejection_ms: 30_000,
            health_check_interval_ms: 0,
            health_check_timeout_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, FromPyObject)]
#[pyo3(from_item_all)]
pub struct RouteConfig {
    pub name: String,
    pub service: Option<String>,
    pub service_prefix: Option<String>,
    pub version: Option<String>,
    pub headers: Vec<(String, String)>,
    /// (cluster name, weight)
    pub clusters: Vec<(String, u32)>,
    pub timeout_ms: u64,
    /// Other hosts tried when a connection cannot be made.
    pub retries: u32,
    /// Requests a second and burst; `None`: no limit.
    pub rate_limit: Option<(f64, f64)>,
}

impl RouteConfig {
    pub fn matches(&self) -> RouteMatch {
        RouteMatch {
            service: self.service.clone(),
            service_prefix: self.service_prefix.clone(),
            version: self.version.clone(),
            headers: self.headers.clone(),
        }
    }
}

#[derive(Debug, Clone, FromPyObject)]
#[pyo3(from_item_all)]
pub struct ListenerConfig {
    pub name: String,
    pub protocol: String,
    pub address: String,
    pub max_frame_size: usize,
    /// Bytes waiting to be sent to a client that does not read, beyond which its
    /// connection is closed.
    pub max_buffered: usize,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, FromPyObject)]
#[pyo3(from_item_all)]
pub struct MeshConfig {
    pub listeners: Vec<ListenerConfig>,
    pub clusters: Vec<ClusterConfig>,
}
