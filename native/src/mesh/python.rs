//! `MeshProxy`: the mesh's whole Python surface. Python builds it from a validated
//! configuration, may reload it, reads its statistics, and stops it; the proxy thread
//! (`thread`) and InvokeService's calls (`invoke`) are their own modules.

use std::net::TcpListener as StdListener;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use tokio::sync::mpsc;

use super::config::{MeshConfig, Protocol};
use super::invoke::{Invocation, Invocations};
use super::reply::{Calls, Completions, InvokeReply};
use super::stats::{RouteStats, LATENCY_BUCKETS_US, OUTCOMES};
use super::thread::{start, Control, Registry};
use crate::codec::Refusal;
use crate::wake_queue::locked;

/// The configuration in `config`, checked; any mistake is one ValueError whose message
/// follows pyo3's extraction errors down to the field and value at fault.
fn mesh_config(config: &Bound<'_, PyDict>) -> PyResult<MeshConfig> {
    let config: MeshConfig = config.extract().map_err(|e: PyErr| {
        let py = config.py();
        let mut message = e.value(py).to_string();
        let mut cause = e.cause(py);
        while let Some(inner) = cause {
            message = format!("{message}: {}", inner.value(py));
            cause = inner.cause(py);
        }
        PyValueError::new_err(message)
    })?;
    config.check().map_err(PyValueError::new_err)?;
    Ok(config)
}

#[pyclass(module = "layotto_fast_native", name = "MeshProxy")]
pub struct MeshProxy {
    control: Option<mpsc::UnboundedSender<Control>>,
    invocations: Arc<Invocations>,
    completions: Arc<Completions>,
    calls: Arc<Calls>,
    thread: Option<JoinHandle<()>>,
    /// Why the mesh thread failed, once it has.
    failure: Arc<Mutex<Option<String>>>,
    registry: Arc<Mutex<Registry>>,
    bound: Vec<(String, String, u16)>,
    /// (name, protocol, address) of each listener: a reload must keep them as they are.
    listeners: Vec<(String, Protocol, String)>,
}

fn listener_keys(config: &MeshConfig) -> Vec<(String, Protocol, String)> {
    config
        .listeners
        .iter()
        .map(|l| (l.name.clone(), l.protocol, l.address.clone()))
        .collect()
}

#[pymethods]
impl MeshProxy {
    /// Binds every listener now (so a taken port fails here, naming the listener) and
    /// starts the proxy thread.
    #[new]
    fn new(config: &Bound<'_, PyDict>) -> PyResult<Self> {
        let config = mesh_config(config)?;
        let listeners = listener_keys(&config);
        let mut sockets = Vec::new();
        let mut bound = Vec::new();
        for l in &config.listeners {
            let socket = StdListener::bind(&l.address).map_err(|e| {
                PyOSError::new_err(format!(
                    "listener {:?} cannot listen on {}: {e}",
                    l.name, l.address
                ))
            })?;
            socket.set_nonblocking(true)?;
            let local = socket.local_addr()?;
            bound.push((l.name.clone(), local.ip().to_string(), local.port()));
            sockets.push(socket);
        }
        let registry = Arc::new(Mutex::new(Registry::default()));
        let invocations = Arc::new(Invocations::default());
        let completions = Arc::new(Completions::new()?);
        let thread = start(
            config,
            sockets,
            invocations.clone(),
            registry.clone(),
            completions.clone(),
        )
        .map_err(PyRuntimeError::new_err)?;
        Ok(MeshProxy {
            control: Some(thread.control),
            invocations,
            completions,
            calls: Arc::default(),
            thread: Some(thread.handle),
            failure: thread.failure,
            registry,
            bound,
            listeners,
        })
    }

    /// (listener name, host, port) of every listener, ports as bound (0 resolved).
    fn addresses(&self) -> Vec<(String, String, u16)> {
        self.bound.clone()
    }

    /// Swaps in a new configuration: same listeners, new routes and clusters. Clusters
    /// whose settings did not change keep their connections. Blocks until it is in.
    fn reload(&self, py: Python<'_>, config: &Bound<'_, PyDict>) -> PyResult<()> {
        let config = mesh_config(config)?;
        if listener_keys(&config) != self.listeners {
            // the mesh thread serves each bound socket with its listener's codec and routes
            return Err(PyValueError::new_err(
                "a reload keeps the listeners (name, protocol, address) as they are",
            ));
        }
        let (done, wait) = std::sync::mpsc::channel();
        let sent = self
            .control
            .as_ref()
            .is_some_and(|c| c.send(Control::Reload(config, done)).is_ok());
        if !sent {
            return Err(PyRuntimeError::new_err("the mesh is stopped"));
        }
        py.detach(move || wait.recv())
            .map_err(|_| PyRuntimeError::new_err("the mesh thread ended during the reload"))
    }

