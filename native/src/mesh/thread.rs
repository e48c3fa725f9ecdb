//! The mesh's own thread: it binds nothing (Python's side did), runs every listener and
//! upstream connection on one single-threaded tokio runtime, and swaps configurations in.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::task::spawn_local;

use super::config::{MeshConfig, Protocol};
use super::health::check_hosts;
use super::invoke::{start_invocation, DirectClusters, Invocations};
use super::listener::{accept, Listener};
use super::reply::Completions;
use super::routing::Routing;
use super::stats::{ClusterStats, ListenerStats, RouteStats};
use crate::bolt::Bolt;
use crate::codec::Codec;
use crate::dubbo::Dubbo;

pub(super) enum Control {
    Reload(MeshConfig, std::sync::mpsc::Sender<()>),
    /// Close the listening sockets; the connections open are served on.
    StopAccepting,
    Stop,
}

/// Names beside the counters, as the running configuration has them.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) listeners: Vec<(String, String, String, Arc<ListenerStats>)>,
    pub(super) routes: Vec<(String, String, Arc<RouteStats>)>,
    pub(super) clusters: Vec<(String, Vec<String>, Arc<ClusterStats>)>,
}

pub(super) fn publish(
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

pub(super) fn start_health_checks(routing: &Routing, previous: Option<&Routing>) {
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

pub(super) async fn run(
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
    let mut listeners = Vec::new();
    for (index, (l, socket)) in config.listeners.iter().zip(sockets).enumerate() {
        let listener = Rc::new(Listener {
            index,
            max_frame_size: l.max_frame_size,
            max_buffered: l.max_buffered,
            idle_timeout: (l.idle_timeout_ms > 0).then(|| Duration::from_millis(l.idle_timeout_ms)),
            max_connections: l.max_connections,
            max_incomplete_bytes: l.max_incomplete_bytes,
            incomplete_bytes: Cell::new(0),
            routing: routing.clone(),
            stats: listener_stats[index].clone(),
            accepting: Cell::new(true),
            stop_accepting: Notify::new(),
        });
        let socket =
            tokio::net::TcpListener::from_std(socket).expect("a bound non-blocking socket");
        spawn(l.protocol, socket, listener.clone());
        listeners.push(listener);
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
            Control::StopAccepting => listeners.iter().for_each(|l| l.close()),
            Control::Stop => break,
        }
    }
    drop(config);
}

pub(super) fn spawn(protocol: Protocol, socket: tokio::net::TcpListener, listener: Rc<Listener>) {
    fn go<C: Codec>(socket: tokio::net::TcpListener, listener: Rc<Listener>) {
        spawn_local(accept::<C>(socket, listener));
    }
    match protocol {
        Protocol::Dubbo => go::<Dubbo>(socket, listener),
        Protocol::Bolt => go::<Bolt>(socket, listener),
    }
}
