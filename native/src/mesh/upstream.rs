//! One multiplexed connection to an upstream host: requests from any client go out on
//! it under ids of its own, and each response is mapped back to the client and id it
//! came with. The pending-request map lives here, on the proxy thread.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::cluster::Cluster;
use super::listener::CLOSE_LINGER;
use super::outbox::Outbox;
use super::reply::ReplyTo;
use super::stats::{ClusterStats, Outcome, RouteStats};
use super::thread::spawn_owing;
use crate::codec::{take_frame, BadFrame, Codec, FrameKind, Refusal};

/// Enough of a request's first bytes to build the protocol's refusal for it later.
pub const REQUEST_HEAD_LEN: usize = 24;

/// Our ids are sequential: a multiply spreads them over the table (SipHash would cost more
/// than the rest of the lookup).
#[derive(Default, Clone, Copy)]
pub struct IdHash(u64);

impl std::hash::Hasher for IdHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type PendingMap = HashMap<u64, Pending, std::hash::BuildHasherDefault<IdHash>>;

/// A request sent upstream and not answered yet.
pub struct Pending {
    pub reply: ReplyTo,
    pub client_id: u64,
    pub head: [u8; REQUEST_HEAD_LEN],
    pub deadline: Instant,
    pub started: Instant,
    pub route: std::sync::Arc<RouteStats>,
    pub cluster: Rc<Cluster>,
    pub host: usize,
}

impl Pending {
    /// Counts how the request ended, on its route and on its cluster.
    fn count(&self, outcome: Outcome) {
        self.route.count(outcome);
        self.cluster.stats.requests.count(outcome);
    }
}

pub struct Upstream {
    pub outbox: Rc<Outbox>,
    /// The task writing the outbox to the socket: stopped when the connection is given up,
    /// where a peer that stopped reading would keep it (and the socket) waiting forever.
    writer: std::cell::OnceCell<tokio::task::AbortHandle>,
    pending: RefCell<PendingMap>,
    next_id: Cell<u64>,
    /// Wakes the deadline task when a request arrives on an idle connection.
    sent: tokio::sync::Notify,
    /// The id of the heartbeat last answered (active health checks read it).
    heartbeat_answered: Cell<Option<u64>>,
    /// When bytes last came from the upstream (None: never).
    last_read: Cell<Option<Instant>>,
    /// When a heartbeat went out to find whether a silent connection is still alive, and
    /// when the connection is given up if nothing has come back by then.
    probe: Cell<Option<(Instant, Instant)>>,
    /// Set when the upstream said it takes no new requests (it is shutting down).
    closing: Cell<bool>,
    /// The cluster and host it serves (weak: the host owns this connection).
    owner: (Weak<Cluster>, usize),
    stats: std::sync::Arc<ClusterStats>,
    /// Keeps our ids within the protocol's field (Bolt's is 32-bit).
    id_mask: u64,
}

/// Bytes an upstream may leave unread before its connection is dropped.
const UPSTREAM_OUTBOX_LIMIT: usize = 64 * 1024 * 1024;
/// Past this many unread, new requests are refused as overloaded instead of queued: the
/// connection every client shares is not dropped for one that sends faster than the
/// upstream reads (oneway requests, which nothing else limits, say).
const UPSTREAM_BACKLOG_REFUSED: usize = UPSTREAM_OUTBOX_LIMIT / 2;
/// How long a heartbeat sent to a connection that went silent has to be answered.
const SILENCE_PROBE_GRACE: Duration = Duration::from_secs(1);
/// How often pending requests are checked against their deadlines.
const DEADLINE_TICK: Duration = Duration::from_millis(5);
/// Largest response accepted from an upstream.
const MAX_UPSTREAM_FRAME: usize = 64 * 1024 * 1024;

