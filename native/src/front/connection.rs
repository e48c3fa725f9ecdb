//! One HTTP/2 connection serving gRPC, driven from the event loop's own thread.
//!
//! The loop hands received bytes to [`Connection::feed`], which runs h2 until it
//! can make no more progress and returns what happened as [`Event`]s; responses go
//! back through [`Connection::respond`] / [`Connection::send`] / [`Connection::finish`],
//! and [`Connection::drain_output`] yields the bytes to write. No thread, no runtime
//! and no cross-thread wake-up sits between a request and its handler: h2's futures
//! are polled here with wakers that only record which stream wants attention.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use h2::server::{self, Handshake, SendResponse};
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};

use super::authority::AuthorityRepair;
use super::budget::{self, Budget, Held};
use super::io::LoopIo;
use super::keepalive::Keepalive;
use super::status;
use super::wake::{connection_waker, stream_waker, ReadySet};
use crate::frame::{regrow, room_to_grow};
pub(crate) use crate::grpc::frame_into;
use crate::grpc::{prefix, Gunzip, ACCEPTED_ENCODINGS, PREFIX_LEN};

/// gRPC status codes the transport itself answers with.
pub mod code {
    pub const OK: u32 = 0;
    pub const CANCELLED: u32 = 1;
    pub const INVALID_ARGUMENT: u32 = 3;
    pub const INTERNAL: u32 = 13;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNAVAILABLE: u32 = 14;
}

/// The method index of a `Refused` call whose path this server does not serve.
pub const UNKNOWN_METHOD: u32 = u32::MAX;

/// What h2 lets small DATA frames cost before it reads them to a stream (each under 256
/// bytes costs 256 less its size): enough for a whole read (256 KiB) of empty frames. At
/// h2's default, half the connection window, a read full of a client stream's small
/// messages closed the connection (GOAWAY ENHANCE_YOUR_CALM) with every call on it.
const DATA_FRAME_BUDGET: usize = 8 << 20;

#[derive(Clone, Debug)]
pub struct Settings {
    pub max_message_bytes: usize,
    pub max_concurrent_streams: u32,
    pub max_header_list_bytes: u32,
    pub initial_window_bytes: u32,
    pub max_send_buffer_bytes: usize,
    /// Unconsumed request bytes a streaming call may hold before h2 is no longer read for it.
    pub max_unconsumed_bytes: usize,
    /// Bytes of messages not yet complete the calls of one connection may hold together
    /// (see [`super::budget`]).
    pub max_incomplete_bytes_per_connection: usize,
    /// The same over every connection sharing these settings.
    pub incomplete_requests: Arc<Budget>,
}

impl Default for Settings {
    fn default() -> Self {
        let max_message_bytes = 4 * 1024 * 1024;
        let (max_incomplete_bytes_per_connection, incomplete_requests) =
            budget::bounds_for(max_message_bytes);
        Settings {
            max_message_bytes,
            max_concurrent_streams: 1024,
            max_header_list_bytes: 16 * 1024,
            initial_window_bytes: 1024 * 1024,
            max_send_buffer_bytes: 1024 * 1024,
            max_unconsumed_bytes: 1024 * 1024,
            max_incomplete_bytes_per_connection,
            incomplete_requests,
        }
    }
}

/// A method the server knows: its index (handed back in events) and whether the
/// client streams requests (unary-request methods are delivered as one event).
#[derive(Clone, Debug)]
pub struct Method {
    pub index: u32,
    pub client_streaming: bool,
    /// Answered here with these bytes, never reaching Python: the benchmark's floor.
    #[cfg(feature = "bench")]
    pub fixed_reply: Option<Bytes>,
}

impl Method {
    pub fn new(index: u32, client_streaming: bool) -> Self {
        Method {
            index,
            client_streaming,
            #[cfg(feature = "bench")]
            fixed_reply: None,
        }
    }
}

pub type Metadata = Option<Vec<(String, Vec<u8>)>>;

#[derive(Debug, PartialEq)]
pub enum Event {
    /// A unary-request call, complete: its one message.
    Unary {
        key: u32,
        method: u32,
        message: Bytes,
        timeout_us: i64,
        metadata: Metadata,
    },
    /// A client-streaming call opened; its messages follow as `Message`.
    Open {
        key: u32,
        method: u32,
        timeout_us: i64,
        metadata: Metadata,
    },
    Message {
        key: u32,
        message: Bytes,
    },
    /// The client finished sending (client-streaming calls).
    HalfClose {
        key: u32,
    },
    /// The call ended without its handler: the client reset the stream or the
    /// connection ended (`code` CANCELLED), or the transport refused what the client
    /// sent (RESOURCE_EXHAUSTED, ...; the client got that status). The handler should stop.
    Cancelled {
        key: u32,
        method: u32,
        code: u32,
    },
    /// A call that ended before it was handed to the application, with the status
    /// the client got: an unknown method (`method` is [`UNKNOWN_METHOD`], `path` says
    /// which), a request over the size limit or malformed, a reset before the request
    /// was complete. Reported so that every call is counted.
    Refused {
        method: u32,
        code: u32,
        path: Option<String>,
    },
    /// Everything queued with `send` has been handed to HTTP/2 flow control.
    Writable {
        key: u32,
    },
}

struct Stream {
    method: Method,
    waker: Waker,
    recv: Option<RecvStream>,
    respond: Option<SendResponse<Bytes>>,
    send: Option<SendStream<Bytes>>,
    partial: BytesMut,
    unary_message: Option<Bytes>,
    timeout_us: i64,
    metadata: Metadata,
    handed_to_app: bool,
    /// Request bytes of a client-streaming call taken from h2 and not yet consumed by the
    /// handler. At the limit h2 is no longer read, so its window closes behind the bytes it
    /// buffers. Capacity itself is released as bytes are read: held back, a message larger
    /// than the window could never complete, and the handler never consume it.
    unconsumed: usize,
    /// Window read past the `unconsumed` limit, given back to the client once the handler
    /// has consumed enough; the bytes wait in `partial`, whole messages or not.
    withheld: usize,
    /// The client-streaming request has ended and the handler was told (after every message).
    half_closed: bool,
    pending: BytesMut,
    trailers_after_pending: Option<HeaderMap>,
    wants_writable: bool,
    /// Not a gRPC request: its body is read and dropped, then it gets a 415.
    not_grpc: bool,
    /// The bytes of `partial` and `unary_message`, counted against the connection's and
    /// the process's bounds until the stream is dropped.
    held: Held,
    /// How the messages flagged compressed are encoded (`grpc-encoding`).
    encoding: Encoding,
}

