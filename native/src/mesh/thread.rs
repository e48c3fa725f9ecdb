//! The mesh's own thread: it binds nothing (Python's side did), runs every listener and
//! upstream connection on one single-threaded tokio runtime, and swaps configurations in.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::TcpListener as StdListener;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::task::{spawn_local, JoinHandle, LocalSet};

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
use crate::wake_queue::locked;

pub(super) enum Control {
    Reload(MeshConfig, std::sync::mpsc::Sender<()>),
    /// Close the listening sockets; the connections open are served on.
    StopAccepting,
    Stop,
    /// Fail as a bug would: tests of what a failed thread leaves behind.
    #[cfg(test)]
    Panic,
    /// Fail in a task owing calls, as a bug there would.
    #[cfg(test)]
    PanicInTask,
}

/// How a task that owes InvokeService calls fails the mesh thread (see `spawn_owing`).
struct Failing {
    /// Why the thread failed: the first panic's message.
    slot: Arc<Mutex<Option<String>>>,
    /// Ends `run`'s loop.
    ended: Rc<Notify>,
}

thread_local! {
    /// Set on the mesh thread by `start`.
    static FAILING: RefCell<Option<Failing>> = const { RefCell::new(None) };
}

/// Spawns `task` on the mesh thread, which ends if it panics: tokio would end the task
/// alone, and an InvokeService call its connection holds would wait for good (the event
/// loop has no timer of its own per call). Ending the thread refuses every call (see
/// `start`) and the sidecar restarts. Tasks that serve a mesh client are spawned plainly:
/// a panic there ends that client's connection only. Off the mesh thread (Rust tests), a
/// panic is the task's alone.
pub(super) fn spawn_owing<F>(task: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    spawn_local(Owing(Box::pin(task)))
}

struct Owing<F>(Pin<Box<F>>);

impl<F: Future> Future for Owing<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let task = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => {
                FAILING.with(|failing| {
                    if let Some(failing) = &*failing.borrow() {
                        let mut slot = locked(&failing.slot);
                        slot.get_or_insert_with(|| panic_message(panic.as_ref()));
                        failing.ended.notify_one();
                    }
                });
                std::panic::resume_unwind(panic)
            }
        }
    }
}

/// The mesh thread, as the `MeshProxy` that started it holds it.
pub(super) struct MeshThread {
    pub(super) control: mpsc::UnboundedSender<Control>,
    pub(super) handle: std::thread::JoinHandle<()>,
    /// Why the thread failed (what it panicked with), once it has.
    pub(super) failure: Arc<Mutex<Option<String>>>,
}