impl Upstream {
    /// Connects to `address` within `timeout` and starts the connection's tasks.
    pub async fn connect<C: Codec>(
        address: &str,
        timeout: Duration,
        owner: (Weak<Cluster>, usize),
    ) -> std::io::Result<Rc<Upstream>> {
        let Some((stats, idle_heartbeat_ms)) = owner
            .0
            .upgrade()
            .map(|c| (c.stats.clone(), c.config.idle_heartbeat_ms))
        else {
            return Err(std::io::Error::other("the cluster was replaced"));
        };
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to {address} took over {timeout:?}"),
                ))
            }
        };
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        let id_mask = C::MAX_REQUEST_ID;
        let upstream = Rc::new(Upstream {
            outbox: Rc::new(Outbox::new(UPSTREAM_OUTBOX_LIMIT)),
            writer: std::cell::OnceCell::new(),
            pending: RefCell::new(PendingMap::default()),
            next_id: Cell::new(1),
            heartbeat_answered: Cell::new(None),
            last_read: Cell::new(None),
            probe: Cell::new(None),
            closing: Cell::new(false),
            owner,
            sent: tokio::sync::Notify::new(),
            stats,
            id_mask,
        });
        let outbox = upstream.outbox.clone();
        let writing = spawn_owing(async move { outbox.drain(writer).await });
        let _ = upstream.writer.set(writing.abort_handle());
        spawn_owing(read_responses::<C>(
            upstream.clone(),
            reader,
            writing,
            PhantomData,
        ));
        let idle_heartbeat =
            (idle_heartbeat_ms > 0).then(|| Duration::from_millis(idle_heartbeat_ms));
        spawn_owing(expire_deadlines::<C>(upstream.clone(), idle_heartbeat));
        Ok(upstream)
    }

    pub fn is_open(&self) -> bool {
        !self.outbox.is_closed()
    }

    /// Whether the upstream has left so much unread that a new request of `len` bytes is
    /// refused: past UPSTREAM_BACKLOG_REFUSED, or when queueing it would overflow the
    /// outbox, which would close the connection every client shares (a frame larger than
    /// the margin left, with a large `max_frame_size`).
    pub fn backed_up(&self, len: usize) -> bool {
        refused_at(self.outbox.backlog(), len)
    }

    /// Open, and not shutting down: new requests may go to it.
    pub fn takes_requests(&self) -> bool {
        self.is_open() && !self.closing.get()
    }

    /// The upstream said it takes no new requests: its host is left out of balancing for
    /// the cluster's `ejection_ms`, and the connection closes once what it was sent is
    /// answered (a Dubbo provider waits for its consumers to go before it stops).
    fn on_closing(&self) {
        self.closing.set(true);
        if let Some(cluster) = self.owner.0.upgrade() {
            cluster.drain(self.owner.1);
        }
        self.close_if_drained();
    }

    fn close_if_drained(&self) {
        if self.closing.get() && self.pending.borrow().is_empty() {
            self.outbox.close();
        }
    }

    /// Sends request `frame` (its id rewritten to one of ours); `pending` is `None` for
    /// a oneway request, which gets no answer.
    pub fn send<C: Codec>(&self, frame: &mut [u8], pending: Option<Pending>) -> bool {
        let id = self.take_id();
        C::set_request_id(frame, id);
        if let Some(pending) = pending {
            pending.cluster.hosts[pending.host]
                .active
                .set(pending.cluster.hosts[pending.host].active.get() + 1);
            pending
                .cluster
                .in_flight
                .set(pending.cluster.in_flight.get() + 1);
            let mut waiting = self.pending.borrow_mut();
            if waiting.is_empty() {
                self.sent.notify_one();
            }
            waiting.insert(id, pending);
        }
        self.outbox.push(frame)
    }

    /// Sends a heartbeat under an id of ours; None if the connection is closed.
    pub fn send_heartbeat<C: Codec>(&self) -> Option<u64> {
        let id = self.take_id();
        self.outbox.push(&C::heartbeat_request(id)).then_some(id)
    }

    /// Whether the heartbeat sent under `id`, or one sent after it, was answered (a late
    /// answer to an earlier one does not count). Ids grow, wrapping within the mask.
    pub fn heartbeat_answered(&self, id: u64) -> bool {
        self.heartbeat_answered.get().is_some_and(|answered| {
            answered_since(answered, id, self.id_mask) && self.issued(answered)
        })
    }

    /// A connection that sent nothing while it was owed answers gets a heartbeat (once at a
    /// time); a slow upstream answers it at once, a dead route or wedged peer does not. It
    /// has SILENCE_PROBE_GRACE, and at least until the last deadline of the requests waiting
    /// now: none of them is failed before its own time by a pause it would have outlived.
    fn probe_silence<C: Codec>(&self) {
        if self.probe.get().is_some() {
            return;
        }
        let sent = Instant::now();
        let last_deadline = self.pending.borrow().values().map(|p| p.deadline).max();
        let until = last_deadline.map_or(sent + SILENCE_PROBE_GRACE, |d| {
            d.max(sent + SILENCE_PROBE_GRACE)
        });
        if self.send_heartbeat::<C>().is_some() {
            self.probe.set(Some((sent, until)));
        }
    }

    /// When the probe under way gives the connection up if nothing came back; None when
    /// none is under way.
    fn probe_deadline(&self) -> Option<Instant> {
        self.probe.get().map(|(_, until)| until)
    }

    /// Settles the probe under way: anything read since it went out clears it; nothing
    /// by its deadline gives the connection up (false then).
    fn check_probe<C: Codec>(&self) -> bool {
        let Some((sent, until)) = self.probe.get() else {
            return true;
        };
        if !self.silent_since(sent) {
            self.probe.set(None);
            return true;
        }
        if Instant::now() < until {
            return true;
        }
        self.give_up::<C>(&format!(
            "the upstream answered nothing, not even a heartbeat, for {:?}: its connection was given up",
            until.duration_since(sent)
        ));
        false
    }

    /// A health check's heartbeat, sent at `sent`, found the connection silent past its
    /// timeout. A connection owed nothing is given up now; one owed answers only at the
    /// last of their deadlines, if still silent then (as `probe_silence` does): a pause
    /// its requests would outlive fails none of them early.
    pub fn silent_at_health_check<C: Codec>(&self, sent: Instant, why: &str) {
        let last_deadline = self.pending.borrow().values().map(|p| p.deadline).max();
        match last_deadline {
            None => self.give_up::<C>(why),
            Some(deadline) => {
                if self.probe.get().is_none() {
                    self.probe.set(Some((sent, deadline)));
                }
            }
        }
    }

    /// Whether nothing at all came from the upstream since `since`.
    pub fn silent_since(&self, since: Instant) -> bool {
        self.last_read.get().is_none_or(|read| read < since)
    }

    /// Gives up a connection that stopped answering (a dropped route, a wedged peer):
    /// what it owes fails at once, and the next request or probe opens a new one.
    /// Without this it would stay until TCP gave up, many minutes later.
    pub fn give_up<C: Codec>(&self, why: &str) {
        self.outbox.close();
        if let Some(writer) = self.writer.get() {
            writer.abort();
        }
        self.fail_all::<C>(Refusal::Unavailable, why);
    }

    /// The next id of ours, skipping any a request still waits under.
    fn take_id(&self) -> u64 {
        let pending = self.pending.borrow();
        let (id, next) = next_free_id(self.next_id.get(), self.id_mask, |id| {
            pending.contains_key(&id)
        });
        self.next_id.set(next);
        id
    }

    fn issued(&self, id: u64) -> bool {
        id < self.next_id.get()
    }

    /// Ends every pending request with `refusal`, as when the connection is lost.
    fn fail_all<C: Codec>(&self, refusal: Refusal, message: &str) {
        let pending: Vec<Pending> = self.pending.borrow_mut().drain().map(|(_, p)| p).collect();
        if let Some(first) = pending.first() {
            first.cluster.failed(first.host);
        }
        for p in pending {
            finish(&p);
            p.count(Outcome::Unavailable);
            refuse::<C>(&p, refusal, message);
        }
    }
}