/// A request's `grpc-encoding`. Only the messages flagged compressed are decoded with it:
/// a client may send small ones as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Unsupported(Box<str>),
}

impl Encoding {
    fn of(header: Option<&HeaderValue>) -> Self {
        match header.map(HeaderValue::as_bytes) {
            None | Some(b"identity") => Encoding::Identity,
            Some(b"gzip") => Encoding::Gzip,
            Some(other) => Encoding::Unsupported(String::from_utf8_lossy(other).into()),
        }
    }

    /// Why a message flagged compressed cannot be read, when it cannot.
    fn check_compressed(&self) -> Result<(), (u32, String)> {
        match self {
            Encoding::Gzip => Ok(()),
            Encoding::Identity => Err((
                code::INTERNAL,
                "a message is flagged compressed but the request has no grpc-encoding".into(),
            )),
            Encoding::Unsupported(name) => Err((
                code::UNIMPLEMENTED,
                format!("message compression {name} is not supported: {ACCEPTED_ENCODINGS}"),
            )),
        }
    }
}

/// The message a gzip body stands for, refused past `max` bytes.
fn gunzip(body: &[u8], max: usize) -> Result<Bytes, (u32, String)> {
    crate::grpc::gunzip(body, max).map_err(|e| match e {
        Gunzip::TooLarge => (
            code::RESOURCE_EXHAUSTED,
            format!("request message is over the limit of {max} bytes once decompressed"),
        ),
        Gunzip::Corrupt(e) => (
            code::INTERNAL,
            format!("a gzip message cannot be decompressed: {e}"),
        ),
    })
}

impl Stream {
    /// Whether the messages handed to a client-streaming handler and not consumed yet have
    /// reached `max_unconsumed`: no more are handed over, and no more window is given.
    fn full(&self, max_unconsumed: usize) -> bool {
        self.method.client_streaming
            && self.unconsumed.saturating_sub(self.partial.len()) >= max_unconsumed
    }

    fn new(
        method: Method,
        waker: Waker,
        body: RecvStream,
        respond: SendResponse<Bytes>,
        timeout_us: i64,
        metadata: Metadata,
        held: Held,
    ) -> Self {
        Stream {
            handed_to_app: method.client_streaming,
            method,
            waker,
            recv: Some(body),
            respond: Some(respond),
            send: None,
            partial: BytesMut::new(),
            unary_message: None,
            timeout_us,
            metadata,
            unconsumed: 0,
            withheld: 0,
            half_closed: false,
            pending: BytesMut::new(),
            trailers_after_pending: None,
            wants_writable: false,
            not_grpc: false,
            held,
            encoding: Encoding::Identity,
        }
    }

    /// Request bytes buffered for this call that its handler does not have yet.
    /// A message still arriving counts at the room its buffer takes (at most twice what came
    /// of it, see `make_room`).
    fn buffered(&self) -> usize {
        let partial = if self.partial.is_empty() {
            0
        } else {
            self.partial.capacity()
        };
        partial + self.unary_message.as_ref().map_or(0, Bytes::len)
    }
}

/// Whether the peer has sent the HTTP/2 greeting: the 24-byte client preface and the
/// whole of the frame after it (h2 makes sure that one is SETTINGS, or ends the
/// connection). A connection that never completes it is closed by its owner after a
/// timeout; until then h2 would wait for it forever.
#[derive(Default)]
struct Greeting {
    head: Vec<u8>,
    received: usize,
    needed: Option<usize>,
    done: bool,
}

const GREETING_HEAD: usize = 24 + 9; // the preface, then a frame header

impl Greeting {
    fn observe(&mut self, data: &[u8]) {
        if self.done {
            return;
        }
        self.received = self.received.saturating_add(data.len());
        if self.head.len() < GREETING_HEAD {
            let n = (GREETING_HEAD - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
        }
        if self.needed.is_none() && self.head.len() == GREETING_HEAD {
            let length = (usize::from(self.head[24]) << 16)
                | (usize::from(self.head[25]) << 8)
                | usize::from(self.head[26]);
            self.needed = Some(GREETING_HEAD + length);
        }
        if self.needed.is_some_and(|needed| self.received >= needed) {
            self.done = true;
            self.head = Vec::new();
        }
    }
}

enum State {
    Handshaking(Handshake<LoopIo, Bytes>),
    Open(server::Connection<LoopIo, Bytes>),
    Closed,
}

pub struct Connection {
    state: State,
    io: LoopIo,
    ready: Arc<ReadySet>,
    connection_waker: Waker,
    methods: Arc<HashMap<String, Method>>,
    settings: Settings,
    streams: HashMap<u32, Stream>,
    next_key: u32,
    events: Vec<Event>,
    response_head: HeaderMap,
    ok_trailers: HeaderMap,
    error: Option<String>,
    authority_repair: Option<AuthorityRepair>,
    keepalive: Keepalive,
    greeting: Greeting,
    /// Bytes of incomplete requests held by this connection's calls.
    incomplete: Arc<Budget>,
}

impl Connection {
    /// `repair_authority`: for Unix-socket peers, see [`AuthorityRepair`].
    pub fn new(
        methods: Arc<HashMap<String, Method>>,
        settings: Settings,
        repair_authority: bool,
    ) -> Self {
        let io = LoopIo::default();
        let incomplete_limit = settings.max_incomplete_bytes_per_connection;
        let handshake = server::Builder::new()
            .max_concurrent_streams(settings.max_concurrent_streams)
            .max_header_list_size(settings.max_header_list_bytes)
            .initial_window_size(settings.initial_window_bytes)
            .initial_connection_window_size(settings.initial_window_bytes.saturating_mul(4))
            .max_send_buffer_size(settings.max_send_buffer_bytes)
            // h2 reads all input at hand before it hands out streams: a read holding the
            // opening and the cancel of more calls than its default of 20 is no attack.
            .max_pending_accept_reset_streams(settings.max_concurrent_streams as usize)
            // Nor is a read full of a client stream's small messages (see DATA_FRAME_BUDGET).
            .data_frame_budget(DATA_FRAME_BUDGET)
            .handshake(io.clone());
        let ready = Arc::new(ReadySet::default());
        let authority_repair =
            repair_authority.then(|| AuthorityRepair::new(settings.max_header_list_bytes as usize));
        let mut response_head = HeaderMap::new();
        response_head.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        let mut ok_trailers = HeaderMap::new();
        ok_trailers.insert(
            HeaderName::from_static("grpc-status"),
            HeaderValue::from_static("0"),
        );
        let mut connection = Connection {
            state: State::Handshaking(handshake),
            io,
            connection_waker: connection_waker(&ready),
            ready,
            methods,
            settings,
            streams: HashMap::new(),
            next_key: 1,
            events: Vec::new(),
            response_head,
            ok_trailers,
            error: None,
            authority_repair,
            keepalive: Keepalive::default(),
            greeting: Greeting::default(),
            incomplete: Budget::new(incomplete_limit),
        };
        connection.drive();
        connection
    }