/// Starts the mesh thread on `sockets`, bound already, and waits until it serves them.
///
/// The thread ends on `Control::Stop`, or if it panics (the runtime unwinds, see
/// Cargo.toml), in `run` or in a task spawned by `spawn_owing`. Either way the invocations
/// still queued are refused and later ones are refused at once, with why it ended
/// (`Invocations::ended`), and the event loop is woken through `completions` to refuse the
/// calls it still waits for: some may be held by connections that a failed thread never
/// ends. A panic's message is kept in `failure`, which the sidecar watches so that it
/// stops, to be restarted, rather than stay up without its mesh.
pub(super) fn start(
    config: MeshConfig,
    sockets: Vec<StdListener>,
    invocations: Arc<Invocations>,
    registry: Arc<Mutex<Registry>>,
    completions: Arc<Completions>,
) -> Result<MeshThread, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the mesh runtime: {e}"))?;
    let (control, receiver) = mpsc::unbounded_channel();
    let (started, wait_started) = std::sync::mpsc::channel();
    let failure = Arc::new(Mutex::new(None));
    let failed = failure.clone();
    let handle = std::thread::Builder::new()
        .name("mesh".into())
        .spawn(move || {
            let queued = invocations.clone();
            let ended = Rc::new(Notify::new());
            FAILING.with(|failing| {
                *failing.borrow_mut() = Some(Failing {
                    slot: failed.clone(),
                    ended: ended.clone(),
                })
            });
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(move || {
                LocalSet::new().block_on(
                    &runtime,
                    run(
                        config,
                        sockets,
                        receiver,
                        invocations,
                        registry,
                        started,
                        ended,
                    ),
                );
            }));
            let mut slot = locked(&failed);
            if let Err(panic) = outcome {
                slot.get_or_insert_with(|| panic_message(panic.as_ref()));
            }
            let why = match &*slot {
                Some(message) => format!("the mesh thread failed: {message}"),
                None => "the mesh is stopped".to_string(),
            };
            drop(slot);
            queued.end(&why);
            completions.wake();
        })
        .map_err(|e| format!("cannot start the mesh thread: {e}"))?;
    if wait_started.recv().is_err() {
        let _ = handle.join(); // its failure is recorded once it has ended
        let why = locked(&failure).clone();
        return Err(format!(
            "the mesh thread ended while starting: {}",
            why.unwrap_or_default()
        ));
    }
    Ok(MeshThread {
        control,
        handle,
        failure,
    })
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Names beside the counters, as the running configuration has them.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) listeners: Vec<(String, String, String, Arc<ListenerStats>)>,
    pub(super) routes: Vec<(String, String, Arc<RouteStats>)>,
    pub(super) clusters: Vec<(String, Vec<String>, Arc<ClusterStats>)>,
    /// The clusters made for InvokeService calls that name their address: (protocol, address).
    pub(super) direct: Vec<(String, String, Arc<ClusterStats>)>,
}

pub(super) fn publish(
    registry: &Mutex<Registry>,
    config: &MeshConfig,
    routing: &Routing,
    listeners: &[Arc<ListenerStats>],
) {
    let mut r = locked(registry);
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
        match cluster.config.protocol {
            Protocol::Dubbo => check_hosts::<Dubbo>(cluster),
            Protocol::Bolt => check_hosts::<Bolt>(cluster),
        }
    }
}

