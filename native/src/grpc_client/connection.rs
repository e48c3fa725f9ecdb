//! One HTTP/2 connection making unary gRPC calls, driven from the event loop's thread.
//!
//! The mirror of the front's server connection: the loop feeds received bytes in, h2
//! runs until it can make no more progress, and finished calls come back as
//! [`Finished`] values; the bytes to write are taken with [`ClientConnection::take_output`].
//! No thread or runtime sits between a delivery and the socket: the wakers only record
//! which call (or the connection) wants polling again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use h2::client::{self, ResponseFuture, SendRequest};
use h2::RecvStream;

use crate::front::io::LoopIo;
use crate::front::keepalive::Keepalive;
use crate::front::wake::{connection_waker, stream_waker, ReadySet};
use crate::grpc::{frame_into, gunzip, prefix, Gunzip, PREFIX_LEN};

pub const UNKNOWN: u32 = 2;
pub const DEADLINE_EXCEEDED: u32 = 4;
const PERMISSION_DENIED: u32 = 7;
const UNIMPLEMENTED: u32 = 12;
const UNAUTHENTICATED: u32 = 16;
/// The last code gRPC defines; a server's larger one reads as UNKNOWN, as gRPC reads it, and
/// so can never pass for NOT_SENT.
const MAX_STATUS: u32 = UNAUTHENTICATED;
pub const RESOURCE_EXHAUSTED: u32 = 8;
pub const INTERNAL: u32 = 13;
pub const UNAVAILABLE: u32 = 14;
/// Not a gRPC status: the call never reached the server's handler (not sent before the
/// server's GOAWAY, or refused with REFUSED_STREAM), so it may go over another connection.
pub const NOT_SENT: u32 = 1000;

/// The ready-set key that stands for "the connection may open another stream".
const SEND_READY: u32 = 0;
/// Deadlines this close are treated as passed: the loop's timers fire to the millisecond.
const DEADLINE_SLACK: Duration = Duration::from_millis(1);

/// How a call ended: status 0 with the response message, or a gRPC status and why.
#[derive(Debug)]
pub struct Finished {
    pub token: u64,
    pub status: u32,
    pub detail: String,
    pub message: Bytes,
}

impl Finished {
    fn failed(token: u64, status: u32, detail: String) -> Self {
        Finished {
            token,
            status,
            detail,
            message: Bytes::new(),
        }
    }
}

enum Phase {
    /// Waiting for the connection to take another stream.
    Queued {
        path: String,
        message: Bytes,
    },
    Head(ResponseFuture),
    Body(RecvStream, BytesMut),
    Trailers(RecvStream, BytesMut),
}

struct Call {
    token: u64,
    waker: Waker,
    phase: Phase,
    timeout: Duration,
    deadline: Instant,
    /// The response head carried grpc-status 0 (a trailers-only answer): no trailers follow.
    ok_in_head: bool,
    /// The answer's `grpc-encoding`, for a message flagged compressed (None: identity).
    encoding: Option<Box<str>>,
}

type Handshake = Pin<
    Box<
        dyn Future<
            Output = Result<(SendRequest<Bytes>, client::Connection<LoopIo, Bytes>), h2::Error>,
        >,
    >,
>;

enum State {
    Handshaking(Handshake),
    Open {
        send: SendRequest<Bytes>,
        driver: Box<client::Connection<LoopIo, Bytes>>, // boxed: the variants' sizes differ by 1 KiB
    },
    Closed,
}

/// h2's budget for small DATA frames it holds unread. Every answer's message is one (its
/// trailers follow it), and h2 reads all of a feed before any call reads its answer: at h2's
/// default (half the 64 KiB window) about 130 answers in one read closed the connection
/// (GOAWAY ENHANCE_YOUR_CALM) with every call on it. This takes a read full of answers.
const DATA_FRAME_BUDGET: usize = 8 << 20;

/// Streams one connection can open: client stream ids are the odd ones below 2^31.
const CLIENT_STREAM_IDS: u32 = 1 << 30;

pub struct ClientConnection {
    state: State,
    io: LoopIo,
    ready: Arc<ReadySet>,
    connection_waker: Waker,
    send_waker: Waker,
    authority: String,
    max_message_bytes: usize,
    calls: HashMap<u32, Call>,
    queued: VecDeque<u32>,
    /// Earliest deadline first; keys of calls already finished are skipped when met.
    deadlines: BinaryHeap<Reverse<(Instant, u32)>>,
    next_key: u32,
    finished: Vec<Finished>,
    keepalive: Keepalive,
    error: Option<String>,
    /// The server said GOAWAY, or the stream ids are used up: the calls it took carry on,
    /// new ones go elsewhere.
    draining: bool,
    /// Streams opened so far; at `CLIENT_STREAM_IDS` the connection drains and then ends
    /// itself, as after a graceful GOAWAY (at 10 000 calls a second, every 30 hours).
    streams_opened: u32,
    /// The connection ended after the server's GOAWAY without an error (a server stopping,
    /// or rotating its connections), not lost.
    ended_by_goaway: bool,
}