/// Bookkeeping common to every way a pending request ends.
fn finish(p: &Pending) {
    let host = &p.cluster.hosts[p.host];
    host.active.set(host.active.get().saturating_sub(1));
    p.cluster
        .in_flight
        .set(p.cluster.in_flight.get().saturating_sub(1));
}

fn refuse<C: Codec>(p: &Pending, refusal: Refusal, message: &str) {
    p.reply.refuse::<C>(&p.head, p.client_id, refusal, message);
}

async fn read_responses<C: Codec>(
    upstream: Rc<Upstream>,
    mut reader: tokio::net::tcp::OwnedReadHalf,
    mut writing: tokio::task::JoinHandle<()>,
    _codec: PhantomData<C>,
) {
    let mut buffer = BytesMut::with_capacity(64 * 1024);
    let why = 'reading: loop {
        tokio::select! {
            read = reader.read_buf(&mut buffer) => match read {
                Ok(0) => break 'reading "the upstream closed the connection".to_string(),
                Ok(_) => upstream.last_read.set(Some(Instant::now())),
                Err(e) => break 'reading format!("reading from the upstream failed: {e}"),
            },
            _ = upstream.outbox.closed() => break 'reading "writing to the upstream failed".to_string(),
        }
        loop {
            let mut frame = match take_frame::<C>(&mut buffer, MAX_UPSTREAM_FRAME as u64) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(BadFrame::TooLarge(n)) => {
                    break 'reading format!("the upstream sent a {n}-byte frame")
                }
                Err(BadFrame::Malformed(e)) => {
                    break 'reading format!("the upstream sent a malformed frame: {e}")
                }
            };
            if let Err(why) = on_frame::<C>(&upstream, &mut frame) {
                break 'reading why;
            }
        }
    };
    upstream.outbox.close();
    upstream.fail_all::<C>(Refusal::Unavailable, &why);
    drop(reader);
    // What is queued still goes out (a host a reload dropped closes its outbox so), within a
    // bound: an upstream that stopped reading would keep the writer, the socket and its
    // buffers for good.
    if tokio::time::timeout(CLOSE_LINGER, &mut writing)
        .await
        .is_err()
    {
        writing.abort();
    }
}

