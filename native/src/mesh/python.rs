//! `MeshProxy`: the mesh's whole Python surface. Python builds it from a validated
//! configuration, may reload it, reads its statistics, and stops it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use tokio::sync::mpsc;
use tokio::task::{spawn_local, LocalSet};

use super::cluster::Cluster;
use super::config::{ClusterConfig, MeshConfig, Protocol};
use super::health::check_hosts;
use super::listener::{accept, Listener};
use super::listener::{dispatch, Sending};
use super::reply::{Completion, Completions, ReplyTo};
use super::routing::Routing;
use super::stats::{ClusterStats, ListenerStats, RouteStats, LATENCY_BUCKETS_US, OUTCOMES};
use crate::bolt::Bolt;
use crate::codec::{Codec, FrameKind, Refusal};
use crate::dubbo::Dubbo;

enum Control {
    Reload(MeshConfig, std::sync::mpsc::Sender<()>),
    Stop,
}

/// Invocations handed from the event loop to the mesh thread. Only the first queued while
/// the queue is empty wakes the thread (a wake-up is a system call and a context switch),
/// which then takes the whole batch.
#[derive(Default)]
struct Invocations {
    queue: Mutex<Vec<Invocation>>,
    ready: tokio::sync::Notify,
}

impl Invocations {
    fn push(&self, invocation: Invocation) {
        let mut queue = self.queue.lock().expect("invocations poisoned");
        let first = queue.is_empty();
        queue.push(invocation);
        drop(queue);
        if first {
            self.ready.notify_one();
        }
    }

    fn take(&self) -> Vec<Invocation> {
        std::mem::take(&mut *self.queue.lock().expect("invocations poisoned"))
    }
}

/// An InvokeService call for the bolt or dubbo channel: a whole request frame for a
/// cluster of the configuration, or for one address (`rpc_target_address`).
struct Invocation {
    token: u64,
    protocol: Protocol,
    cluster: Option<String>,
    address: Option<String>,
    frame: Vec<u8>,
    timeout: Duration,
    retries: u32,
}

/// Names beside the counters, as the running configuration has them.
#[derive(Default)]
struct Registry {
    listeners: Vec<(String, String, String, Arc<ListenerStats>)>,
    routes: Vec<(String, String, Arc<RouteStats>)>,
    clusters: Vec<(String, Vec<String>, Arc<ClusterStats>)>,
}

#[pyclass(module = "layotto_fast_native", name = "MeshProxy")]
pub struct MeshProxy {
    control: Option<mpsc::UnboundedSender<Control>>,
    invocations: Arc<Invocations>,
    completions: Arc<Completions>,
    thread: Option<JoinHandle<()>>,
    registry: Arc<Mutex<Registry>>,
    bound: Vec<(String, String, u16)>,
}

#[pymethods]
impl MeshProxy {
    /// Binds every listener now (so a taken port fails here, naming the listener) and
    /// starts the proxy thread.
    #[new]
    fn new(config: &Bound<'_, PyDict>) -> PyResult<Self> {
        let config: MeshConfig = config.extract()?;
        config.check().map_err(PyValueError::new_err)?;
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
        let (control, receiver) = mpsc::unbounded_channel();
        let shared = registry.clone();
        let completions = Arc::new(Completions::new()?);
        let finished = completions.clone();
        let invocations = Arc::new(Invocations::default());
        let queued = invocations.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the mesh runtime: {e}")))?;
        let (started, wait_started) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("mesh".into())
            .spawn(move || {
                LocalSet::new().block_on(
                    &runtime,
                    run(config, sockets, receiver, queued, shared, started, finished),
                );
            })
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the mesh thread: {e}")))?;
        wait_started
            .recv()
            .map_err(|_| PyRuntimeError::new_err("the mesh thread ended while starting"))?;
        Ok(MeshProxy {
            control: Some(control),
            invocations,
            completions,
            thread: Some(thread),
            registry,
            bound,
        })
    }

    /// (listener name, host, port) of every listener, ports as bound (0 resolved).
    fn addresses(&self) -> Vec<(String, String, u16)> {
        self.bound.clone()
    }