    /// Take received bytes, run the protocol, return what happened.
    pub fn feed(&mut self, data: &[u8]) -> Vec<Event> {
        self.greeting.observe(data);
        match self.authority_repair.as_mut() {
            None => self.io.0.borrow_mut().input.extend_from_slice(data),
            Some(repair) => {
                let mut shared = self.io.0.borrow_mut();
                if let Err(problem) = repair.process(data, &mut shared.input) {
                    drop(shared);
                    self.close(format!("malformed HTTP/2 from the peer: {problem}"));
                    return std::mem::take(&mut self.events);
                }
            }
        }
        self.drive();
        std::mem::take(&mut self.events)
    }

    /// The peer closed its side: no more input will come.
    pub fn feed_eof(&mut self) -> Vec<Event> {
        self.io.0.borrow_mut().eof = true;
        self.drive();
        std::mem::take(&mut self.events)
    }

    /// The socket is gone: every call still open ends (CANCELLED), reported as events.
    pub fn lost(&mut self) -> Vec<Event> {
        if !self.is_closed() {
            self.close("connection lost".into());
        }
        std::mem::take(&mut self.events)
    }

    /// True once the peer sent the client preface and its first frame (SETTINGS).
    pub fn greeted(&self) -> bool {
        self.greeting.done
    }

    /// Run the protocol after responses were queued; return new events.
    pub fn poll(&mut self) -> Vec<Event> {
        self.drive();
        std::mem::take(&mut self.events)
    }

    /// Hand the bytes to write to `send`, then empty the buffer (see [`LoopIo::drain_output`]).
    pub fn drain_output<R>(&mut self, send: impl FnOnce(&[u8]) -> R) -> R {
        self.io.drain_output(send)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Send a keepalive PING. False when the previous one is still unanswered: the
    /// peer is gone or stuck, and the caller should drop the connection.
    pub fn ping(&mut self) -> bool {
        let sent = self.keepalive.ping();
        self.drive();
        sent
    }

    /// Stop accepting streams (GOAWAY); open ones carry on to completion.
    pub fn graceful_shutdown(&mut self) {
        if let State::Open(connection) = &mut self.state {
            connection.graceful_shutdown();
        }
        self.drive();
    }

    /// Answer a unary-response call: headers, one message and OK trailers.
    pub fn respond(
        &mut self,
        key: u32,
        message: &[u8],
        headers: Option<HeaderMap>,
        trailers: Option<HeaderMap>,
    ) -> bool {
        let Some(stream) = self.streams.get_mut(&key) else {
            return false;
        };
        if let Some(respond) = stream.respond.as_mut() {
            let mut head = response(&self.response_head);
            if let Some(headers) = headers {
                head.headers_mut().extend(headers);
            }
            match respond.send_response(head, false) {
                Ok(send) => stream.send = Some(send),
                Err(_) => {
                    self.remove(key);
                    return false;
                }
            }
            stream.respond = None;
        }
        let mut body = BytesMut::with_capacity(PREFIX_LEN + message.len());
        frame_into(&mut body, message);
        let sent = match stream.send.as_mut() {
            Some(send) => {
                let trailers = trailers.unwrap_or_else(|| self.ok_trailers.clone());
                send.send_data(body.freeze(), false).is_ok() && send.send_trailers(trailers).is_ok()
            }
            None => false,
        };
        self.finish_stream(key);
        sent
    }

    /// Queue one message of a streaming response. Returns true when nothing is left
    /// waiting for flow control; otherwise a `Writable` event follows once it is.
    pub fn send(&mut self, key: u32, message: &[u8], headers: Option<HeaderMap>) -> bool {
        let method = self.streams.get(&key).map(|stream| stream.method.index);
        if !self.start_response(key, headers) || !self.streams.contains_key(&key) {
            // No Writable will come for a stream that is gone: tell the handler to stop.
            if let Some(method) = method {
                self.events.push(Event::Cancelled {
                    key,
                    method,
                    code: code::CANCELLED,
                });
            }
            return false;
        }
        let stream = self.streams.get_mut(&key).expect("checked above");
        frame_into(&mut stream.pending, message);
        self.ready.push(key);
        self.drive_stream_sends(key)
    }

    /// End the call with a status. Before any response headers this is a
    /// trailers-only response; after them, trailers follow the queued messages.
    pub fn finish(
        &mut self,
        key: u32,
        code: u32,
        message: &str,
        metadata: Option<HeaderMap>,
    ) -> bool {
        let Some(stream) = self.streams.get_mut(&key) else {
            return false;
        };
        let mut trailers = metadata.unwrap_or_default();
        trailers.insert(
            HeaderName::from_static("grpc-status"),
            HeaderValue::from(code),
        );
        if !message.is_empty() {
            if let Ok(value) = HeaderValue::from_str(&status::encode_message(message)) {
                trailers.insert(HeaderName::from_static("grpc-message"), value);
            }
        }
        if let Some(mut respond) = stream.respond.take() {
            let mut head = response(&self.response_head);
            head.headers_mut().extend(trailers);
            let ok = respond.send_response(head, true).is_ok();
            self.finish_stream(key);
            return ok;
        }
        if stream.pending.is_empty() {
            let ok = stream
                .send
                .as_mut()
                .is_some_and(|send| send.send_trailers(trailers).is_ok());
            self.finish_stream(key);
            ok
        } else {
            stream.trailers_after_pending = Some(trailers);
            true
        }
    }

    /// The handler consumed `n` bytes of a streaming request: h2 may be read again.
    pub fn consumed(&mut self, key: u32, n: usize) {
        let max_unconsumed = self.settings.max_unconsumed_bytes;
        if let Some(stream) = self.streams.get_mut(&key) {
            stream.unconsumed -= n.min(stream.unconsumed);
            if stream.withheld > 0 && !stream.full(max_unconsumed) {
                if let Some(recv) = stream.recv.as_mut() {
                    let _ = recv.flow_control().release_capacity(stream.withheld);
                }
                stream.withheld = 0;
            }
            self.ready.push(key);
        }
    }

    fn start_response(&mut self, key: u32, headers: Option<HeaderMap>) -> bool {
        let Some(stream) = self.streams.get_mut(&key) else {
            return false;
        };
        let Some(mut respond) = stream.respond.take() else {
            return stream.send.is_some();
        };
        let mut head = response(&self.response_head);
        if let Some(headers) = headers {
            head.headers_mut().extend(headers);
        }
        match respond.send_response(head, false) {
            Ok(send) => {
                stream.send = Some(send);
                true
            }
            Err(_) => {
                self.remove(key);
                false
            }
        }
    }

    fn finish_stream(&mut self, key: u32) {
        // The request side may still be open (a handler that answers early); dropping
        // the receiver tells h2 we will not read the rest.
        self.streams.remove(&key);
    }

    fn remove(&mut self, key: u32) {
        self.streams.remove(&key);
    }

    fn drive(&mut self) {
        loop {
            let mut progressed = self.ready.take_connection();
            progressed |= self.drive_connection();
            for key in self.ready.take_streams() {
                progressed = true;
                self.poll_stream(key);
            }
            if !progressed && !self.ready.connection_woken() {
                break;
            }
        }
    }

    fn drive_connection(&mut self) -> bool {
        let waker = self.connection_waker.clone();
        let mut cx = Context::from_waker(&waker);
        let mut progressed = self.keepalive.poll_answered(&mut cx);
        loop {
            match &mut self.state {
                State::Closed => return progressed,
                State::Handshaking(handshake) => {
                    match std::pin::Pin::new(handshake).poll(&mut cx) {
                        Poll::Ready(Ok(mut connection)) => {
                            self.keepalive.attach(connection.ping_pong());
                            self.state = State::Open(connection);
                            progressed = true;
                        }
                        Poll::Ready(Err(error)) => {
                            self.close(format!("handshake failed: {error}"));
                            return true;
                        }
                        Poll::Pending => return progressed,
                    }
                }
                State::Open(connection) => match connection.poll_accept(&mut cx) {
                    Poll::Ready(Some(Ok((request, respond)))) => {
                        progressed = true;
                        self.accept(request, respond);
                    }
                    Poll::Ready(Some(Err(error))) => {
                        self.close(format!("connection error: {error}"));
                        return true;
                    }
                    Poll::Ready(None) => {
                        self.close(String::new());
                        return true;
                    }
                    Poll::Pending => return progressed,
                },
            }
        }
    }

    fn close(&mut self, error: String) {
        self.state = State::Closed;
        if !error.is_empty() {
            self.error = Some(error);
        }
        let mut keys: Vec<u32> = self.streams.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            let stream = &self.streams[&key];
            if !stream.not_grpc {
                let event = ended_without_handler(key, stream, code::CANCELLED);
                self.events.push(event);
            }
        }
        self.streams.clear();
    }