pub(super) async fn run(
    config: MeshConfig,
    sockets: Vec<StdListener>,
    mut control: mpsc::UnboundedReceiver<Control>,
    invocations: Arc<Invocations>,
    registry: Arc<Mutex<Registry>>,
    started: std::sync::mpsc::Sender<()>,
    failed: Rc<Notify>,
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
            _ = failed.notified() => break, // a task owing calls panicked: see spawn_owing
            _ = invocations.ready.notified() => {
                for invocation in invocations.take() {
                    start_invocation(invocation, &routing.borrow(), &direct, &invoke_stats, &registry);
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
            #[cfg(test)]
            Control::Panic => panic!("a test asked the mesh thread to fail"),
            #[cfg(test)]
            Control::PanicInTask => {
                spawn_owing(async { panic!("a test asked a mesh task to fail") });
            }
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

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::mem::ManuallyDrop;
    use std::net::TcpListener;
    use std::os::fd::FromRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::codec::Refusal;
    use crate::mesh::config::tests::config;
    use crate::mesh::config::Protocol;
    use crate::mesh::invoke::Invocation;
    use crate::mesh::reply::{Completions, InvokeReply};
    use crate::testdata::golden;

    fn call(token: u64, completions: &Arc<Completions>, address: &str) -> Invocation {
        Invocation {
            reply: InvokeReply::new(token, completions.clone(), Arc::default()),
            protocol: Protocol::Bolt,
            cluster: None,
            address: Some(address.to_string()),
            frame: golden("bolt_request_echo"),
            timeout: Duration::from_secs(60),
            retries: 0,
        }
    }

    /// A mesh thread with no listener, started on `invocations` and `completions`.
    fn started(invocations: &Arc<Invocations>, completions: &Arc<Completions>) -> MeshThread {
        let mut mesh_config = config(Protocol::Bolt, vec![("up".into(), 1)], None);
        mesh_config.listeners.clear();
        start(
            mesh_config,
            Vec::new(),
            invocations.clone(),
            Arc::default(),
            completions.clone(),
        )
        .unwrap()
    }

    #[test]
    fn a_failed_mesh_thread_refuses_the_calls_in_flight_and_any_later_and_says_why() {
        // An upstream that takes the call and never answers: it stays in flight.
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = upstream.local_addr().unwrap().to_string();
        let completions = Arc::new(Completions::new().unwrap());
        let invocations = Arc::new(Invocations::default());
        let thread = started(&invocations, &completions);

        invocations.push(call(1, &completions, &address)).unwrap();
        let (mut connection, _) = upstream.accept().unwrap();
        connection
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut first = [0u8; 1];
        connection.read_exact(&mut first).unwrap(); // the request is out: in flight
        assert!(completions.take().is_empty());

        thread.control.send(Control::Panic).ok().unwrap();
        thread.handle.join().unwrap();
        // The call in flight is the event loop's to refuse, once woken.
        // SAFETY: the queue owns the descriptor and outlives this view, which never closes it.
        let watched = ManuallyDrop::new(unsafe { UnixStream::from_raw_fd(completions.fd()) });
        let mut woken = [0u8; 1];
        assert_eq!((&*watched).read(&mut woken).ok(), Some(1));
        let ended = "the mesh thread failed: a test asked the mesh thread to fail";
        assert_eq!(invocations.ended().as_deref(), Some(ended));
        let failure = thread.failure.lock().unwrap().clone();
        assert_eq!(
            failure.as_deref(),
            Some("a test asked the mesh thread to fail")
        );
        let later = invocations.push(call(2, &completions, &address));
        assert_eq!(later.err().as_deref(), Some(ended));
        assert!(
            completions.take().is_empty(),
            "a call refused at once is not also completed"
        );
    }

    #[test]
    fn a_panic_in_a_task_owing_calls_ends_the_mesh_thread_with_its_message() {
        let invocations = Arc::new(Invocations::default());
        let completions = Arc::new(Completions::new().unwrap());
        let thread = started(&invocations, &completions);
        thread.control.send(Control::PanicInTask).ok().unwrap();
        thread.handle.join().unwrap();
        let message = "a test asked a mesh task to fail";
        assert_eq!(thread.failure.lock().unwrap().as_deref(), Some(message));
        let ended = format!("the mesh thread failed: {message}");
        assert_eq!(invocations.ended(), Some(ended.clone()));
        let later = invocations.push(call(1, &completions, "127.0.0.1:1"));
        assert_eq!(later.err(), Some(ended));
    }

    #[test]
    fn calls_still_queued_when_the_thread_ends_are_refused_with_the_reason() {
        let completions = Arc::new(Completions::new().unwrap());
        let invocations = Invocations::default();
        invocations
            .push(call(1, &completions, "127.0.0.1:1"))
            .unwrap();
        invocations
            .push(call(2, &completions, "127.0.0.1:1"))
            .unwrap();
        invocations.end("the mesh is stopped");
        let done: Vec<_> = completions
            .take()
            .into_iter()
            .map(|c| (c.token, c.outcome))
            .collect();
        let refused = Err((Refusal::Unavailable, "the mesh is stopped".to_string()));
        assert_eq!(done, vec![(1, refused.clone()), (2, refused)]);
        assert!(invocations.take().is_empty());
    }

    #[test]
    fn a_stopped_mesh_thread_refuses_later_calls_and_reports_no_failure() {
        let invocations = Arc::new(Invocations::default());
        let completions = Arc::new(Completions::new().unwrap());
        let thread = started(&invocations, &completions);
        thread.control.send(Control::Stop).ok().unwrap();
        thread.handle.join().unwrap();
        assert_eq!(*thread.failure.lock().unwrap(), None);
        assert_eq!(invocations.ended().as_deref(), Some("the mesh is stopped"));
        let later = invocations.push(call(1, &completions, "127.0.0.1:1"));
        assert_eq!(later.err().as_deref(), Some("the mesh is stopped"));
    }
}