impl ClientConnection {
    /// A connection to the server at `authority` (`host:port`, sent as :authority).
    pub fn new(authority: String, max_message_bytes: usize) -> Self {
        let io = LoopIo::default();
        let handshake: Handshake = Box::pin(
            client::Builder::new()
                .data_frame_budget(DATA_FRAME_BUDGET)
                .handshake(io.clone()),
        );
        let ready = Arc::new(ReadySet::default());
        let mut connection = ClientConnection {
            state: State::Handshaking(handshake),
            io,
            connection_waker: connection_waker(&ready),
            send_waker: stream_waker(SEND_READY, &ready),
            ready,
            authority,
            max_message_bytes,
            calls: HashMap::new(),
            queued: VecDeque::new(),
            deadlines: BinaryHeap::new(),
            next_key: 1,
            finished: Vec::new(),
            keepalive: Keepalive::default(),
            draining: false,
            streams_opened: 0,
            ended_by_goaway: false,
            error: None,
        };
        connection.drive();
        connection
    }

    /// Call `path` (`/package.Service/Method`) with `message` (encoded); its outcome comes
    /// back under `token` from a later `feed`, `expire` or `lost`, or from this one's
    /// `take_finished` when the connection has already ended.
    pub fn start(&mut self, token: u64, path: String, message: &[u8], timeout: Duration) {
        if let State::Closed = self.state {
            let detail = self.lost_detail();
            self.finished
                .push(Finished::failed(token, UNAVAILABLE, detail));
            return;
        }
        if self.draining {
            let detail = format!("{} is going away (GOAWAY)", self.authority);
            self.finished
                .push(Finished::failed(token, NOT_SENT, detail));
            return;
        }
        let key = self.new_key();
        let deadline = Instant::now() + timeout;
        self.calls.insert(
            key,
            Call {
                token,
                waker: stream_waker(key, &self.ready),
                phase: Phase::Queued {
                    path,
                    message: framed(message),
                },
                timeout,
                deadline,
                ok_in_head: false,
                encoding: None,
            },
        );
        // The deadlines of calls answered stay until met: while one call hangs, every later
        // one would leave its entry behind, for as long as the timeout (an hour at most).
        if self.deadlines.len() > 2 * self.calls.len() + 1024 {
            let calls = &self.calls;
            self.deadlines
                .retain(|Reverse((_, key))| calls.contains_key(key));
        }
        self.deadlines.push(Reverse((deadline, key)));
        self.queued.push_back(key);
        self.ready.push(SEND_READY);
    }

    /// Run the protocol after `start`s.
    pub fn poll(&mut self) {
        self.drive();
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.io.0.borrow_mut().input.extend_from_slice(data);
        self.drive();
    }

    /// The server closed its side: no more input will come.
    pub fn feed_eof(&mut self) {
        self.io.0.borrow_mut().eof = true;
        self.drive();
    }

    /// The socket is gone: every call still open fails (UNAVAILABLE).
    pub fn lost(&mut self, reason: &str) {
        if !self.is_closed() {
            self.close(reason.to_owned());
        }
    }

    /// Calls past their deadline end (DEADLINE_EXCEEDED); their streams are reset.
    pub fn expire(&mut self) {
        let now = Instant::now() + DEADLINE_SLACK;
        while let Some(Reverse((deadline, key))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if let Some(call) = self.calls.remove(&key) {
                let detail = format!("no answer within {} ms", call.timeout.as_millis());
                self.finished
                    .push(Finished::failed(call.token, DEADLINE_EXCEEDED, detail));
            }
        }
        self.drive(); // dropped streams queue their resets
    }

    /// How long until the earliest open call's deadline; None with no call open.
    pub fn next_deadline(&mut self) -> Option<Duration> {
        while let Some(Reverse((deadline, key))) = self.deadlines.peek().copied() {
            if self.calls.contains_key(&key) {
                return Some(deadline.saturating_duration_since(Instant::now()));
            }
            self.deadlines.pop();
        }
        None
    }

    pub fn take_finished(&mut self) -> Vec<Finished> {
        std::mem::take(&mut self.finished)
    }

    /// Hand the bytes to write to `send`, then empty the buffer (see [`LoopIo::drain_output`]).
    pub fn take_output<R>(&mut self, send: impl FnOnce(&[u8]) -> R) -> R {
        self.io.drain_output(send)
    }