    fn accept(&mut self, request: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
        let (parts, body) = request.into_parts();
        let grpc = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if !grpc {
            // Answered once the request has been read, as any HTTP server would: the
            // stream stays open (and counts against the stream limit) until then.
            let key = self.new_key();
            let method = Method::new(NOT_GRPC, false);
            let (waker, held) = (stream_waker(key, &self.ready), self.held());
            let mut stream = Stream::new(method, waker, body, respond, -1, None, held);
            stream.not_grpc = true;
            self.streams.insert(key, stream);
            self.ready.push(key);
            return;
        }
        let Some(method) = self.methods.get(parts.uri.path()).cloned() else {
            let message = format!("unknown method {}", parts.uri.path());
            trailers_only(
                &mut respond,
                &self.response_head,
                code::UNIMPLEMENTED,
                &message,
            );
            self.events.push(Event::Refused {
                method: UNKNOWN_METHOD,
                code: code::UNIMPLEMENTED,
                path: Some(parts.uri.path().to_owned()),
            });
            return;
        };
        let timeout_us = parts
            .headers
            .get("grpc-timeout")
            .and_then(|v| status::parse_timeout(v.as_bytes()))
            .unwrap_or(-1);
        let metadata = match status::metadata(&parts.headers) {
            Ok(metadata) => metadata,
            Err(why) => {
                trailers_only(
                    &mut respond,
                    &self.response_head,
                    code::INVALID_ARGUMENT,
                    &why,
                );
                self.events.push(Event::Refused {
                    method: method.index,
                    code: code::INVALID_ARGUMENT,
                    path: None,
                });
                return;
            }
        };
        let key = self.new_key();
        let (kept, announced) = if method.client_streaming {
            (None, metadata)
        } else {
            (metadata, None)
        };
        let (client_streaming, index) = (method.client_streaming, method.index);
        let (waker, held) = (stream_waker(key, &self.ready), self.held());
        let mut stream = Stream::new(method, waker, body, respond, timeout_us, kept, held);
        stream.encoding = Encoding::of(parts.headers.get("grpc-encoding"));
        self.streams.insert(key, stream);
        if client_streaming {
            self.events.push(Event::Open {
                key,
                method: index,
                timeout_us,
                metadata: announced,
            });
        }
        self.ready.push(key);
    }

    fn held(&self) -> Held {
        Held::new(&self.incomplete, &self.settings.incomplete_requests)
    }

    fn new_key(&mut self) -> u32 {
        let key = self.next_key;
        self.next_key = self.next_key.wrapping_add(1).max(1);
        key
    }