fn on_frame<C: Codec>(upstream: &Upstream, frame: &mut [u8]) -> Result<(), String> {
    let head = C::head(frame).map_err(|e| format!("the upstream sent a malformed frame: {e}"))?;
    match head.kind {
        FrameKind::Response => {
            let Some(p) = upstream.pending.borrow_mut().remove(&head.request_id) else {
                if upstream.issued(head.request_id) {
                    return Ok(()); // answered after its deadline: the client already heard
                }
                upstream.stats.unknown_responses.incr();
                return Err(format!(
                    "the upstream answered request id {} that was never sent",
                    head.request_id
                ));
            };
            finish(&p);
            p.cluster.succeeded(p.host);
            p.count(Outcome::Answered);
            let (status, us) = (
                C::response_status(frame),
                p.started.elapsed().as_micros() as u64,
            );
            for stats in [&*p.route, &p.cluster.stats.requests] {
                stats.count_status(status);
                stats.observe_us(us);
            }
            C::set_request_id(frame, p.client_id);
            match C::answer_as_asked(&p.head, frame) {
                Some(rewritten) => p.reply.answer(&rewritten),
                None => p.reply.answer(frame),
            }
            upstream.close_if_drained();
        }
        FrameKind::HeartbeatRequest => {
            upstream.outbox.push(&C::heartbeat_reply(frame, &head));
        }
        FrameKind::HeartbeatResponse => {
            // Answers to two heartbeats (an idle one, a probe) may come back in either order.
            let kept = upstream.heartbeat_answered.get();
            let newest = newest_answered(kept, head.request_id, upstream.id_mask);
            upstream.heartbeat_answered.set(Some(newest));
        }
        FrameKind::Closing => upstream.on_closing(),
        FrameKind::Notice | FrameKind::Oneway => {}
        // A provider calling its consumer back (a Dubbo callback argument, a Bolt server's
        // invoke on the connection): the mesh serves no calls from upstreams. Refusing just
        // this one keeps the connection every client shares, and their requests on it.
        FrameKind::Request => {
            let refusal = C::refusal(frame, &head, Refusal::NoService, "the mesh takes no calls");
            upstream.outbox.push(&refusal);
        }
    }
    Ok(())
}

/// Whether a request of `len` bytes is refused with `backlog` bytes unread (see
/// `Upstream::backed_up`); an empty outbox takes any frame, as `Outbox::push` does.
fn refused_at(backlog: usize, len: usize) -> bool {
    backlog >= UPSTREAM_BACKLOG_REFUSED || (backlog > 0 && backlog + len > UPSTREAM_OUTBOX_LIMIT)
}

/// Our next request id and the counter after it. Ids wrap within `mask` (Bolt's field is
/// 32 bits): past the first wrap, an id still `taken` by a request pending since the last
/// time round is skipped, or its answer would end the newer request and the older one
/// would never end.
fn next_free_id(next: u64, mask: u64, taken: impl Fn(u64) -> bool) -> (u64, u64) {
    let mut counter = next;
    loop {
        let id = counter & mask;
        counter = counter.wrapping_add(1);
        if next <= mask || !taken(id) {
            return (id, counter);
        }
    }
}