    /// Send a keepalive PING. False when the previous one is still unanswered.
    pub fn ping(&mut self) -> bool {
        let sent = self.keepalive.ping();
        self.drive();
        sent
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The connection ended after the server's GOAWAY without an error.
    pub fn ended_by_goaway(&self) -> bool {
        self.ended_by_goaway
    }

    /// A keepalive PING is out and its answer has not come yet.
    pub fn awaiting_pong(&self) -> bool {
        self.keepalive.is_outstanding()
    }

    /// The server sent GOAWAY: calls already taken finish here, new ones need another connection.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    pub fn open_calls(&self) -> usize {
        self.calls.len()
    }

    fn new_key(&mut self) -> u32 {
        loop {
            let key = self.next_key;
            self.next_key = self.next_key.wrapping_add(1);
            if key != SEND_READY && !self.calls.contains_key(&key) {
                return key;
            }
        }
    }

    fn drive(&mut self) {
        loop {
            let mut progressed = self.ready.take_connection();
            progressed |= self.drive_connection();
            for key in self.ready.take_streams() {
                progressed = true;
                if key == SEND_READY {
                    self.start_queued();
                } else {
                    self.poll_call(key);
                }
            }
            if (!progressed && !self.ready.connection_woken()) || self.is_closed() {
                break;
            }
        }
        if self.streams_opened >= CLIENT_STREAM_IDS && self.calls.is_empty() && !self.is_closed() {
            // drained: ended as a server's GOAWAY ends one, for a new connection to go on
            self.ended_by_goaway = true;
            self.close("its stream ids are used up: a new connection takes the calls".into());
        }
    }

    fn drive_connection(&mut self) -> bool {
        let waker = self.connection_waker.clone();
        let mut cx = Context::from_waker(&waker);
        let progressed = self.keepalive.poll_answered(&mut cx);
        match &mut self.state {
            State::Closed => progressed,
            State::Handshaking(handshake) => match handshake.as_mut().poll(&mut cx) {
                Poll::Ready(Ok((send, mut driver))) => {
                    self.keepalive.attach(driver.ping_pong());
                    self.state = State::Open {
                        send,
                        driver: Box::new(driver),
                    };
                    self.ready.push(SEND_READY);
                    self.drive_connection();
                    true
                }
                Poll::Ready(Err(error)) => {
                    self.close(format!("HTTP/2 handshake failed: {error}"));
                    true
                }
                Poll::Pending => progressed,
            },
            State::Open { driver, send } => match Pin::new(driver.as_mut()).poll(&mut cx) {
                Poll::Ready(Ok(())) => {
                    let graceful = matches!(
                        send.poll_ready(&mut cx),
                        Poll::Ready(Err(e)) if e.is_go_away()
                            && e.is_remote()
                            && e.reason() == Some(h2::Reason::NO_ERROR)
                    );
                    self.harvest();
                    self.ended_by_goaway = graceful;
                    let why = if graceful {
                        "the server closed it after its GOAWAY"
                    } else {
                        "the server ended the connection"
                    };
                    self.close(why.into());
                    true
                }
                Poll::Ready(Err(error)) => {
                    self.harvest();
                    self.close(format!("connection error: {error}"));
                    true
                }
                Poll::Pending => progressed,
            },
        }
    }

    fn start_queued(&mut self) {
        let State::Open { send, .. } = &mut self.state else {
            return;
        };
        let mut cx = Context::from_waker(&self.send_waker);
        while let Some(&key) = self.queued.front() {
            if self.streams_opened >= CLIENT_STREAM_IDS {
                // h2 would refuse the next one as an error, and the connection end with it
                self.drain(format!(
                    "{}: this connection's stream ids are used up",
                    self.authority
                ));
                return;
            }
            match send.poll_ready(&mut cx) {
                Poll::Pending => return,
                Poll::Ready(Err(error)) if error.is_go_away() && error.is_remote() => {
                    // A graceful GOAWAY too (a server stopping or rotating connections): the
                    // streams it took may still be answered, the driver reads on.
                    self.drain(format!("{} is going away: {error}", self.authority));
                    return;
                }
                Poll::Ready(Err(error)) => {
                    self.close(format!("connection error: {error}"));
                    return;
                }
                Poll::Ready(Ok(())) => {}
            }
            self.queued.pop_front();
            let Some(call) = self.calls.get_mut(&key) else {
                continue; // expired while queued
            };
            let Phase::Queued { path, message } = std::mem::replace(
                &mut call.phase,
                Phase::Queued {
                    path: String::new(),
                    message: Bytes::new(),
                },
            ) else {
                continue;
            };
            // The time left, not the whole timeout: it may have waited for a stream
            let left = call.deadline.saturating_duration_since(Instant::now());
            let sent = request(&self.authority, &path, left).and_then(|head| {
                let (response, mut stream) = send
                    .send_request(head, false)
                    .map_err(|e| (UNAVAILABLE, e.to_string()))?;
                stream
                    .send_data(message, true)
                    .map_err(|e| (UNAVAILABLE, e.to_string()))?;
                Ok(response)
            });
            match sent {
                Ok(response) => {
                    call.phase = Phase::Head(response);
                    self.streams_opened += 1;
                    self.ready.push(key);
                }
                Err((status, detail)) => {
                    let token = call.token;
                    self.calls.remove(&key);
                    self.finished.push(Finished::failed(token, status, detail));
                }
            }
        }
    }