    fn poll_stream(&mut self, key: u32) {
        let max_message = self.settings.max_message_bytes;
        let max_unconsumed = self.settings.max_unconsumed_bytes;
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        let waker = stream.waker.clone();
        let mut cx = Context::from_waker(&waker);
        let mut failure: Option<(u32, String)> = None;
        let mut cancelled = false;

        // Messages that waited while the handler was behind (see `full`).
        if stream.method.client_streaming && !stream.partial.is_empty() {
            let limits = (max_message, max_unconsumed);
            failure = split_messages(stream, key, limits, &mut self.events).err();
        }
        loop {
            // Read before `recv` borrows the stream: a chunk polled below changes it.
            let full = stream.full(max_unconsumed);
            let Some(recv) = stream.recv.as_mut().filter(|_| failure.is_none()) else {
                break;
            };
            match recv.poll_data(&mut cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let n = chunk.len();
                    // Read on while the handler is behind, but give the client no more window:
                    // frames left in h2 instead would spend its budget for small DATA frames,
                    // and a window of small messages closed the whole connection
                    // (ENHANCE_YOUR_CALM). Only whole messages handed over count: the bytes
                    // of one still arriving are let in, or a message at the size limit could
                    // never complete.
                    if full {
                        stream.withheld += n;
                    } else {
                        let _ = recv.flow_control().release_capacity(n);
                    }
                    if stream.method.client_streaming {
                        stream.unconsumed += n;
                    }
                    if stream.not_grpc {
                        continue;
                    }
                    make_room(&mut stream.partial, chunk.len());
                    stream.partial.extend_from_slice(&chunk);
                    let limits = (max_message, max_unconsumed);
                    if let Err(problem) = split_messages(stream, key, limits, &mut self.events) {
                        failure = Some(problem);
                        break;
                    }
                    if let Err(problem) = hold(stream) {
                        failure = Some(problem);
                        break;
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    cancelled = true;
                    break;
                }
                Poll::Ready(None) => {
                    stream.recv = None;
                    if stream.not_grpc {
                        if let Some(mut respond) = stream.respond.take() {
                            reject_not_grpc(&mut respond);
                        }
                        self.streams.remove(&key);
                        return;
                    }
                    if stream.method.client_streaming {
                        // told below, once the messages waiting are handed over
                    } else if !stream.partial.is_empty() {
                        failure = Some((code::INTERNAL, "request ended inside a message".into()));
                    } else {
                        #[cfg(feature = "bench")]
                        if let (Some(_), Some(reply)) =
                            (&stream.unary_message, stream.method.fixed_reply.clone())
                        {
                            self.respond(key, &reply, None, None);
                            return;
                        }
                        match stream.unary_message.take() {
                            Some(message) => {
                                stream.held.set(0);
                                stream.handed_to_app = true;
                                self.events.push(Event::Unary {
                                    key,
                                    method: stream.method.index,
                                    message,
                                    timeout_us: stream.timeout_us,
                                    metadata: stream.metadata.take(),
                                });
                            }
                            None => {
                                failure = Some((code::INTERNAL, "request has no message".into()))
                            }
                        }
                    }
                    break;
                }
                Poll::Pending => break,
            }
        }
        let ended = stream.recv.is_none() && !stream.half_closed;
        if ended && stream.method.client_streaming && failure.is_none() && !cancelled {
            if stream.partial.is_empty() {
                stream.half_closed = true;
                self.events.push(Event::HalfClose { key });
            } else if !stream.full(max_unconsumed) {
                failure = Some((code::INTERNAL, "request ended inside a message".into()));
            }
        }

        if failure.is_none() && !cancelled && stream.handed_to_app {
            let reset = if let Some(send) = stream.send.as_mut() {
                send.poll_reset(&mut cx)
            } else if let Some(respond) = stream.respond.as_mut() {
                respond.poll_reset(&mut cx)
            } else {
                Poll::Pending
            };
            if reset.is_ready() {
                cancelled = true;
            }
        }

        if cancelled {
            if !stream.not_grpc {
                let event = ended_without_handler(key, stream, code::CANCELLED);
                self.events.push(event);
            }
            self.streams.remove(&key);
            return;
        }
        if let Some((code, message)) = failure {
            // Nothing more is read for it, even while answers it has queued still go out.
            stream.recv = None;
            stream.partial = BytesMut::new();
            stream.unary_message = None;
            stream.held.set(0);
            let event = ended_without_handler(key, stream, code);
            self.finish(key, code, &message, None);
            self.events.push(event);
            return;
        }
        self.drive_stream_sends(key);
    }

    /// Move queued response bytes into h2 as flow control allows. True when none are left.
    fn drive_stream_sends(&mut self, key: u32) -> bool {
        let Some(stream) = self.streams.get_mut(&key) else {
            return false;
        };
        if stream.pending.is_empty() {
            return true;
        }
        let Some(send) = stream.send.as_mut() else {
            return false;
        };
        let waker = stream.waker.clone();
        let mut cx = Context::from_waker(&waker);
        loop {
            if stream.pending.is_empty() {
                break;
            }
            send.reserve_capacity(stream.pending.len());
            match send.poll_capacity(&mut cx) {
                Poll::Ready(Some(Ok(0))) | Poll::Pending => {
                    stream.wants_writable = true;
                    return false;
                }
                Poll::Ready(Some(Ok(capacity))) => {
                    let n = capacity.min(stream.pending.len());
                    let chunk = stream.pending.split_to(n).freeze();
                    if send.send_data(chunk, false).is_err() {
                        self.streams.remove(&key);
                        return false;
                    }
                }
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                    let event = ended_without_handler(key, stream, code::CANCELLED);
                    self.streams.remove(&key);
                    self.events.push(event);
                    return false;
                }
            }
        }
        if let Some(trailers) = stream.trailers_after_pending.take() {
            let _ = send.send_trailers(trailers);
            self.streams.remove(&key);
            return true;
        }
        if stream.wants_writable {
            stream.wants_writable = false;
            self.events.push(Event::Writable { key });
        }
        true
    }
}

/// The method index of a stream that is not a gRPC request (answered 415, not counted).
const NOT_GRPC: u32 = u32::MAX - 1;

/// The event for a call that ends with `code` without its handler answering: `Cancelled`
/// when the application has it (its handler must stop), `Refused` when it never got it.
fn ended_without_handler(key: u32, stream: &Stream, code: u32) -> Event {
    if stream.handed_to_app {
        Event::Cancelled {
            key,
            method: stream.method.index,
            code,
        }
    } else {
        Event::Refused {
            method: stream.method.index,
            code,
            path: None,
        }
    }
}

/// Count what `stream` buffers now against its connection's and the process's bounds, or
/// the status that sheds it when a message still arriving would pass one of them.
fn hold(stream: &mut Stream) -> Result<(), (u32, String)> {
    let now = stream.buffered();
    let before = stream.held.bytes();
    // Only a message still arriving is checked: a whole one (at most a DATA frame's worth,
    // or one that was checked while it arrived) is counted and never shed.
    if now > before && !stream.partial.is_empty() {
        stream
            .held
            .check(now - before)
            .map_err(|over| (code::RESOURCE_EXHAUSTED, over.message()))?;
    }
    stream.held.set(now);
    Ok(())
}

