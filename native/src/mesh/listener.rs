//! A mesh listener: accepts clients of one protocol, answers their heartbeats, and
//! sends each request on by route, cluster and host, or refuses it in the protocol's
//! own words.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::spawn_local;

use super::cluster::Cluster;
use super::outbox::Outbox;
use super::reply::ReplyTo;
use super::routing::{Route, Routing};
use super::stats::{ListenerStats, Outcome, RouteStats};
use super::upstream::{Pending, Upstream, REQUEST_HEAD_LEN};
use crate::codec::{take_frame, Codec, FrameHead, FrameKind, Refusal};

/// What every connection of one listener shares.
pub struct Listener {
    pub index: usize,
    pub max_frame_size: usize,
    pub max_buffered: usize,
    /// See `ListenerConfig::idle_timeout_ms`; None: never.
    pub idle_timeout: Option<Duration>,
    pub routing: Rc<RefCell<Rc<Routing>>>,
    pub stats: Arc<ListenerStats>,
    /// Cleared when the mesh drains: the socket is closed, and each client connection
    /// reads no more requests, is told so when its protocol can, and closes once answered.
    pub accepting: Cell<bool>,
    pub stop_accepting: Notify,
}

impl Listener {
    pub fn close(&self) {
        self.accepting.set(false);
        self.stop_accepting.notify_waiters();
    }
}

pub async fn accept<C: Codec>(socket: TcpListener, listener: Rc<Listener>) {
    while listener.accepting.get() {
        tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok((stream, _)) => {
                    listener.stats.connections.incr();
                    spawn_local(serve_client::<C>(stream, listener.clone()));
                }
                // Out of descriptors and the like: wait rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            _ = listener.stop_accepting.notified() => {}
        }
    }
    // The socket is dropped here: new connections are refused, and go to another instance.
}