    fn poll_call(&mut self, key: u32) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let limit = self.max_message_bytes;
        let mut cx = Context::from_waker(&call.waker);
        let outcome = loop {
            match &mut call.phase {
                Phase::Queued { .. } => return,
                Phase::Head(response) => match Pin::new(response).poll(&mut cx) {
                    Poll::Pending => return,
                    // Refused, or above the last stream id of the server's GOAWAY: never handled.
                    Poll::Ready(Err(e))
                        if e.reason() == Some(h2::Reason::REFUSED_STREAM)
                            || (e.is_go_away() && e.is_remote()) =>
                    {
                        break Err((NOT_SENT, format!("the server did not take the call: {e}")))
                    }
                    Poll::Ready(Err(e)) => break Err((UNAVAILABLE, e.to_string())),
                    Poll::Ready(Ok(response)) => {
                        if response.status() != http::StatusCode::OK {
                            let status = response.status();
                            break Err((status_of_http(status), format!("HTTP status {status}")));
                        }
                        if let Some(status) = grpc_status(response.headers()) {
                            break Err(status); // a trailers-only error
                        }
                        // A trailers-only OK has no message: unframed() refuses it below.
                        let ok_in_head = response.headers().contains_key("grpc-status");
                        call.encoding = response
                            .headers()
                            .get("grpc-encoding")
                            .filter(|v| v.as_bytes() != b"identity")
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).into());
                        call.phase = Phase::Body(response.into_body(), BytesMut::new());
                        call.ok_in_head = ok_in_head;
                    }
                },
                Phase::Body(body, data) => match body.poll_data(&mut cx) {
                    Poll::Pending => return,
                    Poll::Ready(Some(Ok(chunk))) => {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        if data.len() + chunk.len() > limit + 5 {
                            break Err((
                                RESOURCE_EXHAUSTED,
                                format!("the answer is over the {limit}-byte limit"),
                            ));
                        }
                        data.extend_from_slice(&chunk);
                    }
                    Poll::Ready(Some(Err(e))) => break Err((UNAVAILABLE, e.to_string())),
                    Poll::Ready(None) => {
                        let Phase::Body(body, data) = std::mem::replace(
                            &mut call.phase,
                            Phase::Queued {
                                path: String::new(),
                                message: Bytes::new(),
                            },
                        ) else {
                            unreachable!()
                        };
                        call.phase = Phase::Trailers(body, data);
                    }
                },
                Phase::Trailers(body, data) => match body.poll_trailers(&mut cx) {
                    Poll::Pending => return,
                    Poll::Ready(Err(e)) => break Err((UNAVAILABLE, e.to_string())),
                    Poll::Ready(Ok(trailers)) => {
                        let trailers = trailers.filter(|t| t.contains_key("grpc-status"));
                        if let Some(status) = trailers.as_ref().and_then(grpc_status) {
                            break Err(status);
                        }
                        if trailers.is_none() && !call.ok_in_head {
                            // gRPC reads an answer with no status as failed, whatever came
                            break Err((INTERNAL, "the answer ended without a grpc-status".into()));
                        }
                        break unframed(std::mem::take(data), call.encoding.as_deref(), limit);
                    }
                },
            }
        };
        let token = call.token;
        self.calls.remove(&key);
        self.finished.push(match outcome {
            Ok(message) => Finished {
                token,
                status: 0,
                detail: String::new(),
                message,
            },
            Err((status, detail)) => Finished::failed(token, status, detail),
        });
    }

    /// Read every open call once: answers that came in with the connection's last bytes
    /// are finished before the connection's end fails the rest.
    fn harvest(&mut self) {
        let mut keys: Vec<u32> = self.calls.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            self.poll_call(key);
        }
    }

    /// Stop sending: the calls not sent yet come back NOT_SENT, the others carry on.
    fn drain(&mut self, why: String) {
        self.draining = true;
        for key in std::mem::take(&mut self.queued) {
            if let Some(call) = self.calls.remove(&key) {
                self.finished
                    .push(Finished::failed(call.token, NOT_SENT, why.clone()));
            }
        }
    }

    fn lost_detail(&self) -> String {
        let why = self.error.as_deref().unwrap_or("closed");
        format!("connection to {} lost: {why}", self.authority)
    }

    fn close(&mut self, error: String) {
        self.state = State::Closed;
        self.error = Some(error);
        let detail = self.lost_detail();
        let mut open: Vec<(u32, u64, bool)> = self
            .calls
            .drain()
            .map(|(key, call)| (key, call.token, matches!(call.phase, Phase::Queued { .. })))
            .collect();
        open.sort_unstable();
        for (_, token, queued) in open {
            // One never handed to h2 never reached the server: it may go out elsewhere
            let status = if queued { NOT_SENT } else { UNAVAILABLE };
            self.finished
                .push(Finished::failed(token, status, detail.clone()));
        }
        self.queued.clear();
        self.deadlines.clear();
    }
}