/// Cut every complete length-prefixed message out of the stream's buffer.
fn split_messages(
    stream: &mut Stream,
    key: u32,
    (max_message, max_unconsumed): (usize, usize),
    events: &mut Vec<Event>,
) -> Result<(), (u32, String)> {
    let mut split_any = false;
    while let Some((compressed, length)) = prefix(&stream.partial) {
        if stream.full(max_unconsumed) {
            break; // the rest waits in `partial` until the handler consumes
        }
        if compressed != 0 {
            stream.encoding.check_compressed()?;
        }
        if length > max_message {
            return Err((
                code::RESOURCE_EXHAUSTED,
                format!("request message is {length} bytes, over the limit of {max_message}"),
            ));
        }
        if stream.partial.len() < PREFIX_LEN + length {
            break;
        }
        stream.partial.advance(PREFIX_LEN);
        let mut message = stream.partial.split_to(length).freeze();
        if compressed != 0 {
            message = gunzip(&message, max_message)?;
            if stream.method.client_streaming {
                // Counted as the handler will consume it (its decompressed length), or a
                // stream of small gzip bombs would queue gigabytes before reading paused; and
                // a message that shrank must count less, or each left bytes that were never
                // consumed, until the stream was full for good with its handler all caught up.
                stream.unconsumed = (stream.unconsumed + message.len()).saturating_sub(length);
            }
        }
        split_any = true;
        if stream.method.client_streaming {
            events.push(Event::Message { key, message });
        } else if stream.unary_message.replace(message).is_some() {
            return Err((
                code::UNIMPLEMENTED,
                "unary method got more than one request message".into(),
            ));
        }
    }
    if split_any {
        // What is left shares the allocation of the messages cut off before it, and would keep
        // it alive uncounted once they are handed over (as Python bytes): even an empty rest.
        // The start of the next message moves to a buffer of its own, with room to grow.
        let len = stream.partial.len();
        let room = prefix(&stream.partial).map_or(len, |(_, length)| {
            room_to_grow(len, len, Some(PREFIX_LEN + length))
        });
        regrow(&mut stream.partial, room);
    }
    Ok(())
}

/// Room in `partial` for `more` bytes, grown as [`room_to_grow`] says: at most twice what
/// came of the message, all of it counted by the budget (see `Stream::buffered`).
fn make_room(partial: &mut BytesMut, more: usize) {
    let needed = partial.len() + more;
    if partial.capacity() < needed {
        let whole = prefix(partial).map(|(_, length)| PREFIX_LEN + length);
        regrow(partial, room_to_grow(partial.len(), needed, whole));
    }
}

pub(crate) fn response(head: &HeaderMap) -> Response<()> {
    let mut response = Response::new(());
    *response.headers_mut() = head.clone();
    response
}

fn reject_not_grpc(respond: &mut SendResponse<Bytes>) {
    let reply = Response::builder()
        .status(http::StatusCode::UNSUPPORTED_MEDIA_TYPE)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(())
        .expect("static response");
    if let Ok(mut body) = respond.send_response(reply, false) {
        let text =
            Bytes::from_static(b"this endpoint serves gRPC: use content-type application/grpc\n");
        let _ = body.send_data(text, true);
    }
}