    /// Swaps in a new configuration: same listeners, new routes and clusters. Clusters
    /// whose settings did not change keep their connections. Blocks until it is in.
    fn reload(&self, py: Python<'_>, config: &Bound<'_, PyDict>) -> PyResult<()> {
        let config: MeshConfig = config.extract()?;
        config.check().map_err(PyValueError::new_err)?;
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
            token,
            protocol,
            cluster,
            address,
            frame,
            timeout: Duration::from_millis(timeout_ms),
            retries,
        };
        if self.control.as_ref().is_none_or(|c| c.is_closed()) {
            return Err(PyRuntimeError::new_err("the mesh is stopped"));
        }
        self.invocations.push(invocation);
        Ok(())
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
        let registry = self.registry.lock().expect("registry poisoned");
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

fn publish(
    registry: &Mutex<Registry>,
    config: &MeshConfig,
    routing: &Routing,
    listeners: &[Arc<ListenerStats>],
) {
    let mut r = registry.lock().expect("registry poisoned");
    r.listeners = config
        .listeners
        .iter()
        .zip(listeners)
        .map(|(l, s)| {
            (
                l.name.clone(),
                l.protocol.name().to_string(),
                l.address.clone(),
                s.clone(),
            )
        })
        .collect();
    r.routes = config
        .listeners
        .iter()
        .zip(&routing.listeners)
        .flat_map(|(l, lr)| {
            lr.routes
                .iter()
                .map(move |route| (l.name.clone(), route.spec.name.clone(), route.stats.clone()))
        })
        .collect();
    r.clusters = routing
        .clusters
        .iter()
        .map(|c| {
            (
                c.config.name.clone(),
                c.config.hosts.clone(),
                c.stats.clone(),
            )
        })
        .collect();
}

fn start_health_checks(routing: &Routing, previous: Option<&Routing>) {
    for cluster in &routing.clusters {
        let kept = previous.is_some_and(|p| p.clusters.iter().any(|old| Rc::ptr_eq(old, cluster)));
        if kept || cluster.config.health_check_interval_ms == 0 {
            continue;
        }
        let weak = Rc::downgrade(cluster);
        match cluster.config.protocol {
            Protocol::Dubbo => spawn_local(check_hosts::<Dubbo>(weak)),
            Protocol::Bolt => spawn_local(check_hosts::<Bolt>(weak)),
        };
    }
}

async fn run(
    config: MeshConfig,
    sockets: Vec<StdListener>,
    mut control: mpsc::UnboundedReceiver<Control>,
    invocations: Arc<Invocations>,
    registry: Arc<Mutex<Registry>>,
    started: std::sync::mpsc::Sender<()>,
    completions: Arc<Completions>,
) {
    let mut route_stats = HashMap::new();
    let routing = Rc::new(RefCell::new(Rc::new(Routing::build(
        &config,
        None,
        &mut route_stats,
    ))));
    start_health_checks(&routing.borrow(), None);
    let listener_stats: Vec<Arc<ListenerStats>> =
        config.listeners.iter().map(|_| Arc::default()).collect();
    publish(&registry, &config, &routing.borrow(), &listener_stats);
    for (index, (l, socket)) in config.listeners.iter().zip(sockets).enumerate() {
        let listener = Rc::new(Listener {
            index,
            max_frame_size: l.max_frame_size,
            max_buffered: l.max_buffered,
            routing: routing.clone(),
            stats: listener_stats[index].clone(),
        });
        let socket =
            tokio::net::TcpListener::from_std(socket).expect("a bound non-blocking socket");
        spawn(l.protocol, socket, listener);
    }
    let _ = started.send(());
    let direct: Rc<DirectClusters> = Rc::default();
    let invoke_stats = Arc::new(RouteStats::default());
    let mut config = config;
    loop {
        let message = tokio::select! {
            message = control.recv() => message,
            _ = invocations.ready.notified() => {
                for invocation in invocations.take() {
                    start_invocation(invocation, &routing.borrow(), &direct, &completions, &invoke_stats);
                }
                continue;
            }
        };
        let Some(message) = message else { break };
        match message {
            Control::Reload(new, done) => {
                let old = routing.borrow().clone();
                let next = Rc::new(Routing::build(&new, Some(&old), &mut route_stats));
                start_health_checks(&next, Some(&old));
                publish(&registry, &new, &next, &listener_stats);
                *routing.borrow_mut() = next;
                config = new;
                let _ = done.send(());
            }
            Control::Stop => break,
        }
    }
    drop(config);
}

fn start_invocation(
    invocation: Invocation,
    routing: &Routing,
    direct: &DirectClusters,
    completions: &Arc<Completions>,
    invoke_stats: &Arc<RouteStats>,
) {
    let cluster = match (&invocation.cluster, &invocation.address) {
        (Some(name), _) => routing
            .clusters
            .iter()
            .find(|c| &c.config.name == name && c.config.protocol == invocation.protocol)
            .cloned(),
        (None, Some(address)) => Some(direct_cluster(direct, invocation.protocol, address)),
        (None, None) => None,
    };
    let Some(cluster) = cluster else {
        let name = invocation.cluster.clone().unwrap_or_default();
        completions.push(Completion {
            token: invocation.token,
            outcome: Err((
                Refusal::Unavailable,
                format!(
                    "no {} cluster named {name:?} in the mesh configuration",
                    invocation.protocol.name()
                ),
            )),
        });
        return;
    };
    let (completions, stats) = (completions.clone(), invoke_stats.clone());
    match invocation.protocol {
        Protocol::Dubbo => spawn_local(send_invocation::<Dubbo>(
            cluster,
            invocation,
            completions,
            stats,
        )),
        Protocol::Bolt => spawn_local(send_invocation::<Bolt>(
            cluster,
            invocation,
            completions,
            stats,
        )),
    };
}

/// One-host clusters by (protocol, address), made for calls that name their address, with
/// when each was last used.
type DirectClusters = RefCell<HashMap<(Protocol, String), (Rc<Cluster>, Instant)>>;

/// Direct clusters kept once idle: the addresses come from callers (`rpc_target_address`),
/// so without a bound every address ever named would keep a cluster and its connection.
const DIRECT_CLUSTERS_KEPT: usize = 64;

/// The one-host cluster for calls that name their address (`rpc_target_address`). Past
/// `DIRECT_CLUSTERS_KEPT`, the least recently used idle one (no call holds it) is dropped
/// first, and its connection closes.
fn direct_cluster(direct: &DirectClusters, protocol: Protocol, address: &str) -> Rc<Cluster> {
    let mut map = direct.borrow_mut();
    let key = (protocol, address.to_string());
    let now = Instant::now();
    if let Some((cluster, used)) = map.get_mut(&key) {
        *used = now;
        return cluster.clone();
    }
    if map.len() >= DIRECT_CLUSTERS_KEPT {
        let idle = map
            .iter()
            .filter(|(_, (cluster, _))| Rc::strong_count(cluster) == 1)
            .min_by_key(|(_, (_, used))| *used)
            .map(|(key, _)| key.clone());
        if let Some(idle) = idle {
            map.remove(&idle);
        }
    }
    let cluster = Rc::new(Cluster::new(ClusterConfig {
        name: address.to_string(),
        protocol,
        hosts: vec![address.to_string()],
        // One host: ejecting it would only turn its failures into refusals.
        outlier_consecutive_failures: 0,
        ..ClusterConfig::default()
    }));
    map.insert(key, (cluster.clone(), now));
    cluster
}

async fn send_invocation<C: Codec>(
    cluster: Rc<Cluster>,
    invocation: Invocation,
    completions: Arc<Completions>,
    stats: Arc<RouteStats>,
) {
    let token = invocation.token;
    let fail = |refusal, why: String| {
        completions.push(Completion {
            token,
            outcome: Err((refusal, why)),
        })
    };
    let mut frame = invocation.frame;
    let head = match C::head(&frame) {
        Ok(head) if head.kind == FrameKind::Request => head,
        Ok(_) => return fail(Refusal::BadRequest, "not a two-way request frame".into()),
        Err(e) => return fail(Refusal::BadRequest, e.to_string()),
    };
    let reply = Some(ReplyTo::Invoke {
        token,
        completions: completions.clone(),
    });
    let sending = Sending {
        timeout: invocation.timeout,
        retries: invocation.retries,
        stats: &stats,
    };
    if let Err((refusal, why)) = dispatch::<C>(&cluster, &mut frame, head, reply, sending).await {
        fail(refusal, why);
    }
}

fn spawn(protocol: Protocol, socket: tokio::net::TcpListener, listener: Rc<Listener>) {
    fn go<C: Codec>(socket: tokio::net::TcpListener, listener: Rc<Listener>) {
        spawn_local(accept::<C>(socket, listener));
    }
    match protocol {
        Protocol::Dubbo => go::<Dubbo>(socket, listener),
        Protocol::Bolt => go::<Bolt>(socket, listener),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_clusters_stay_bounded_and_keep_those_in_use() {
        let direct = DirectClusters::default();
        let held = direct_cluster(&direct, Protocol::Bolt, "10.0.0.1:1");
        let reused = direct_cluster(&direct, Protocol::Bolt, "10.0.0.2:1");
        for i in 0..(DIRECT_CLUSTERS_KEPT * 3) {
            direct_cluster(&direct, Protocol::Bolt, &format!("10.1.0.{i}:1"));
            // a recently used one survives its neighbours
            let again = direct_cluster(&direct, Protocol::Bolt, "10.0.0.2:1");
            assert!(Rc::ptr_eq(&again, &reused));
        }
        let map = direct.borrow();
        assert!(map.len() <= DIRECT_CLUSTERS_KEPT, "{} kept", map.len());
        let kept = &map[&(Protocol::Bolt, "10.0.0.1:1".to_string())].0;
        assert!(
            Rc::ptr_eq(kept, &held),
            "a cluster a call holds is never dropped"
        );
    }

    #[test]
    fn a_protocol_and_address_pair_is_one_cluster() {
        let direct = DirectClusters::default();
        let bolt = direct_cluster(&direct, Protocol::Bolt, "127.0.0.1:1");
        assert!(Rc::ptr_eq(
            &bolt,
            &direct_cluster(&direct, Protocol::Bolt, "127.0.0.1:1")
        ));
        assert!(!Rc::ptr_eq(
            &bolt,
            &direct_cluster(&direct, Protocol::Dubbo, "127.0.0.1:1")
        ));
    }
}