/// The status of an answer whose HTTP status is not 200 (a proxy's, or no gRPC server's),
/// as gRPC's HTTP-to-gRPC status mapping gives it.
fn status_of_http(status: http::StatusCode) -> u32 {
    match status.as_u16() {
        400 => INTERNAL,
        401 => UNAUTHENTICATED,
        403 => PERMISSION_DENIED,
        404 => UNIMPLEMENTED,
        429 | 502 | 503 | 504 => UNAVAILABLE,
        _ => UNKNOWN,
    }
}

fn framed(message: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    frame_into(&mut out, message);
    out.freeze()
}

fn request(
    authority: &str,
    path: &str,
    timeout: Duration,
) -> Result<http::Request<()>, (u32, String)> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", format!("{}m", timeout.as_millis().max(1)))
        .body(())
        .map_err(|e| (INTERNAL, format!("bad request: {e}")))
}

/// The one message of a unary answer, without its gRPC prefix; a compressed one (a server
/// with compression on sends them whatever the client accepts) decompressed up to `limit`.
fn unframed(data: BytesMut, encoding: Option<&str>, limit: usize) -> Result<Bytes, (u32, String)> {
    let Some((compressed @ (0 | 1), size)) = prefix(&data) else {
        return Err((INTERNAL, "the answer is not one gRPC message".into()));
    };
    let mut data = data.freeze();
    data.advance(PREFIX_LEN);
    if data.len() != size {
        return Err((
            INTERNAL,
            format!(
                "the answer's message is {} bytes, its prefix says {size}",
                data.len()
            ),
        ));
    }
    if compressed == 0 {
        return Ok(data);
    }
    match encoding {
        Some("gzip") => gunzip(&data, limit).map_err(|e| match e {
            Gunzip::TooLarge => (
                RESOURCE_EXHAUSTED,
                format!("the answer is over the {limit}-byte limit once decompressed"),
            ),
            Gunzip::Corrupt(e) => (
                INTERNAL,
                format!("the gzip answer cannot be decompressed: {e}"),
            ),
        }),
        Some(other) => Err((
            INTERNAL,
            format!("the answer is compressed with {other}: only gzip is read"),
        )),
        None => Err((
            INTERNAL,
            "the answer is flagged compressed but has no grpc-encoding".into(),
        )),
    }
}

