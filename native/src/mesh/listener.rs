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
use super::thread::spawn_owing;
use super::upstream::{Pending, Upstream, REQUEST_HEAD_LEN};
use crate::codec::{take_frame, Codec, FrameHead, FrameKind, Refusal};
use crate::frame::{regrow, room_to_grow};

/// What every connection of one listener shares.
pub struct Listener {
    pub index: usize,
    pub max_frame_size: usize,
    pub max_buffered: usize,
    /// See `ListenerConfig::idle_timeout_ms`; None: never.
    pub idle_timeout: Option<Duration>,
    /// See `ListenerConfig::max_connections`; 0: no limit.
    pub max_connections: usize,
    /// See `ListenerConfig::max_incomplete_bytes`.
    pub max_incomplete_bytes: usize,
    /// What the client connections hold of frames not yet whole, together (each its
    /// `ReadBuffer`'s part).
    pub incomplete_bytes: Cell<usize>,
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

    /// `max_connections` client connections are open.
    fn is_full(&self) -> bool {
        self.max_connections > 0 && self.stats.open_connections.get() >= self.max_connections as u64
    }
}

pub async fn accept<C: Codec>(socket: TcpListener, listener: Rc<Listener>) {
    while listener.accepting.get() {
        tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok((stream, _)) if listener.is_full() => {
                    // Closed at once, unread: the client tries another instance.
                    listener.stats.max_connections_closed.incr();
                    drop(stream);
                }
                Ok((stream, _)) => {
                    listener.stats.connections.incr();
                    // Counted open here, not when its task first runs: a burst of
                    // connections accepted in one go all count against the limit.
                    let open = OpenConnection::new(listener.clone());
                    spawn_local(serve_client::<C>(stream, open));
                }
                // Out of descriptors and the like: wait rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            _ = listener.stop_accepting.notified() => {}
        }
    }
    // The socket is dropped here: new connections are refused, and go to another instance.
}

/// A client connection counted in its listener's `open_connections` from its accept until
/// it ends, however it ends.
struct OpenConnection(Rc<Listener>);

impl OpenConnection {
    fn new(listener: Rc<Listener>) -> Self {
        listener.stats.open_connections.incr();
        OpenConnection(listener)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.stats.open_connections.decr();
    }
}

/// A client connection's read buffer, and its part in the listener's `incomplete_bytes`:
/// what the buffer held of a frame not yet whole when last counted, given back when the
/// connection ends, however it ends.
struct ReadBuffer<'a> {
    bytes: BytesMut,
    listener: &'a Listener,
    counted: usize,
}

impl<'a> ReadBuffer<'a> {
    fn new(listener: &'a Listener) -> Self {
        ReadBuffer {
            bytes: BytesMut::with_capacity(READ_ROOM),
            listener,
            counted: 0,
        }
    }

    /// Counts what the buffer holds now (its whole frames taken); the listener's total.
    fn count(&mut self) -> usize {
        let total = self.listener.incomplete_bytes.get() - self.counted + self.bytes.len();
        self.listener.incomplete_bytes.set(total);
        self.counted = self.bytes.len();
        total
    }
}

impl Drop for ReadBuffer<'_> {
    fn drop(&mut self) {
        let total = &self.listener.incomplete_bytes;
        total.set(total.get() - self.counted);
    }
}

/// Room for the next read in `buffer`, which holds no whole frame. The part of a frame
/// larger than `READ_ROOM` grows at least twofold as it arrives but never past the frame's
/// size: what it takes stays within twice what came of it (counted against
/// `max_incomplete_bytes`), and a frame's declared size alone reserves nothing. A buffer
/// left larger by a past frame is given back for a small one, so an idle connection does
/// not keep it.
fn make_room<C: Codec>(buffer: &mut BytesMut) {
    // Whatever is at the front has passed `take_frame`: no error, and within the limit.
    let frame = match C::frame_len(buffer) {
        Ok(Some(n)) => n as usize,
        _ => 0, // its length not yet known
    };
    if frame > READ_ROOM {
        let len = buffer.len();
        let spare = buffer.capacity() - len;
        if spare < MIN_ROOM.min(frame - len) || buffer.capacity() > frame + READ_ROOM {
            let needed = (len + READ_ROOM).min(frame);
            regrow(buffer, room_to_grow(len, needed, Some(frame)));
        }
        return;
    }
    if buffer.capacity() < frame.max(MIN_ROOM) {
        buffer.reserve(READ_ROOM); // may take back a past frame's whole allocation
    }
    if buffer.capacity() > MAX_SMALL_BUFFER {
        regrow(buffer, READ_ROOM);
    }
}