async fn serve_client<C: Codec>(stream: TcpStream, listener: Rc<Listener>) {
    let _ = stream.set_nodelay(true);
    listener.stats.open_connections.incr();
    let (mut reader, writer) = stream.into_split();
    let outbox = Rc::new(Outbox::new(listener.max_buffered));
    let writing = spawn_local({
        let outbox = outbox.clone();
        async move { outbox.drain(writer).await }
    });
    let mut buffer = BytesMut::with_capacity(16 * 1024);
    // The client shut its side, or the mesh drains: what was asked is still answered.
    let mut answer_and_close = false;
    // The mesh drains: new requests are refused, and the connection closes once answered.
    let mut draining = false;
    // Registered once for the connection, not at every read (a registration takes a lock).
    let drain = listener.stop_accepting.notified();
    tokio::pin!(drain);
    drain.as_mut().enable();
    // The idle check wakes a few times per idle period rather than resetting a timer at
    // every read: a connection silent (and owed nothing) through IDLE_CHECKS checks in a
    // row has been idle at least the period, at most a check longer.
    let idle_check = listener.idle_timeout.map(|idle| idle / IDLE_CHECKS);
    let idle_timer = tokio::time::sleep(idle_check.unwrap_or(Duration::MAX / 4));
    tokio::pin!(idle_timer);
    let (mut heard, mut silent_checks) = (false, 0);
    'reading: loop {
        if !draining && !listener.accepting.get() {
            draining = true;
            if let Some(notice) = C::closing_notice() {
                outbox.push(&notice);
            }
        }
        tokio::select! {
            read = reader.read_buf(&mut buffer) => match read {
                Ok(0) => {
                    answer_and_close = true;
                    break 'reading;
                }
                Err(_) => break 'reading,
                Ok(_) => heard = true,
            },
            () = &mut idle_timer, if idle_check.is_some() => {
                let check = idle_check.unwrap_or_default();
                idle_timer.as_mut().reset(tokio::time::Instant::now() + check);
                silent_checks = if heard || outbox.owes() { 0 } else { silent_checks + 1 };
                heard = false;
                if silent_checks >= IDLE_CHECKS {
                    listener.stats.idle_closed.incr();
                    // A Dubbo client is told first (the read-only event, as at a drain), so that
                    // it sends nothing more on a connection about to close.
                    if let Some(notice) = C::closing_notice() {
                        outbox.push(&notice);
                    }
                    answer_and_close = true; // the notice goes out before the socket closes
                    break 'reading;
                }
                continue 'reading;
            }
            _ = outbox.closed() => break 'reading,
            _ = &mut drain, if !draining => continue 'reading,
            _ = outbox.settled(), if draining => {
                answer_and_close = true;
                break 'reading;
            }
        }
        loop {
            let frame = match take_frame::<C>(&mut buffer, listener.max_frame_size as u64) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => {
                    listener.stats.bad_frames.incr();
                    break 'reading;
                }
            };
            let handled = if draining {
                refuse_while_draining::<C>(&frame, &listener, &outbox)
            } else {
                on_frame::<C>(frame, &listener, &outbox).await
            };
            if !handled {
                listener.stats.bad_frames.incr();
                break 'reading;
            }
        }
        if buffer.capacity() < 4096 {
            buffer.reserve(16 * 1024);
        }
    }
    if answer_and_close {
        outbox.settled().await;
    }
    if outbox.is_closed() {
        // Overflowed or failed: what is queued will never be read.
        writing.abort();
    } else {
        // Answers already queued still go out before the socket is shut, and the connection
        // counts as open until they are written (a drain waits for that).
        outbox.close();
        if answer_and_close {
            let _ = writing.await;
        }
        if draining {
            // What the client sent meanwhile is read and dropped until it closes too: a
            // socket closed with unread input is reset, and the reset can take the last
            // answers with it.
            let mut sink = BytesMut::with_capacity(16 * 1024);
            let until_closed = async {
                loop {
                    sink.clear();
                    if !matches!(reader.read_buf(&mut sink).await, Ok(n) if n > 0) {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_LINGER, until_closed).await;
        }
    }
    listener.stats.open_connections.decr();
}

/// Checks per idle period (see `serve_client`).
const IDLE_CHECKS: u32 = 4;

/// How long a draining connection, its answers written, waits for the client to close.
const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// While the mesh drains: a request gets the protocol's "overloaded" answer (a client tries
/// another instance), a heartbeat its answer; false if the frame is malformed.
fn refuse_while_draining<C: Codec>(frame: &[u8], listener: &Listener, client: &Outbox) -> bool {
    let Ok(head) = C::head(frame) else {
        return false;
    };
    match head.kind {
        FrameKind::HeartbeatRequest => answer_heartbeat::<C>(frame, &head, listener, client),
        FrameKind::Request => {
            refuse::<C>(client, frame, &head, Refusal::Overloaded, "shutting down")
        }
        _ => {}
    }
    true
}

/// Handles one whole frame from a client; false if it was malformed.
async fn on_frame<C: Codec>(frame: BytesMut, listener: &Listener, client: &Rc<Outbox>) -> bool {
    let Ok(head) = C::head(&frame) else {
        return false;
    };
    match head.kind {
        FrameKind::HeartbeatRequest => answer_heartbeat::<C>(&frame, &head, listener, client),
        FrameKind::Request | FrameKind::Oneway => {
            forward::<C>(frame, head, listener, client).await;
        }
        // Nothing was asked of this client: its answers have nowhere to go; and a client
        // saying it takes no more requests changes nothing here (none are sent to it).
        FrameKind::Response
        | FrameKind::HeartbeatResponse
        | FrameKind::Closing
        | FrameKind::Notice => {}
    }
    true
}

fn answer_heartbeat<C: Codec>(
    frame: &[u8],
    head: &FrameHead,
    listener: &Listener,
    client: &Outbox,
) {
    listener.stats.heartbeats.incr();
    client.push(&C::heartbeat_reply(frame, head));
}

fn refuse<C: Codec>(
    client: &Outbox,
    frame: &[u8],
    head: &FrameHead,
    refusal: Refusal,
    message: &str,
) {
    if head.kind == FrameKind::Request {
        client.push(&C::refusal(frame, head, refusal, message));
    }
}

async fn forward<C: Codec>(
    mut frame: BytesMut,
    head: FrameHead,
    listener: &Listener,
    client: &Rc<Outbox>,
) {
    let routing = listener.routing.borrow().clone();
    let table = &routing.listeners[listener.index];
    let index = match C::request_meta(&frame, table.table.needs_headers()) {
        Ok(meta) => match table.table.lookup(&meta) {
            Some(index) => index,
            None => {
                listener.stats.no_route.incr();
                let message = format!(
                    "no route for service {:?} version {:?}",
                    meta.service, meta.version
                );
                refuse::<C>(client, &frame, &head, Refusal::NoService, &message);
                return;
            }
        },
        // A body this proxy cannot read (a Dubbo call in another serialization than
        // Hessian2) still goes where a route that asks nothing of requests sends them.
        Err(e) => match table.table.catch_all() {
            Some(index) => index,
            None => {
                refuse::<C>(client, &frame, &head, Refusal::BadRequest, &e.to_string());
                return;
            }
        },
    };
    let route: &Route = &table.routes[index];
    if route.bucket.as_ref().is_some_and(|bucket| !bucket.take()) {
        route.stats.count(Outcome::RateLimited);
        refuse::<C>(client, &frame, &head, Refusal::Overloaded, "rate limited");
        return;
    }
    let cluster = routing.clusters[route.pick_cluster()].clone();
    let reply = (head.kind == FrameKind::Request).then(|| ReplyTo::Client(client.owe()));
    let (timeout, retries, stats) = (route.timeout, route.retries, route.stats.clone());
    let client = client.owe(); // until a refusal is queued too
    let mut sent = Box::pin(async move {
        let sending = Sending {
            timeout,
            retries,
            stats: &stats,
        };
        if let Err((refusal, why)) = dispatch::<C>(&cluster, &mut frame, head, reply, sending).await
        {
            refuse::<C>(&client, &frame, &head, refusal, &why);
        }
    });
    // Most requests go out at once, on a connection already open. One that has to wait for
    // a connection is finished by a task of its own, so that the requests behind it on
    // this client's connection are not held up by a host slow to accept; they may overtake
    // it, which Bolt and Dubbo allow (answers are matched by request id). While it waits it
    // keeps its piece of the client's read buffer: at most `max_pending` of them per cluster.
    if poll_fn(|cx| Poll::Ready(sent.as_mut().poll(cx)))
        .await
        .is_pending()
    {
        spawn_local(sent);
    }
}

/// How one request is sent: its deadline, connection retries and statistics.
pub struct Sending<'a> {
    pub timeout: Duration,
    pub retries: u32,
    pub stats: &'a Arc<RouteStats>,
}