    /// Sends request `frame` (a whole Bolt or Dubbo request) to `cluster`, or straight to
    /// `address`; its outcome comes back through `take_completions` under `token`.
    #[pyo3(signature = (token, protocol, frame, timeout_ms, cluster = None, address = None, retries = 1))]
    #[allow(clippy::too_many_arguments)]
    fn invoke(
        &self,
        token: u64,
        protocol: Protocol,
        frame: Vec<u8>,
        timeout_ms: u64,
        cluster: Option<String>,
        address: Option<String>,
        retries: u32,
    ) -> PyResult<()> {
        if cluster.is_none() == address.is_none() {
            return Err(PyValueError::new_err(
                "invoke needs a cluster or an address, not both",
            ));
        }
        let invocation = Invocation {
            reply: InvokeReply::new(token, self.completions.clone(), self.calls.clone()),
            protocol,
            cluster,
            address,
            frame,
            timeout: Duration::from_millis(timeout_ms),
            retries,
        };
        self.invocations
            .push(invocation)
            .map_err(PyRuntimeError::new_err)
    }

    /// The call under `token` was given up by its caller (cancelled, or past its own
    /// deadline): the mesh lets it go within a few milliseconds, freeing its place in the
    /// cluster as its own deadline would, and hands back no completion for it.
    fn cancel(&self, token: u64) {
        self.calls.give_up(token);
    }

    /// Why the mesh thread ended (stopped, or failed), or None while it runs: every call
    /// still waiting for its completion then has none coming.
    fn ended(&self) -> Option<String> {
        self.invocations.ended()
    }

    /// What the mesh thread failed with (a bug's panic), or None while it runs or after a
    /// stop: with it gone, no listener is served and every invocation is refused.
    fn failure(&self) -> Option<String> {
        locked(&self.failure).clone()
    }

    /// The descriptor the event loop watches: readable when invocations have finished.
    fn completions_fd(&self) -> i32 {
        self.completions.fd()
    }

    /// Finished invocations: (token, outcome, bytes): outcome "ok" with the response
    /// frame, or why not ("timeout", "unavailable", "overloaded", "no_service",
    /// "bad_request") with the reason as UTF-8.
    fn take_completions<'py>(
        &self,
        py: Python<'py>,
    ) -> Vec<(u64, &'static str, Bound<'py, PyBytes>)> {
        self.completions
            .take()
            .into_iter()
            .map(|c| match c.outcome {
                Ok(frame) => (c.token, "ok", PyBytes::new(py, &frame)),
                Err((refusal, why)) => (
                    c.token,
                    refusal_name(refusal),
                    PyBytes::new(py, why.as_bytes()),
                ),
            })
            .collect()
    }

    /// Closes the listening sockets; open connections are still served.
    fn stop_accepting(&self) {
        if let Some(control) = &self.control {
            let _ = control.send(Control::StopAccepting);
        }
    }

    /// Client connections open on the listeners.
    fn open_connections(&self) -> u64 {
        let registry = locked(&self.registry);
        registry
            .listeners
            .iter()
            .map(|(_, _, _, s)| s.open_connections.get())
            .sum()
    }

    /// Closes every listener and connection and waits for the thread to end.
    fn stop(&mut self, py: Python<'_>) {
        if let Some(control) = self.control.take() {
            let _ = control.send(Control::Stop);
        }
        if let Some(thread) = self.thread.take() {
            py.detach(|| {
                let _ = thread.join();
            });
        }
    }

    /// Counters by listener, route and cluster (see `layotto_fast.mesh.metrics`).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let registry = locked(&self.registry);
        let out = PyDict::new(py);
        let listeners = PyList::empty(py);
        for (name, protocol, address, s) in &registry.listeners {
            let d = PyDict::new(py);
            d.set_item("name", name)?;
            d.set_item("protocol", protocol)?;
            d.set_item("address", address)?;
            d.set_item("connections", s.connections.get())?;
            d.set_item("open_connections", s.open_connections.get())?;
            d.set_item("no_route", s.no_route.get())?;
            d.set_item("bad_frames", s.bad_frames.get())?;
            d.set_item("heartbeats", s.heartbeats.get())?;
            d.set_item("idle_closed", s.idle_closed.get())?;
            d.set_item("max_connections_closed", s.max_connections_closed.get())?;
            d.set_item("incomplete_closed", s.incomplete_closed.get())?;
            d.set_item("unread_closed", s.unread_closed.get())?;
            listeners.append(d)?;
        }
        out.set_item("listeners", listeners)?;
        let routes = PyList::empty(py);
        for (listener, name, s) in &registry.routes {
            let d = PyDict::new(py);
            d.set_item("listener", listener)?;
            d.set_item("name", name)?;
            put_request_stats(&d, s)?;
            routes.append(d)?;
        }
        out.set_item("routes", routes)?;
        let clusters = PyList::empty(py);
        for (name, hosts, s) in &registry.clusters {
            let d = PyDict::new(py);
            d.set_item("name", name)?;
            put_request_stats(&d, &s.requests)?;
            d.set_item("ejections", s.ejections.get())?;
            d.set_item("ejections_capped", s.ejections_capped.get())?;
            d.set_item("breaker_refused", s.breaker_refused.get())?;
            d.set_item("connect_failures", s.connect_failures.get())?;
            d.set_item("unknown_responses", s.unknown_responses.get())?;
            let host_list = PyList::empty(py);
            for (address, h) in hosts.iter().zip(&s.hosts) {
                let hd = PyDict::new(py);
                hd.set_item("address", address)?;
                hd.set_item(
                    "healthy",
                    h.healthy.load(std::sync::atomic::Ordering::Relaxed),
                )?;
                hd.set_item("ejected", h.is_ejected())?;
                host_list.append(hd)?;
            }
            d.set_item("hosts", host_list)?;
            clusters.append(d)?;
        }
        out.set_item("clusters", clusters)?;
        let direct = PyList::empty(py);
        for (protocol, address, s) in &registry.direct {
            let d = PyDict::new(py);
            d.set_item("protocol", protocol)?;
            d.set_item("address", address)?;
            put_request_stats(&d, &s.requests)?;
            direct.append(d)?;
        }
        out.set_item("direct", direct)?;
        Ok(out)
    }

    fn __del__(&mut self) {
        if let Some(control) = self.control.take() {
            let _ = control.send(Control::Stop);
        }
    }
}