/// A client connection's read buffer when it holds no large frame; below `MIN_ROOM` of
/// capacity it is given `READ_ROOM` more, and above `MAX_SMALL_BUFFER` it is given back.
const READ_ROOM: usize = 16 * 1024;
const MIN_ROOM: usize = 4096;
const MAX_SMALL_BUFFER: usize = 64 * 1024;

async fn serve_client<C: Codec>(stream: TcpStream, open: OpenConnection) {
    let listener: &Listener = &open.0;
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let outbox = Rc::new(Outbox::new(listener.max_buffered));
    let mut writing = spawn_local({
        let outbox = outbox.clone();
        async move { outbox.drain(writer).await }
    });
    let mut input = ReadBuffer::new(listener);
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
            read = reader.read_buf(&mut input.bytes) => match read {
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
            let frame = match take_frame::<C>(&mut input.bytes, listener.max_frame_size as u64) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => {
                    listener.stats.bad_frames.incr();
                    break 'reading;
                }
            };
            let handled = if draining {
                refuse_while_draining::<C>(&frame, listener, &outbox)
            } else {
                on_frame::<C>(frame, listener, &outbox).await
            };
            if !handled {
                listener.stats.bad_frames.incr();
                break 'reading;
            }
        }
        // What is left is part of a frame: a connection holding more than READ_ROOM of one
        // when the listener's partial frames pass their bound is the one that took them past
        // it (each read that does is stopped here), and it is closed; the others finish theirs.
        let total = input.count();
        // A read that ends inside a small frame (TCP cut it) is never closed for this.
        if input.bytes.len() > READ_ROOM && total > listener.max_incomplete_bytes {
            listener.stats.incomplete_closed.incr();
            break 'reading;
        }
        make_room::<C>(&mut input.bytes);
    }
    drop(input); // its memory and its count go now, not after the answers
    if answer_and_close {
        outbox.settled().await;
    }
    if outbox.is_closed() {
        // Overflowed or failed: what is queued will never be read.
        writing.abort();
    } else {
        // Answers already queued still go out before the socket is shut, and the connection
        // counts as open until they are written (a drain waits for that), within a bound: a
        // client that stopped reading would keep the socket, its buffers and its place among
        // `max_connections` for good.
        outbox.close();
        if tokio::time::timeout(CLOSE_LINGER, &mut writing)
            .await
            .is_err()
        {
            writing.abort();
            listener.stats.unread_closed.incr();
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
}

/// Checks per idle period (see `serve_client`).
const IDLE_CHECKS: u32 = 4;

/// How long a draining connection, its answers written, waits for the client to close.
const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// How long what is queued for a connection that ends (client or upstream) may take to be
/// written before its writer is given up.
#[cfg(not(test))]
pub(super) const CLOSE_LINGER: Duration = Duration::from_secs(5);
#[cfg(test)]
pub(super) const CLOSE_LINGER: Duration = Duration::from_millis(300);

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
    let timeout = C::request_timeout(&frame).unwrap_or(route.timeout);
    let (retries, stats) = (route.retries, route.stats.clone());
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
                if reply.as_ref().is_some_and(ReplyTo::given_up) {
                    // its caller left while it waited for the connection: not sent at all
                    sending.stats.count(Outcome::Cancelled);
                    cluster.stats.requests.count(Outcome::Cancelled);
                    return Ok(());
                }
                if !cluster.admits() {
                    // only after a wait for the connection: others may have gone out meanwhile
                    return Err(too_many_in_flight(cluster, &sending));
                }
                if upstream.backed_up(frame.len()) {
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
                // Cannot fail: the connection is open and `backed_up` left room for it.
                let oneway = pending.is_none();
                upstream.send::<C>(frame, pending);
                if oneway {
                    sending.stats.count(Outcome::Sent);
                    cluster.stats.requests.count(Outcome::Sent);
                }
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
        spawn_owing(dial::<C>(cluster.clone(), host, deadline.is_some()));
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;

    use tokio::io::AsyncWriteExt;
    use tokio::task::LocalSet;

    use super::*;
    use crate::bolt::{self, Bolt};
    use crate::mesh::config::tests::config;
    use crate::mesh::config::Protocol;

    /// A Bolt listener routing everything to a cluster whose one host refuses connections.
    fn listener(
        max_connections: usize,
        max_frame_size: usize,
        max_incomplete: usize,
    ) -> Rc<Listener> {
        let config = config(Protocol::Bolt, vec![("up".into(), 1)], None);
        let routing = Routing::build(&config, None, &mut HashMap::new());
        Rc::new(Listener {
            index: 0,
            max_frame_size,
            max_buffered: 1 << 20,
            idle_timeout: None,
            max_connections,
            max_incomplete_bytes: max_incomplete,
            incomplete_bytes: Cell::new(0),
            routing: Rc::new(RefCell::new(Rc::new(routing))),
            stats: Arc::default(),
            accepting: Cell::new(true),
            stop_accepting: Notify::new(),
        })
    }

    async fn serve(listener: &Rc<Listener>) -> SocketAddr {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        spawn_local(accept::<Bolt>(socket, listener.clone()));
        address
    }

    async fn until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The next frame the listener sends `client`; None if it closes first.
    async fn answer(client: &mut TcpStream) -> Option<BytesMut> {
        let mut buffer = BytesMut::new();
        loop {
            if let Some(frame) = take_frame::<Bolt>(&mut buffer, u64::MAX).unwrap() {
                return Some(frame);
            }
            let read = tokio::time::timeout(Duration::from_secs(5), client.read_buf(&mut buffer));
            match read.await.expect("an answer or a close within 5 s") {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// A Bolt request `len` bytes long.
    fn request_of(len: usize) -> Vec<u8> {
        let header = [("service", "com.example.Echo:1.0")];
        let encode = |content: &[u8]| bolt::encode_request(1, 1, 3000, "", &header, content, false);
        let head = encode(&[]).unwrap().len();
        encode(&vec![7; len - head]).unwrap()
    }

    async fn heartbeat_answered(client: &mut TcpStream) -> bool {
        client.write_all(&Bolt::heartbeat_request(7)).await.unwrap();
        let Some(frame) = answer(client).await else {
            return false;
        };
        Bolt::head(&frame).unwrap().kind == FrameKind::HeartbeatResponse
    }

    #[tokio::test]
    async fn a_connection_past_max_connections_is_closed_at_once() {
        LocalSet::new()
            .run_until(async {
                let listener = listener(2, 1024, 1 << 20);
                let address = serve(&listener).await;
                let mut first = TcpStream::connect(address).await.unwrap();
                let mut second = TcpStream::connect(address).await.unwrap();
                let mut third = TcpStream::connect(address).await.unwrap();
                until("the third refused", || {
                    listener.stats.max_connections_closed.get() == 1
                })
                .await;
                assert!(answer(&mut third).await.is_none(), "the third is closed");
                assert!(
                    heartbeat_answered(&mut first).await && heartbeat_answered(&mut second).await
                );
                // A place given up is taken again.
                drop(first);
                until("the first closed", || {
                    listener.stats.open_connections.get() == 1
                })
                .await;
                let mut fourth = TcpStream::connect(address).await.unwrap();
                assert!(heartbeat_answered(&mut fourth).await);
                assert!(heartbeat_answered(&mut second).await);
                assert_eq!(listener.stats.max_connections_closed.get(), 1);
                assert_eq!(listener.stats.connections.get(), 3);
            })
            .await;
    }

    #[tokio::test]
    async fn a_connection_closed_idle_whose_client_reads_nothing_ends_after_the_linger() {
        LocalSet::new()
            .run_until(async {
                let mut config = listener(0, 1024, 1 << 20);
                let settings = Rc::get_mut(&mut config).unwrap();
                settings.idle_timeout = Some(Duration::from_millis(100));
                settings.max_buffered = 64 << 20; // the answers stay under it: no overflow
                let address = serve(&config).await;
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.set_recv_buffer_size(4096).unwrap();
                let mut client = socket.connect(address).await.unwrap();
                // Heartbeats the listener answers itself, never read: its writes fill the
                // socket's buffers and wait there.
                let heartbeats = Bolt::heartbeat_request(7).repeat(200_000);
                client.write_all(&heartbeats).await.unwrap();
                until("closed for being idle", || {
                    config.stats.idle_closed.get() == 1
                })
                .await;
                until("its writer given up", || {
                    config.stats.unread_closed.get() == 1
                })
                .await;
                until("no longer open", || {
                    config.stats.open_connections.get() == 0
                })
                .await;
            })
            .await;
    }

    #[tokio::test]
    async fn the_connection_that_takes_partial_frames_past_their_bound_is_closed() {
        LocalSet::new()
            .run_until(async {
                const KIB: usize = 1024;
                let listener = listener(0, 512 * KIB, 1024 * KIB);
                let address = serve(&listener).await;
                let frame = request_of(500 * KIB);
                let (sent, rest) = frame.split_at(400 * KIB);
                let mut clients = Vec::new();
                for held in [400 * KIB, 800 * KIB] {
                    let mut client = TcpStream::connect(address).await.unwrap();
                    client.write_all(sent).await.unwrap();
                    until("the part counted", || {
                        listener.incomplete_bytes.get() == held
                    })
                    .await;
                    clients.push(client);
                }
                let mut third = TcpStream::connect(address).await.unwrap();
                let _ = third.write_all(sent).await; // cut off on the way, perhaps
                until("the third closed", || {
                    listener.stats.incomplete_closed.get() == 1
                })
                .await;
                assert!(answer(&mut third).await.is_none(), "the third is closed");
                until("its part given back", || {
                    listener.incomplete_bytes.get() == 800 * KIB
                })
                .await;
                for client in &mut clients {
                    client.write_all(rest).await.unwrap();
                    let answered = answer(client).await.expect("the whole frame is answered");
                    assert_eq!(Bolt::head(&answered).unwrap().kind, FrameKind::Response);
                }
                assert_eq!(listener.incomplete_bytes.get(), 0);
                assert_eq!(listener.stats.incomplete_closed.get(), 1);
                assert_eq!(listener.stats.bad_frames.get(), 0);
                drop(clients);
                until("all closed", || listener.stats.open_connections.get() == 0).await;
                assert_eq!(listener.incomplete_bytes.get(), 0);
            })
            .await;
    }

    /// Reads `data` into `buffer` in pieces of `piece` bytes, as `serve_client` does (room
    /// made after each read); the largest capacity the buffer had.
    async fn read_in_pieces(buffer: &mut BytesMut, data: &[u8], piece: usize) -> usize {
        let mut largest = buffer.capacity();
        let mut at = 0;
        while at < data.len() {
            let end = data.len().min(at + piece);
            let mut source = &data[at..end];
            at += source.read_buf(buffer).await.unwrap();
            largest = largest.max(buffer.capacity());
            if take_frame::<Bolt>(buffer, u64::MAX).unwrap().is_some() {
                break;
            }
            make_room::<Bolt>(buffer);
            // never more than twice what came of the frame (or a read's room more)
            let len = buffer.len();
            assert!(buffer.capacity() <= (2 * len).max(len + READ_ROOM).max(READ_ROOM));
        }
        largest
    }

    #[test]
    fn a_frame_declared_large_reserves_nothing_until_it_comes() {
        let frame = request_of(16 * 1024 * 1024);
        let mut buffer = BytesMut::from(&frame[..64]);
        make_room::<Bolt>(&mut buffer);
        assert!(buffer.capacity() <= 64 + READ_ROOM, "{}", buffer.capacity());
    }

    #[tokio::test]
    async fn a_large_partial_frame_takes_no_more_room_than_the_frame() {
        let frame_len = 3 * 1024 * 1024 + 5;
        let frame = request_of(frame_len);
        let mut buffer = BytesMut::with_capacity(READ_ROOM);
        // a read into a full buffer would double it: here it never exceeds the frame
        let largest = read_in_pieces(&mut buffer, &frame[..frame_len - 1], 70_000).await;
        assert_eq!(largest, frame_len);
        assert_eq!(buffer.len(), frame_len - 1);
        // the frame completes; then a small one does not keep the large allocation
        let mut last = &frame[frame_len - 1..];
        last.read_buf(&mut buffer).await.unwrap();
        assert_eq!(
            take_frame::<Bolt>(&mut buffer, u64::MAX)
                .unwrap()
                .unwrap()
                .len(),
            frame_len
        );
        make_room::<Bolt>(&mut buffer);
        assert!(
            buffer.capacity() <= MAX_SMALL_BUFFER,
            "{}",
            buffer.capacity()
        );
        let small = Bolt::heartbeat_request(3);
        read_in_pieces(&mut buffer, &small, 5).await;
        assert!(
            buffer.capacity() <= MAX_SMALL_BUFFER,
            "{}",
            buffer.capacity()
        );
    }
}