/// Whether id `answered` was issued at or after `id`, ids growing and wrapping within `mask`.
fn answered_since(answered: u64, id: u64, mask: u64) -> bool {
    answered.wrapping_sub(id) & mask <= mask / 2
}

/// The later of the heartbeat answered so far (`kept`) and the one just answered (`id`).
fn newest_answered(kept: Option<u64>, id: u64, mask: u64) -> u64 {
    match kept {
        Some(kept) if answered_since(kept, id, mask) => kept,
        _ => id,
    }
}

/// Waits while nothing is pending until a request is sent; false once the connection is
/// closed or given up. After every `heartbeat` of it a heartbeat goes out, as SOFA Bolt and
/// Dubbo clients send; a probe under way is settled by its deadline.
async fn wait_idle<C: Codec>(upstream: &Upstream, heartbeat: Option<Duration>) -> bool {
    let mut next_beat = heartbeat.map(|every| Instant::now() + every);
    loop {
        let wake = match (next_beat, upstream.probe_deadline()) {
            (Some(beat), Some(deadline)) => Some(beat.min(deadline)),
            (beat, deadline) => beat.or(deadline),
        };
        let timer = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = upstream.sent.notified() => return true,
            _ = upstream.outbox.closed() => return false,
            _ = timer => {}
        }
        if !upstream.check_probe::<C>() {
            return false;
        }
        if let (Some(at), Some(every)) = (next_beat, heartbeat) {
            if Instant::now() >= at {
                upstream.probe_silence::<C>();
                next_beat = Some(Instant::now() + every);
            }
        }
    }
}

