//! The mesh's configuration as the proxy thread uses it. Python validates the YAML and
//! names the file and field of any mistake; these structs carry the result, and
//! `MeshConfig::check` makes sure again of what the proxy thread relies on.

use pyo3::prelude::*;

use super::router::RouteMatch;

/// The wire protocol of a listener or cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Bolt,
    Dubbo,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Bolt => "bolt",
            Protocol::Dubbo => "dubbo",
        }
    }
}

impl<'py> FromPyObject<'_, 'py> for Protocol {
    type Error = PyErr;

    fn extract(value: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        match value.extract::<String>()?.as_str() {
            "bolt" => Ok(Protocol::Bolt),
            "dubbo" => Ok(Protocol::Dubbo),
            other => Err(pyo3::exceptions::PyValueError::new_err(format!(
                "protocol {other:?}: expected \"bolt\" or \"dubbo\""
            ))),
        }
    }
}

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
    pub protocol: Protocol,
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
    /// At most this share of the hosts ejected at once (at least one may always be), so that
    /// a bad spell does not pile the whole load onto the last hosts left.
    pub max_ejection_percent: u32,
    /// Active health checks with heartbeat frames (0: none).
    pub health_check_interval_ms: u64,
    pub health_check_timeout_ms: u64,
    /// A heartbeat on an upstream connection after this long without a request (0: none).
    pub idle_heartbeat_ms: u64,
}

#[cfg(test)]
impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: String::new(),
            protocol: Protocol::Bolt,
            hosts: Vec::new(),
            balancing: Balancing::RoundRobin,
            connect_timeout_ms: 1000,
            max_requests: 10_000,
            max_pending: 1024,
            outlier_consecutive_failures: 5,
            ejection_ms: 30_000,
            max_ejection_percent: 50,
            health_check_interval_ms: 0,
            health_check_timeout_ms: 1000,
            idle_heartbeat_ms: 15_000,
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
    pub protocol: Protocol,
    pub address: String,
    pub max_frame_size: usize,
    /// Bytes waiting to be sent to a client that does not read, beyond which its
    /// connection is closed.
    pub max_buffered: usize,
    /// A client connection that sends nothing and is owed nothing for this long is
    /// closed (0: never): a client gone without a FIN would otherwise hold it for good.
    pub idle_timeout_ms: u64,
    /// Client connections open at once; one accepted past them is closed at once (0: no
    /// limit).
    pub max_connections: usize,
    /// Bytes all client connections together hold of frames not yet whole; a connection
    /// whose read takes the total past it, holding part of a frame, is closed.
    pub max_incomplete_bytes: usize,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, FromPyObject)]
#[pyo3(from_item_all)]
pub struct MeshConfig {
    pub listeners: Vec<ListenerConfig>,
    pub clusters: Vec<ClusterConfig>,
    /// The cluster an InvokeService call given an address (`rpc_target_address`) goes
    /// through, one per address and protocol; its own name, protocol and hosts are unused.
    pub direct: ClusterConfig,
}

impl MeshConfig {
    /// What the proxy thread relies on and Python's validation already promises, checked
    /// again here: a `MeshProxy` built from a hand-made dict must fail, not take down the
    /// thread.
    pub fn check(&self) -> Result<(), String> {
        for listener in &self.listeners {
            for route in &listener.routes {
                let what = format!("listener {:?} route {:?}", listener.name, route.name);
                if route.clusters.is_empty() {
                    return Err(format!("{what}: names no cluster"));
                }
                for (name, _) in &route.clusters {
                    let Some(cluster) = self.clusters.iter().find(|c| &c.name == name) else {
                        return Err(format!("{what}: {name:?} is not a cluster"));
                    };
                    if cluster.protocol != listener.protocol {
                        return Err(format!(
                            "{what}: cluster {name:?} speaks {}, the listener {}",
                            cluster.protocol.name(),
                            listener.protocol.name()
                        ));
                    }
                }
                if let Some((rate, burst)) = route.rate_limit {
                    if !(rate > 0.0 && burst >= 1.0) {
                        return Err(format!(
                            "{what}: rate limit {rate}/s with burst {burst} (a rate above 0 and a burst of at least 1)"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One Bolt listener `in` with one route `all`, and one cluster `up`.
    pub(crate) fn config(
        protocol: Protocol,
        clusters: Vec<(String, u32)>,
        rate_limit: Option<(f64, f64)>,
    ) -> MeshConfig {
        MeshConfig {
            listeners: vec![ListenerConfig {
                name: "in".into(),
                protocol: Protocol::Bolt,
                address: "127.0.0.1:0".into(),
                max_frame_size: 1024,
                max_buffered: 1024,
                idle_timeout_ms: 0,
                max_connections: 0,
                max_incomplete_bytes: 1024,
                routes: vec![RouteConfig {
                    name: "all".into(),
                    service: None,
                    service_prefix: None,
                    version: None,
                    headers: Vec::new(),
                    clusters,
                    timeout_ms: 1000,
                    retries: 0,
                    rate_limit,
                }],
            }],
            clusters: vec![ClusterConfig {
                name: "up".into(),
                protocol,
                hosts: vec!["127.0.0.1:1".into()],
                ..ClusterConfig::default()
            }],
            direct: ClusterConfig::default(),
        }
    }

    #[test]
    fn a_route_to_a_known_cluster_of_its_protocol_passes() {
        let ok = config(Protocol::Bolt, vec![("up".into(), 1)], Some((0.5, 1.0)));
        assert_eq!(ok.check(), Ok(()));
    }

    #[test]
    fn what_would_stop_the_proxy_thread_is_refused() {
        let cases = [
            (config(Protocol::Bolt, Vec::new(), None), "names no cluster"),
            (
                config(Protocol::Bolt, vec![("down".into(), 1)], None),
                "\"down\" is not a cluster",
            ),
            (
                config(Protocol::Dubbo, vec![("up".into(), 1)], None),
                "speaks dubbo, the listener bolt",
            ),
            (
                config(Protocol::Bolt, vec![("up".into(), 1)], Some((0.5, 0.5))),
                "burst 0.5",
            ),
            (
                config(Protocol::Bolt, vec![("up".into(), 1)], Some((0.0, 1.0))),
                "rate limit 0/s",
            ),
        ];
        for (config, expected) in cases {
            let error = config.check().expect_err(expected);
            assert!(error.contains(expected), "{error}");
            assert!(
                error.starts_with("listener \"in\" route \"all\""),
                "{error}"
            );
        }
    }
}