/// Sends request `frame` to a host of `cluster` (breaker, balancing, connect retries),
/// its answer to go to `reply` (`None`: a oneway request). On refusal, says why; the
/// caller answers in its own terms.
pub async fn dispatch<C: Codec>(
    cluster: &Rc<Cluster>,
    frame: &mut [u8],
    head: FrameHead,
    reply: Option<ReplyTo>,
    sending: Sending<'_>,
) -> Result<(), (Refusal, String)> {
    if !cluster.admits() {
        return Err(too_many_in_flight(cluster, &sending));
    }
    // The route's timeout counts from here: waiting for a connection is part of it.
    let started = Instant::now();
    let deadline = started + sending.timeout;
    let mut reply = reply;
    let mut tried = Vec::new();
    let mut last = String::new(); // why the last host tried could not take it
    let why = loop {
        let Some(host) = cluster.pick(&tried) else {
            let name = &cluster.config.name;
            break if last.is_empty() {
                format!("no host of cluster {name:?} could be reached")
            } else {
                format!("no host of cluster {name:?} could be reached; the last: {last}")
            };
        };
        match connection::<C>(cluster, host, Some(deadline)).await {
            Ok(upstream) => {
                if !cluster.admits() {
                    // only after a wait for the connection: others may have gone out meanwhile
                    return Err(too_many_in_flight(cluster, &sending));
                }
                if upstream.backed_up() {
                    return Err(refused_as_overloaded(
                        cluster,
                        &sending,
                        "the upstream is not reading what it was sent",
                    ));
                }
                let pending = reply.take().map(|reply| {
                    let mut request_head = [0u8; REQUEST_HEAD_LEN];
                    let n = frame.len().min(REQUEST_HEAD_LEN);
                    request_head[..n].copy_from_slice(&frame[..n]);
                    Pending {
                        reply,
                        client_id: head.request_id,
                        head: request_head,
                        deadline,
                        started,
                        route: sending.stats.clone(),
                        cluster: cluster.clone(),
                        host,
                    }
                });
                upstream.send::<C>(frame, pending);
                return Ok(());
            }
            Err(ConnectError::Overloaded) => {
                sending.stats.count(Outcome::BreakerRefused);
                cluster.stats.requests.count(Outcome::BreakerRefused);
                cluster.stats.breaker_refused.incr();
                return Err((
                    Refusal::Overloaded,
                    "too many requests waiting for a connection".into(),
                ));
            }
            Err(ConnectError::TimedOut) => {
                sending.stats.count(Outcome::Timeout);
                cluster.stats.requests.count(Outcome::Timeout);
                let address = &cluster.hosts[host].address;
                return Err((
                    Refusal::Timeout,
                    format!("no connection to {address} within {:?}", sending.timeout),
                ));
            }
            Err(ConnectError::Draining) => {
                tried.push(host);
                last = format!("{} is shutting down", cluster.hosts[host].address);
                if tried.len() > sending.retries as usize {
                    break last;
                }
            }
            Err(ConnectError::Failed(why)) => {
                tried.push(host);
                last = why;
                if tried.len() > sending.retries as usize {
                    break last;
                }
            }
        }
    };
    sending.stats.count(Outcome::Unavailable);
    cluster.stats.requests.count(Outcome::Unavailable);
    Err((Refusal::Unavailable, why))
}