async fn expire_deadlines<C: Codec>(upstream: Rc<Upstream>, idle_heartbeat: Option<Duration>) {
    let mut tick = tokio::time::interval(DEADLINE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while upstream.is_open() {
        if upstream.pending.borrow().is_empty() {
            // Idle: no deadline timer until a request is sent (an idle connection must not
            // wake the thread 200 times a second), only the idle heartbeat's.
            if !wait_idle::<C>(&upstream, idle_heartbeat).await {
                break;
            }
            tick.reset();
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = upstream.outbox.closed() => break,
        }
        let now = Instant::now();
        let expired: Vec<u64> = upstream
            .pending
            .borrow()
            .iter()
            .filter(|(_, p)| p.deadline <= now || p.reply.given_up())
            .map(|(&id, _)| id)
            .collect();
        let mut silent = false;
        for id in expired {
            let Some(p) = upstream.pending.borrow_mut().remove(&id) else {
                continue;
            };
            finish(&p);
            if p.reply.given_up() {
                // Its caller left: no failure of the host's. A late answer is dropped as
                // one past its deadline is. A connection silent all the while is still
                // probed: callers that always give up before their timeout would otherwise
                // keep a dead one in use.
                p.count(Outcome::Cancelled);
                silent |= now.duration_since(p.started) >= SILENCE_PROBE_GRACE
                    && upstream.silent_since(p.started);
                continue;
            }
            p.cluster.failed(p.host);
            p.count(Outcome::Timeout);
            let waited = now.duration_since(p.started);
            silent |= upstream.silent_since(p.started);
            refuse::<C>(
                &p,
                Refusal::Timeout,
                &format!("no answer from the upstream within {waited:?}"),
            );
        }
        if silent {
            // Not one byte came for a request's whole timeout: a heartbeat finds out whether
            // the connection is dead (then given up, so that a dead route costs one timeout,
            // not every request until TCP gives up) or the upstream only slow.
            upstream.probe_silence::<C>();
        }
        if !upstream.check_probe::<C>() {
            break;
        }
        upstream.close_if_drained();
    }
}

#[cfg(test)]
mod tests {
    use super::{
        answered_since, newest_answered, next_free_id, refused_at, UPSTREAM_BACKLOG_REFUSED,
        UPSTREAM_OUTBOX_LIMIT,
    };

    mod linger {
        use std::rc::Rc;
        use std::time::Duration;

        use tokio::io::AsyncReadExt;
        use tokio::net::TcpListener;
        use tokio::task::LocalSet;

        use crate::bolt::Bolt;
        use crate::mesh::cluster::Cluster;
        use crate::mesh::config::{ClusterConfig, Protocol};
        use crate::mesh::listener::CLOSE_LINGER;
        use crate::mesh::upstream::Upstream;

        #[tokio::test]
        async fn a_closed_connection_to_an_upstream_that_reads_nothing_is_given_up_after_the_linger(
        ) {
            LocalSet::new()
                .run_until(async {
                    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
                    let address = server.local_addr().unwrap().to_string();
                    let cluster = Rc::new(Cluster::new(ClusterConfig {
                        protocol: Protocol::Bolt,
                        hosts: vec![address.clone()],
                        ..ClusterConfig::default()
                    }));
                    let timeout = Duration::from_secs(1);
                    let upstream =
                        Upstream::connect::<Bolt>(&address, timeout, (Rc::downgrade(&cluster), 0))
                            .await
                            .unwrap();
                    let (mut peer, _) = server.accept().await.unwrap();
                    // Far more than the sockets' buffers hold: the writer waits on the peer.
                    let queued = 32 << 20;
                    for _ in 0..32 {
                        assert!(upstream.outbox.push(&vec![0; 1 << 20]));
                    }
                    upstream.outbox.close(); // as a reload dropping the host does
                    tokio::time::sleep(CLOSE_LINGER + Duration::from_millis(300)).await;
                    // Read now: a writer still there would send it all, then close.
                    let mut got = 0;
                    let mut buffer = vec![0; 1 << 20];
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(2), peer.read(&mut buffer)).await
                    {
                        if n == 0 {
                            break;
                        }
                        got += n;
                    }
                    assert!(
                        got < queued,
                        "the writer was never given up: {got} bytes came"
                    );
                })
                .await;
        }
    }

    #[test]
    fn a_request_that_would_overflow_the_outbox_is_refused_not_queued() {
        const MIB: usize = 1024 * 1024;
        assert!(!refused_at(0, 100 * MIB), "an empty outbox takes any frame");
        assert!(!refused_at(30 * MIB, 34 * MIB), "exactly full");
        // Queued, it would overflow the outbox and close the connection all clients share.
        assert!(refused_at(30 * MIB, 40 * MIB));
        assert!(refused_at(UPSTREAM_BACKLOG_REFUSED, 1));
        assert_eq!(UPSTREAM_OUTBOX_LIMIT, 64 * MIB);
    }

    #[test]
    fn past_a_wrap_an_id_still_pending_is_skipped() {
        let bolt = u32::MAX as u64;
        let pending = [3u64, 4];
        let taken = |id: u64| pending.contains(&id);
        // Before the first wrap every id is new, pending or not (none can be).
        assert_eq!(next_free_id(3, bolt, taken), (3, 4));
        assert_eq!(next_free_id(bolt, bolt, taken), (bolt, bolt + 1));
        // Round again: 3 and 4 still wait, so 5 is next; a free id is taken as it comes.
        assert_eq!(next_free_id(bolt + 1 + 3, bolt, taken), (5, bolt + 1 + 6));
        assert_eq!(next_free_id(bolt + 1 + 2, bolt, taken), (2, bolt + 1 + 3));
        assert_eq!(
            next_free_id(7, u64::MAX, |_| true),
            (7, 8),
            "Dubbo's 64-bit ids never wrap"
        );
    }

    #[test]
    fn a_heartbeat_counts_when_its_own_or_a_later_one_is_answered() {
        let bolt = u32::MAX as u64;
        assert!(answered_since(7, 7, bolt) && answered_since(9, 7, bolt));
        assert!(
            !answered_since(6, 7, bolt),
            "an earlier probe's late answer"
        );
        assert!(
            answered_since(2, bolt - 1, bolt),
            "across the wrap of Bolt's 32-bit ids"
        );
        assert!(!answered_since(bolt - 1, 2, bolt));
        assert!(answered_since(5, u64::MAX - 1, u64::MAX) && !answered_since(3, 4, u64::MAX));
    }

    #[test]
    fn an_earlier_heartbeats_late_answer_does_not_replace_a_later_one() {
        let bolt = u32::MAX as u64;
        assert_eq!(newest_answered(None, 7, bolt), 7);
        assert_eq!(newest_answered(Some(8), 7, bolt), 8, "7 answered after 8");
        assert_eq!(newest_answered(Some(7), 8, bolt), 8);
        assert_eq!(
            newest_answered(Some(bolt - 1), 2, bolt),
            2,
            "across the wrap"
        );
        assert_eq!(newest_answered(Some(2), bolt - 1, bolt), 2);
    }
}