pub(crate) fn trailers_only(
    respond: &mut SendResponse<Bytes>,
    head: &HeaderMap,
    code: u32,
    message: &str,
) {
    let mut response = response(head);
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("grpc-status"),
        HeaderValue::from(code),
    );
    if let Ok(value) = HeaderValue::from_str(&status::encode_message(message)) {
        headers.insert(HeaderName::from_static("grpc-message"), value);
    }
    let _ = respond.send_response(response, true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::io::KEPT_OUTPUT_CAPACITY;
    use fluke_hpack::Encoder;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    const UNARY: &str = "/x.Y/Unary";
    const STREAMING: &str = "/x.Y/Streaming";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = payload.len();
        let mut out = vec![
            (length >> 16) as u8,
            (length >> 8) as u8,
            length as u8,
            kind,
            flags,
        ];
        out.extend(stream.to_be_bytes());
        out.extend(payload);
        out
    }

    fn greeting() -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        out.extend(frame(0x4, 0, 0, &[]));
        out
    }

    fn headers(encoder: &mut Encoder<'_>, stream: u32, path: &str, end_stream: bool) -> Vec<u8> {
        headers_with(encoder, stream, path, end_stream, &[])
    }

    /// A call's HEADERS frame with `extra` header fields after gRPC's own.
    fn headers_with(
        encoder: &mut Encoder<'_>,
        stream: u32,
        path: &str,
        end_stream: bool,
        extra: &[(&[u8], &[u8])],
    ) -> Vec<u8> {
        let mut fields = vec![
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b":authority", b"localhost"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ];
        fields.extend_from_slice(extra);
        let block = encoder.encode(fields);
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        frame(0x1, flags, stream, &block)
    }

    fn data(stream: u32, payload: &[u8], end_stream: bool) -> Vec<u8> {
        frame(
            0x0,
            if end_stream { END_STREAM } else { 0 },
            stream,
            payload,
        )
    }

    fn grpc_message(declared: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend(declared.to_be_bytes());
        out.extend(body);
        out
    }

    fn connection() -> Connection {
        connection_with(Settings {
            max_message_bytes: 100,
            ..Settings::default()
        })
    }

    fn connection_with(settings: Settings) -> Connection {
        let methods = [(UNARY, 0, false), (STREAMING, 1, true)]
            .into_iter()
            .map(|(path, index, client_streaming)| {
                (path.to_owned(), Method::new(index, client_streaming))
            })
            .collect();
        Connection::new(Arc::new(methods), settings, false)
    }

    fn greeted(connection: &mut Connection) -> Encoder<'static> {
        assert!(connection.feed(&greeting()).is_empty());
        Encoder::new()
    }

    /// A client stream's small messages, a DATA frame each, as many as one read holds: h2
    /// charges each frame under 256 bytes against a budget of half the connection window
    /// by default, and a read of more closed the connection (GOAWAY ENHANCE_YOUR_CALM)
    /// with every call on it.
    #[test]
    fn a_read_full_of_small_streamed_messages_keeps_the_connection() {
        let mut connection = connection();
        let mut encoder = greeted(&mut connection);
        let mut input = headers(&mut encoder, 1, STREAMING, false);
        let message = data(1, &grpc_message(0, b""), false);
        while input.len() + message.len() <= 256 * 1024 {
            input.extend_from_slice(&message);
        }
        connection.feed(&input);
        assert!(!connection.is_closed());
    }

    #[test]
    fn output_is_drained_and_its_buffer_kept_within_bound() {
        let mut connection = connection();
        greeted(&mut connection);
        let settings = connection.drain_output(|bytes| bytes.to_vec());
        assert!(
            !settings.is_empty(),
            "the server's SETTINGS are written first"
        );
        assert!(connection.drain_output(|bytes| bytes.is_empty()));
        assert!(connection.io.0.borrow().output.capacity() >= settings.len());
        let big = 1 << 20;
        connection.io.0.borrow_mut().output.resize(big, 0);
        assert_eq!(connection.drain_output(|bytes| bytes.len()), big);
        assert!(connection.io.0.borrow().output.capacity() <= KEPT_OUTPUT_CAPACITY);
    }

    #[test]
    fn greeting_needs_the_preface_and_the_whole_first_frame() {
        let mut connection = connection();
        assert!(!connection.greeted());
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100])); // SETTINGS_MAX_CONCURRENT_STREAMS
        for (i, byte) in input.iter().enumerate() {
            assert!(!connection.greeted(), "greeted after {i} bytes");
            connection.feed(std::slice::from_ref(byte));
        }
        assert!(connection.greeted());
        assert!(!connection.is_closed());

        let mut silent = self::connection();
        silent.feed(PREFACE);
        assert!(!silent.greeted(), "a preface alone is not the greeting");
    }

    #[test]
    fn unknown_method_is_reported_refused_with_its_path() {
        let mut connection = connection();
        let mut encoder = greeted(&mut connection);
        let events = connection.feed(&headers(&mut encoder, 1, "/x.Y/Nope", true));
        assert_eq!(
            events,
            vec![Event::Refused {
                method: UNKNOWN_METHOD,
                code: code::UNIMPLEMENTED,
                path: Some("/x.Y/Nope".into()),
            }]
        );
    }

    #[test]
    fn request_over_the_limit_is_reported_refused() {
        let mut connection = connection();
        let mut encoder = greeted(&mut connection);
        let mut input = headers(&mut encoder, 1, UNARY, false);
        input.extend(data(1, &grpc_message(101, b"x"), false));
        let events = connection.feed(&input);
        let refused = Event::Refused {
            method: 0,
            code: code::RESOURCE_EXHAUSTED,
            path: None,
        };
        assert_eq!(events, vec![refused]);
        assert_eq!(connection.open_streams(), 0);
    }

    #[test]
    fn reset_before_the_request_is_complete_is_refused_cancelled() {
        let mut connection = connection();
        let mut encoder = greeted(&mut connection);
        let mut input = headers(&mut encoder, 1, UNARY, false);
        input.extend(data(1, &grpc_message(10, b"abc"), false));
        input.extend(frame(0x3, 0, 1, &8u32.to_be_bytes())); // RST_STREAM CANCEL
        let events = connection.feed(&input);
        let refused = Event::Refused {
            method: 0,
            code: code::CANCELLED,
            path: None,
        };
        assert_eq!(events, vec![refused]);
    }

    #[test]
    fn streaming_request_over_the_limit_stops_the_handler_with_that_code() {
        let mut connection = connection();
        let mut encoder = greeted(&mut connection);
        let mut input = headers(&mut encoder, 1, STREAMING, false);
        input.extend(data(1, &grpc_message(3, b"abc"), false));
        input.extend(data(1, &grpc_message(1000, b"x"), false));
        let events = connection.feed(&input);
        assert!(matches!(
            events[0],
            Event::Open {
                key: 1,
                method: 1,
                ..
            }
        ));
        assert!(matches!(events[1], Event::Message { key: 1, .. }));
        let cancelled = Event::Cancelled {
            key: 1,
            method: 1,
            code: code::RESOURCE_EXHAUSTED,
        };
        assert_eq!(events[2..], [cancelled]);
    }

    #[test]
    fn a_lost_connection_ends_every_open_call() {
        let mut connection = connection();
        let mut encoder = greeted(&mut connection);
        let mut input = headers(&mut encoder, 1, STREAMING, false);
        input.extend(headers(&mut encoder, 3, UNARY, false)); // its request never completes
        let opened = connection.feed(&input);
        assert_eq!(opened.len(), 1);
        let mut events = connection.lost();
        events.sort_by_key(|event| matches!(event, Event::Refused { .. }));
        let cancelled = Event::Cancelled {
            key: 1,
            method: 1,
            code: code::CANCELLED,
        };
        let refused = Event::Refused {
            method: 0,
            code: code::CANCELLED,
            path: None,
        };
        assert_eq!(events, vec![cancelled, refused]);
        assert!(connection.lost().is_empty(), "reported once");
    }

    /// Limits of 100-byte messages, 150 bytes of them incomplete per connection and 250 in all.
    fn bounded() -> Settings {
        Settings {
            max_message_bytes: 100,
            max_incomplete_bytes_per_connection: 150,
            incomplete_requests: Budget::new(250),
            ..Settings::default()
        }
    }

    /// Opens unary call `stream` and sends `sent` bytes of a 100-byte message.
    fn incomplete(encoder: &mut Encoder<'_>, stream: u32, sent: usize) -> Vec<u8> {
        let mut input = headers(encoder, stream, UNARY, false);
        input.extend(data(stream, &grpc_message(100, &vec![b'x'; sent]), false));
        input
    }

    const SHED: Event = Event::Refused {
        method: 0,
        code: code::RESOURCE_EXHAUSTED,
        path: None,
    };

    #[test]
    fn incomplete_requests_past_the_connection_bound_are_shed_and_free_it() {
        let settings = bounded();
        let process = Arc::clone(&settings.incomplete_requests);
        let mut connection = connection_with(settings);
        let mut encoder = greeted(&mut connection);
        assert!(connection.feed(&incomplete(&mut encoder, 1, 90)).is_empty());
        assert_eq!(
            process.held(),
            95,
            "the prefix and the bytes of the message so far"
        );
        assert_eq!(
            connection.feed(&incomplete(&mut encoder, 3, 90)),
            vec![SHED]
        );
        assert_eq!(process.held(), 95, "the shed call holds nothing");
        assert_eq!(connection.open_streams(), 1);
        // A whole message is handed over at once: it holds nothing after.
        let mut input = headers(&mut encoder, 5, UNARY, false);
        input.extend(data(5, &grpc_message(40, &[b'y'; 40]), true));
        assert!(matches!(
            connection.feed(&input)[..],
            [Event::Unary { key: 3, .. }]
        ));
        assert_eq!(process.held(), 95);
        // The first call completes: what it held is free again.
        let events = connection.feed(&data(1, &[b'x'; 10], true));
        assert!(matches!(events[..], [Event::Unary { key: 1, .. }]));
        assert_eq!(process.held(), 0);
        assert!(connection.feed(&incomplete(&mut encoder, 7, 90)).is_empty());
        connection.lost();
        assert_eq!(
            process.held(),
            0,
            "a lost connection frees what its calls held"
        );
    }

    #[test]
    fn incomplete_requests_past_the_process_bound_are_shed_on_any_connection() {
        let settings = bounded();
        let process = Arc::clone(&settings.incomplete_requests);
        let mut first = connection_with(settings.clone());
        let mut second = connection_with(settings);
        let (mut one, mut two) = (greeted(&mut first), greeted(&mut second));
        assert!(first.feed(&incomplete(&mut one, 1, 90)).is_empty());
        assert!(second.feed(&incomplete(&mut two, 1, 90)).is_empty());
        assert_eq!(process.held(), 190);
        assert_eq!(first.feed(&incomplete(&mut one, 3, 90)), vec![SHED]);
        drop(second);
        assert_eq!(process.held(), 95);
        assert!(first.feed(&incomplete(&mut one, 5, 40)).is_empty());
        assert_eq!(process.held(), 140);
    }

    #[test]
    fn a_declared_size_alone_reserves_and_counts_nothing() {
        let settings = bounded();
        let process = Arc::clone(&settings.incomplete_requests);
        let mut connection = connection_with(settings);
        let mut encoder = greeted(&mut connection);
        for stream in [1, 3, 5] {
            assert!(connection
                .feed(&incomplete(&mut encoder, stream, 0))
                .is_empty());
        }
        assert_eq!(process.held(), 15, "three prefixes");
        let stream = connection.streams.get(&1).expect("open");
        assert_eq!(stream.partial.capacity(), 5);
    }

    #[test]
    fn a_streaming_call_holds_only_its_message_still_arriving() {
        let mut connection = connection_with(bounded());
        let mut encoder = greeted(&mut connection);
        let mut input = headers(&mut encoder, 1, STREAMING, false);
        for _ in 0..10 {
            input.extend(data(1, &grpc_message(60, &[b'z'; 60]), false));
        }
        // One DATA frame: a whole message, then the start of the next.
        let mut straddling = grpc_message(60, &[b'z'; 60]);
        straddling.extend(grpc_message(100, &[b'z'; 10]));
        input.extend(data(1, &straddling, false));
        let events = connection.feed(&input);
        assert_eq!(events.len(), 12, "opened, then eleven messages: {events:?}");
        // The start of the next message in a buffer of its own (twice its size), not the frame's.
        assert_eq!(connection.settings.incomplete_requests.held(), 30);
    }

    /// gzip makes a short message longer (its header and trailer): each such message left
    /// the bytes it shrank by counted and never consumed, and a long stream of them (a
    /// grpc-go client with gzip on, acknowledging events) was full for good, its handler
    /// all caught up.
    #[test]
    fn a_compressed_message_that_shrank_is_counted_as_its_handler_consumes_it() {
        use std::io::Write;
        let mut connection = connection();
        let mut encoder = greeted(&mut connection);
        let mut input = headers_with(
            &mut encoder,
            1,
            STREAMING,
            false,
            &[(b"grpc-encoding", b"gzip")],
        );
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(b"ack").unwrap();
        let body = gzip.finish().unwrap();
        assert!(body.len() > 3);
        let mut message = vec![1];
        message.extend((body.len() as u32).to_be_bytes());
        message.extend(&body);
        for _ in 0..10 {
            input.extend(data(1, &message, false));
        }
        let events = connection.feed(&input);
        let mut handed = 0;
        for event in &events {
            if let Event::Message { key, message } = event {
                assert_eq!(&message[..], b"ack");
                connection.consumed(*key, message.len() + PREFIX_LEN);
                handed += 1;
            }
        }
        assert_eq!(handed, 10, "{events:?}");
        assert_eq!(connection.streams[&1].unconsumed, 0);
    }

    #[test]
    fn a_message_handed_over_is_not_kept_alive_by_the_buffer_it_came_in() {
        let mut connection = connection_with(bounded());
        let mut encoder = greeted(&mut connection);
        let mut input = headers(&mut encoder, 1, STREAMING, false);
        input.extend(data(1, &grpc_message(60, &[b'z'; 60]), false));
        let events = connection.feed(&input);
        let [Event::Open { .. }, Event::Message { message, .. }] = &events[..] else {
            panic!("{events:?}");
        };
        assert!(
            message.is_unique(),
            "the stream's buffer still shares its allocation"
        );
    }

    #[test]
    fn a_shed_streaming_call_reads_no_more_while_its_answers_go_out() {
        let mut connection = connection_with(bounded());
        let mut encoder = greeted(&mut connection);
        let mut input = headers(&mut encoder, 1, STREAMING, false);
        input.extend(data(1, &grpc_message(3, b"abc"), false));
        assert_eq!(connection.feed(&input).len(), 2);
        // The client grants no window for answers: this one stays queued.
        assert!(!connection.send(1, &[b'a'; 70_000], None), "not all sent");
        assert_eq!(connection.open_streams(), 1);
        assert!(connection.feed(&incomplete(&mut encoder, 3, 90)).is_empty());
        let events = connection.feed(&data(1, &grpc_message(100, &[b'q'; 90]), false));
        let cancelled = Event::Cancelled {
            key: 1,
            method: 1,
            code: code::RESOURCE_EXHAUSTED,
        };
        assert_eq!(events, vec![cancelled]);
        assert_eq!(connection.settings.incomplete_requests.held(), 95);
        let more = connection.feed(&data(1, &grpc_message(3, b"def"), false));
        assert!(more.is_empty(), "nothing read after the shed: {more:?}");
    }

    #[test]
    fn a_message_arriving_in_pieces_takes_at_most_twice_what_came() {
        let mut partial = BytesMut::new();
        let mut message = grpc_message(100_000, &[]);
        message.extend(vec![b'm'; 100_000]);
        for piece in message.chunks(1000) {
            make_room(&mut partial, piece.len());
            partial.extend_from_slice(piece);
            assert!(partial.capacity() <= (2 * partial.len()).max(1005));
            assert!(
                partial.capacity() <= 100_005,
                "never past the declared size"
            );
        }
        assert_eq!(partial.capacity(), 100_005);
    }
}