/// A route's or cluster's requests: by outcome, by the upstream's status, and latency.
fn put_request_stats(d: &Bound<'_, PyDict>, s: &RouteStats) -> PyResult<()> {
    let py = d.py();
    let outcomes = PyDict::new(py);
    for (outcome, label) in OUTCOMES {
        outcomes.set_item(label, s.outcomes[outcome as usize].get())?;
    }
    d.set_item("outcomes", outcomes)?;
    let statuses = PyDict::new(py);
    for (status, counter) in s.statuses.iter().enumerate() {
        if counter.get() > 0 {
            statuses.set_item(status, counter.get())?;
        }
    }
    d.set_item("statuses", statuses)?;
    let buckets: Vec<u64> = s.latency.iter().map(|c| c.get()).collect();
    d.set_item("latency_bounds_us", LATENCY_BUCKETS_US.to_vec())?;
    d.set_item("latency_counts", buckets)?;
    d.set_item("latency_sum_us", s.latency_sum_us.get())?;
    Ok(())
}

fn refusal_name(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::NoService => "no_service",
        Refusal::Overloaded => "overloaded",
        Refusal::Timeout => "timeout",
        Refusal::Unavailable => "unavailable",
        Refusal::BadRequest => "bad_request",
    }
}

/// Benchmark only (`make bench`'s micro-benchmarks): the mesh's route table, looked up
/// by service from Python.
#[cfg(feature = "bench")]
#[pyclass(module = "layotto_fast_native", name = "BenchRouteTable")]
pub struct BenchRouteTable(super::router::RouteTable);

#[cfg(feature = "bench")]
#[pymethods]
impl BenchRouteTable {
    /// One exact-service route per name in `services`, then a prefix and a default route.
    #[new]
    fn new(services: Vec<String>) -> Self {
        use super::router::{Route, RouteMatch, WeightedCluster};
        let route = |name: String, matches: RouteMatch| Route {
            name,
            matches,
            clusters: vec![WeightedCluster {
                cluster: 0,
                weight: 1,
            }],
        };
        let mut routes: Vec<Route> = services
            .into_iter()
            .map(|s| {
                route(
                    s.clone(),
                    RouteMatch {
                        service: Some(s),
                        ..Default::default()
                    },
                )
            })
            .collect();
        routes.push(route(
            "prefix".into(),
            RouteMatch {
                service_prefix: Some("com.example.".into()),
                ..Default::default()
            },
        ));
        routes.push(route("default".into(), RouteMatch::default()));
        BenchRouteTable(super::router::RouteTable::new(routes))
    }

    /// The index of the route a request for `service` takes.
    fn lookup(&self, service: &str) -> Option<usize> {
        let meta = crate::codec::RequestMeta {
            service: service.to_string(),
            ..Default::default()
        };
        self.0.lookup(&meta)
    }
}