/// The call's status and detail when it is not OK; None for OK or no status yet. A status
/// that is not a number (or not ASCII) is INTERNAL, not OK.
fn grpc_status(headers: &http::HeaderMap) -> Option<(u32, String)> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .map_or(
            INTERNAL,
            |code| if code > MAX_STATUS { UNKNOWN } else { code },
        );
    if code == 0 {
        return None;
    }
    let detail = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some((code, detail))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(value) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(value);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::front::connection::{Connection, Event, Method, Settings};

    const PATH: &str = "/test.Echo/Call";

    fn server() -> Connection {
        server_with(Settings::default())
    }

    fn server_with(settings: Settings) -> Connection {
        let method = Method::new(0, false);
        let methods = HashMap::from([(PATH.to_owned(), method)]);
        Connection::new(Arc::new(methods), settings, false)
    }

    /// Moves bytes both ways until neither side has more to say; returns the server's events.
    fn exchange(client: &mut ClientConnection, server: &mut Connection) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            events.extend(server.poll());
            let to_server = client.take_output(|out| out.to_vec());
            let to_client = server.drain_output(|out| out.to_vec());
            if to_server.is_empty() && to_client.is_empty() {
                return events;
            }
            events.extend(server.feed(&to_server));
            client.feed(&to_client);
        }
    }

    /// A server that takes one stream at a time (its SETTINGS read), and a client that has
    /// just started calls 1, 2 and 3 (5 s each).
    fn three_calls_one_stream_at_a_time() -> (ClientConnection, Connection) {
        let settings = Settings {
            max_concurrent_streams: 1,
            ..Settings::default()
        };
        let (mut client, mut server) = (
            ClientConnection::new("app:1".into(), 1024),
            server_with(settings),
        );
        exchange(&mut client, &mut server); // the server's SETTINGS reach the client first
        for token in 1..=3 {
            client.start(token, PATH.into(), b"q", Duration::from_secs(5));
        }
        client.poll();
        (client, server)
    }

    fn unary_keys(events: &[Event]) -> Vec<(u32, Bytes)> {
        events
            .iter()
            .filter_map(|event| match event {
                Event::Unary { key, message, .. } => Some((*key, message.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_answered_ping_on_an_idle_connection_lets_the_next_one_go() {
        // The ACK wakes the connection while its driver reads it; nothing else happens on an
        // idle connection until the next ping, which must see it answered.
        let (mut client, mut server) = (ClientConnection::new("app:1".into(), 1024), server());
        client.poll();
        exchange(&mut client, &mut server);
        for round in 0..3 {
            assert!(
                client.ping(),
                "client ping {round}: the last one was answered"
            );
            assert!(
                server.ping(),
                "server ping {round}: the last one was answered"
            );
            exchange(&mut client, &mut server);
        }
    }

    #[test]
    fn an_answer_without_a_readable_grpc_status_is_internal() {
        // gRPC reads a call whose trailers carry no status, or one that is not a number, as
        // failed: before, a well-framed message with either was taken as an OK answer.
        let cases: [(&[(&str, &str)], u32); 3] = [
            (&[("x-other", "1")], INTERNAL),
            (&[("grpc-status", "zero")], INTERNAL),
            // a code gRPC does not define reads as UNKNOWN: it can never pass for NOT_SENT
            (&[("grpc-status", "1000")], UNKNOWN),
        ];
        for (trailers, expected) in cases {
            let (mut client, mut server) = (ClientConnection::new("app:1".into(), 1024), server());
            client.start(1, PATH.into(), b"ask", Duration::from_secs(5));
            client.poll();
            let [(key, _)] = unary_keys(&exchange(&mut client, &mut server))[..] else {
                panic!("one call expected");
            };
            let mut map = http::HeaderMap::new();
            for (name, value) in trailers {
                map.insert(
                    http::HeaderName::from_static(name),
                    http::HeaderValue::from_static(value),
                );
            }
            assert!(server.respond(key, b"answer", None, Some(map)));
            exchange(&mut client, &mut server);
            let finished = client.take_finished();
            assert_eq!(finished.len(), 1);
            assert_eq!(
                finished[0].status, expected,
                "{trailers:?}: {}",
                finished[0].detail
            );
        }
    }

    #[test]
    fn after_a_graceful_goaway_calls_taken_finish_and_new_ones_are_not_sent() {
        // A server stopping gracefully (grpc-go GracefulStop, a connection rotated) answers
        // what it took; before, the next call closed the connection and failed those too.
        let (mut client, mut server) = (ClientConnection::new("app:1".into(), 1024), server());
        client.start(1, PATH.into(), b"taken", Duration::from_secs(5));
        client.poll();
        let [(taken, _)] = unary_keys(&exchange(&mut client, &mut server))[..] else {
            panic!("one call expected");
        };
        server.graceful_shutdown();
        exchange(&mut client, &mut server);
        client.start(2, PATH.into(), b"late", Duration::from_secs(5));
        client.poll();
        let events = exchange(&mut client, &mut server);
        assert!(
            unary_keys(&events).is_empty(),
            "nothing new reaches the server"
        );
        assert!(client.is_draining() && !client.is_closed());
        let finished = client.take_finished();
        assert_eq!(finished.len(), 1);
        assert_eq!((finished[0].token, finished[0].status), (2, NOT_SENT));
        assert!(server.respond(taken, b"done", None, None));
        exchange(&mut client, &mut server);
        let finished = client.take_finished();
        assert_eq!(finished.len(), 1, "{finished:?}");
        assert_eq!(
            (
                finished[0].token,
                finished[0].status,
                finished[0].message.clone()
            ),
            (1, 0, Bytes::from("done"))
        );
    }

    #[test]
    fn calls_still_queued_when_a_goaway_closes_the_connection_were_not_sent() {
        // The last answer and the GOAWAY in one read: h2 closes at once, before the queued
        // calls (the server's limit is one stream) are handed to it.
        let (mut client, mut server) = three_calls_one_stream_at_a_time();
        let [(first, _)] = unary_keys(&exchange(&mut client, &mut server))[..] else {
            panic!("one call at a time expected");
        };
        assert!(server.respond(first, b"a", None, None));
        server.poll();
        let mut read = server.drain_output(|out| out.to_vec());
        // GOAWAY, last stream 1, NO_ERROR
        read.extend_from_slice(&[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        client.feed(&read);
        let mut ends: Vec<_> = client
            .take_finished()
            .iter()
            .map(|f| (f.token, f.status))
            .collect();
        ends.sort_unstable();
        assert_eq!(ends, vec![(1, 0), (2, NOT_SENT), (3, NOT_SENT)]);
    }

    #[test]
    fn a_call_that_waited_for_a_stream_sends_the_time_it_has_left() {
        // With a limit of one stream, h2 takes one call beyond it (its headers made then);
        // the third waits in the client's queue.
        let (mut client, mut server) = three_calls_one_stream_at_a_time();
        let mut events = exchange(&mut client, &mut server);
        std::thread::sleep(Duration::from_millis(300));
        let mut timeouts = Vec::new();
        for _ in 0..3 {
            let calls: Vec<_> = events
                .iter()
                .filter_map(|event| match event {
                    Event::Unary {
                        key, timeout_us, ..
                    } => Some((*key, *timeout_us)),
                    _ => None,
                })
                .collect();
            let [(key, timeout_us)] = calls[..] else {
                panic!("one call at a time expected: {calls:?}");
            };
            timeouts.push(timeout_us);
            assert!(server.respond(key, b"a", None, None));
            events = exchange(&mut client, &mut server);
        }
        assert!(
            timeouts[2] <= 4_750_000,
            "{timeouts:?} µs: the whole 5 s, not what is left"
        );
    }

    #[test]
    fn the_deadlines_of_answered_calls_do_not_pile_up_behind_one_that_hangs() {
        let (mut client, mut server) = (ClientConnection::new("app:1".into(), 1024), server());
        client.start(0, PATH.into(), b"hangs", Duration::from_secs(3600));
        for round in 0..20 {
            for token in 1..=500 {
                client.start(
                    round * 1000 + token,
                    PATH.into(),
                    b"q",
                    Duration::from_secs(3600),
                );
            }
            client.poll();
            for (key, message) in unary_keys(&exchange(&mut client, &mut server)) {
                if &message[..] != b"hangs" {
                    assert!(server.respond(key, b"a", None, None));
                }
            }
            exchange(&mut client, &mut server);
        }
        assert_eq!(client.open_calls(), 1);
        assert!(
            client.deadlines.len() < 3000,
            "{} deadlines kept",
            client.deadlines.len()
        );
    }

    #[test]
    fn an_http_status_other_than_200_maps_as_grpc_maps_it() {
        let cases = [
            (404, UNIMPLEMENTED),
            (503, UNAVAILABLE),
            (401, UNAUTHENTICATED),
            (403, PERMISSION_DENIED),
            (400, INTERNAL),
            (418, UNKNOWN),
        ];
        for (http, grpc) in cases {
            let status = http::StatusCode::from_u16(http).unwrap();
            assert_eq!(status_of_http(status), grpc, "{http}");
        }
    }

    #[test]
    fn a_connection_whose_stream_ids_are_used_up_drains_and_ends_as_after_a_goaway() {
        let (mut client, mut server) = (ClientConnection::new("app:1".into(), 1024), server());
        client.streams_opened = CLIENT_STREAM_IDS - 2;
        for token in 1..=3 {
            client.start(token, PATH.into(), b"q", Duration::from_secs(5));
        }
        client.poll();
        let calls = unary_keys(&exchange(&mut client, &mut server));
        assert_eq!(calls.len(), 2);
        assert!(client.is_draining() && !client.is_closed());
        let finished = client.take_finished();
        assert_eq!(
            (finished.len(), finished[0].token, finished[0].status),
            (1, 3, NOT_SENT)
        );
        for (key, _) in calls {
            assert!(server.respond(key, b"a", None, None));
        }
        exchange(&mut client, &mut server);
        let answered: Vec<_> = client.take_finished().iter().map(|f| f.status).collect();
        assert_eq!(answered, vec![0, 0]);
        assert!(client.is_closed() && client.ended_by_goaway());
    }

    #[test]
    fn calls_are_answered_under_their_own_tokens() {
        let (mut client, mut server) = (ClientConnection::new("app:1".into(), 1024), server());
        for token in [7, 8] {
            client.start(
                token,
                PATH.into(),
                format!("ask {token}").as_bytes(),
                Duration::from_secs(5),
            );
        }
        client.poll();
        let calls = unary_keys(&exchange(&mut client, &mut server));
        assert_eq!(calls.len(), 2);
        for (key, message) in calls.iter().rev() {
            let answer = [b"re: ".as_slice(), message].concat();
            assert!(server.respond(*key, &answer, None, None));
        }
        exchange(&mut client, &mut server);
        let mut finished = client.take_finished();
        finished.sort_by_key(|f| f.token);
        let answers: Vec<_> = finished
            .iter()
            .map(|f| (f.token, f.status, f.message.clone()))
            .collect();
        assert_eq!(
            answers,
            vec![
                (7, 0, Bytes::from("re: ask 7")),
                (8, 0, Bytes::from("re: ask 8"))
            ]
        );
        assert_eq!(client.open_calls(), 0);
        assert_eq!(client.next_deadline(), None);
    }

    #[test]
    fn many_answers_in_one_read_are_all_taken() {
        let (mut client, mut server) = (ClientConnection::new("app:1".into(), 1024), server());
        let calls = 1000;
        for token in 0..calls {
            client.start(token, PATH.into(), b"q", Duration::from_secs(5));
        }
        client.poll();
        let keys = unary_keys(&exchange(&mut client, &mut server));
        assert_eq!(keys.len(), calls as usize);
        for (key, _) in &keys {
            assert!(server.respond(*key, b"a", None, None));
        }
        server.poll();
        client.feed(&server.drain_output(|out| out.to_vec())); // every answer in one read
        let finished = client.take_finished();
        let ok = finished.iter().filter(|f| f.status == 0).count();
        assert_eq!(
            (ok, client.is_closed()),
            (calls as usize, false),
            "{:?}",
            finished.first()
        );
    }

    #[test]
    fn calls_over_the_servers_stream_limit_wait_their_turn() {
        let (mut client, mut server) = three_calls_one_stream_at_a_time();
        let mut answered = Vec::new();
        let mut events = exchange(&mut client, &mut server);
        for _ in 0..3 {
            let calls = unary_keys(&events);
            assert_eq!(calls.len(), 1, "one stream at a time, after {answered:?}");
            assert!(server.respond(calls[0].0, b"a", None, None));
            events = exchange(&mut client, &mut server); // the answer out, the next call in
            answered.extend(client.take_finished().iter().map(|f| (f.token, f.status)));
        }
        assert_eq!(answered, vec![(1, 0), (2, 0), (3, 0)]);
    }

    #[test]
    fn an_error_status_comes_back_with_its_detail() {
        let (mut client, mut server) = (ClientConnection::new("app:1".into(), 1024), server());
        client.start(1, PATH.into(), b"x", Duration::from_secs(5));
        client.poll();
        let calls = unary_keys(&exchange(&mut client, &mut server));
        assert!(server.finish(calls[0].0, 9, "not now: 100%", None));
        exchange(&mut client, &mut server);
        let finished = client.take_finished();
        assert_eq!(
            (finished[0].status, finished[0].detail.as_str()),
            (9, "not now: 100%")
        );
    }

    #[test]
    fn a_call_past_its_deadline_fails_and_its_stream_is_reset() {
        let (mut client, mut server) = (ClientConnection::new("app:1".into(), 1024), server());
        client.start(3, PATH.into(), b"slow", Duration::from_millis(1));
        client.start(4, PATH.into(), b"fast", Duration::from_secs(60));
        client.poll();
        assert_eq!(unary_keys(&exchange(&mut client, &mut server)).len(), 2);
        assert!(client.next_deadline().expect("calls open") <= Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(3));
        client.expire();
        let finished = client.take_finished();
        assert_eq!(finished.len(), 1);
        assert_eq!(
            (finished[0].token, finished[0].status),
            (3, DEADLINE_EXCEEDED)
        );
        let events = exchange(&mut client, &mut server);
        assert!(
            events.iter().any(|e| matches!(e, Event::Cancelled { .. })),
            "the server hears the reset: {events:?}"
        );
        assert!(client.next_deadline().expect("one call open") > Duration::from_secs(50));
    }

    #[test]
    fn a_lost_connection_fails_every_open_call_and_any_later_one() {
        let (mut client, mut server) = (ClientConnection::new("app:1".into(), 1024), server());
        client.start(1, PATH.into(), b"a", Duration::from_secs(5));
        client.poll();
        exchange(&mut client, &mut server);
        client.lost("reset by peer");
        client.start(2, PATH.into(), b"b", Duration::from_secs(5));
        let finished = client.take_finished();
        let statuses: Vec<_> = finished.iter().map(|f| (f.token, f.status)).collect();
        assert_eq!(statuses, vec![(1, UNAVAILABLE), (2, UNAVAILABLE)]);
        assert!(
            finished[1].detail.contains("reset by peer"),
            "{}",
            finished[1].detail
        );
    }

    #[test]
    fn an_answer_over_the_limit_is_refused() {
        let (mut client, mut server) = (ClientConnection::new("app:1".into(), 16), server());
        client.start(1, PATH.into(), b"a", Duration::from_secs(5));
        client.poll();
        let calls = unary_keys(&exchange(&mut client, &mut server));
        assert!(server.respond(calls[0].0, &[0; 64], None, None));
        exchange(&mut client, &mut server);
        assert_eq!(client.take_finished()[0].status, RESOURCE_EXHAUSTED);
    }

    #[test]
    fn garbage_from_the_server_ends_the_connection_and_its_calls() {
        let mut client = ClientConnection::new("app:1".into(), 1024);
        client.start(1, PATH.into(), b"a", Duration::from_secs(5));
        client.poll();
        client.feed(b"this is not HTTP/2 at all, not even a frame header");
        assert!(client.is_closed());
        assert_eq!(client.take_finished()[0].status, UNAVAILABLE);
    }
}