/// Counts a request the breaker refuses for `max_requests`, and says why.
fn too_many_in_flight(cluster: &Cluster, sending: &Sending<'_>) -> (Refusal, String) {
    refused_as_overloaded(cluster, sending, "too many requests in flight")
}

fn refused_as_overloaded(cluster: &Cluster, sending: &Sending<'_>, why: &str) -> (Refusal, String) {
    sending.stats.count(Outcome::BreakerRefused);
    cluster.stats.requests.count(Outcome::BreakerRefused);
    cluster.stats.breaker_refused.incr();
    (Refusal::Overloaded, why.into())
}

pub enum ConnectError {
    Overloaded,
    /// The host's connection says it takes no new requests.
    Draining,
    /// The attempt this request waited for failed; why, for the answer.
    Failed(String),
    /// The request's deadline passed before a connection was made.
    TimedOut,
}

/// The host's connection if it is open: to use, or `Draining` when it said it is
/// shutting down (see `Upstream::on_closing`).
fn open_connection(cluster: &Cluster, host: usize) -> Option<Result<Rc<Upstream>, ConnectError>> {
    let connection = cluster.hosts[host].connection.borrow();
    let upstream = connection.as_ref().filter(|u| u.is_open())?;
    Some(if upstream.takes_requests() {
        Ok(upstream.clone())
    } else {
        Err(ConnectError::Draining)
    })
}

/// A request counted in the cluster's `pending` while it waits for a connection.
struct Waiting<'a>(&'a Cluster);

impl<'a> Waiting<'a> {
    fn new(cluster: &'a Cluster) -> Self {
        cluster.pending.set(cluster.pending.get() + 1);
        Waiting(cluster)
    }
}

impl Drop for Waiting<'_> {
    /// Also when the wait is given up at the request's deadline.
    fn drop(&mut self) {
        self.0.pending.set(self.0.pending.get() - 1);
    }
}

/// The host's open connection, made now if there is none. One attempt at a time, shared
/// by every request that needs it: when it fails, they all hear so at once (and may try
/// another host) rather than each dialling again in turn. A request waits until its
/// `deadline`; the attempt goes on without it, for the others.
pub async fn connection<C: Codec>(
    cluster: &Rc<Cluster>,
    host: usize,
    deadline: Option<Instant>,
) -> Result<Rc<Upstream>, ConnectError> {
    if let Some(made) = open_connection(cluster, host) {
        return made;
    }
    if !cluster.admits_pending() {
        return Err(ConnectError::Overloaded);
    }
    let _waiting = Waiting::new(cluster);
    let h = &cluster.hosts[host];
    let (told, attempt_ended) = tokio::sync::oneshot::channel();
    {
        let mut waiting = h.waiting.borrow_mut();
        waiting.retain(|w| !w.is_closed()); // those that gave up at their deadline
        waiting.push(told);
    }
    if !h.dialing.get() {
        h.dialing.set(true);
        // A health probe's own attempt is not a request's failure (the probe marks the
        // host unhealthy itself): only a request's counts toward ejection.
        spawn_local(dial::<C>(cluster.clone(), host, deadline.is_some()));
    }
    let ended = match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline.into(), attempt_ended).await {
            Ok(ended) => ended,
            Err(_) => return Err(ConnectError::TimedOut),
        },
        None => attempt_ended.await,
    };
    if ended.is_err() {
        return Err(ConnectError::Failed("the cluster was replaced".into()));
    }
    open_connection(cluster, host).unwrap_or_else(|| {
        let why = h.last_failure.borrow();
        Err(ConnectError::Failed(if why.is_empty() {
            format!("the connection to {} closed as it was made", h.address)
        } else {
            why.clone()
        }))
    })
}

/// One connection attempt to `host`: its outcome is kept on the host (the connection, or
/// why not, counted once against the host when a request made it) and announced to the
/// requests waiting for it.
async fn dial<C: Codec>(cluster: Rc<Cluster>, host: usize, for_request: bool) {
    let h = &cluster.hosts[host];
    let timeout = Duration::from_millis(cluster.config.connect_timeout_ms);
    match Upstream::connect::<C>(&h.address, timeout, (Rc::downgrade(&cluster), host)).await {
        Ok(upstream) => {
            *h.connection.borrow_mut() = Some(upstream);
            h.last_failure.borrow_mut().clear();
        }
        Err(e) => {
            *h.last_failure.borrow_mut() = format!("connecting to {}: {e}", h.address);
            if for_request {
                cluster.failed(host);
                cluster.stats.connect_failures.incr();
            }
        }
    }
    h.dialing.set(false);
    for told in h.waiting.take() {
        let _ = told.send(()); // in the order they came: the first to wait goes out first
    }
}
