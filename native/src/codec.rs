//! The one codec skeleton every mesh protocol fills in.
//!
//! The proxy never looks inside a frame except through this trait: how long the frame
//! is, what kind it is and its request id, which service a request is for, how to move
//! its id onto an upstream connection, and how to answer it without an upstream
//! (heartbeats, and refusals such as "no such service" in the protocol's own status).

use bytes::BytesMut;

use crate::error::{Error, Result};

/// What a frame is, as far as forwarding cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A request that expects a response.
    Request,
    /// A request that expects none.
    Oneway,
    /// A response to a request.
    Response,
    /// A keep-alive probe; answered by whoever receives it, never forwarded.
    HeartbeatRequest,
    /// The answer to a keep-alive probe.
    HeartbeatResponse,
    /// The peer takes no new requests on this connection and answers the ones it has
    /// (Dubbo's read-only event, from a provider that is shutting down); nothing to answer.
    Closing,
    /// An event that asks for nothing (a one-way Dubbo event other than the read-only one):
    /// neither answered nor forwarded.
    Notice,
}

/// The fixed part of a frame: its kind and request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub kind: FrameKind,
    /// Bolt's are 32-bit, Dubbo's 64-bit; both fit here.
    pub request_id: u64,
}

/// What a request says about where it goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// Bolt: the `service` header (`interface:version`); Dubbo: the service path.
    pub service: String,
    /// Dubbo: the service version (may be empty); Bolt: empty.
    pub version: String,
    /// The method, where the protocol carries it outside the payload (may be empty).
    pub method: String,
    /// Bolt: the header map; Dubbo: the attachments that are strings.
    pub headers: Vec<(String, String)>,
}

impl RequestMeta {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why the proxy answers a request itself instead of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No route matches the request's service.
    NoService,
    /// A rate limit or circuit breaker refused it.
    Overloaded,
    /// The upstream did not answer within the route's timeout.
    Timeout,
    /// No upstream could be reached, or the one in use went away.
    Unavailable,
    /// The request could not be decoded far enough to route it.
    BadRequest,
}

/// One mesh protocol. Implementations are unit structs; every method is a pure function
/// of its arguments so that a connection needs no codec state beyond its splitter.
pub trait Codec: Send + Sync + 'static {
    /// Lowercase protocol name, as used in configuration and metrics.
    const NAME: &'static str;

    /// The largest request id the protocol's id field holds.
    const MAX_REQUEST_ID: u64;

    /// Length of the frame at the start of `buf`: `Ok(None)` when more bytes are needed
    /// to know it (never an error), `Err` when the header is malformed.
    fn frame_len(buf: &[u8]) -> Result<Option<u64>>;

    /// Kind and request id of one whole frame.
    fn head(frame: &[u8]) -> Result<FrameHead>;

    /// Service, version, method and, when `with_headers` (some route matches on them),
    /// headers of one whole request frame.
    fn request_meta(frame: &[u8], with_headers: bool) -> Result<RequestMeta>;

    /// The status of a whole response frame, as the protocol numbers it.
    fn response_status(frame: &[u8]) -> u16;

    /// Rewrites the request id of a whole frame in place (ids are fixed-size fields).
    /// Bolt keeps the low 32 bits.
    fn set_request_id(frame: &mut [u8], id: u64);

    /// The answer to a heartbeat request `frame`.
    fn heartbeat_reply(frame: &[u8], head: &FrameHead) -> Vec<u8>;

    /// A heartbeat request with id `id`, for active health checks of upstream hosts.
    fn heartbeat_request(id: u64) -> Vec<u8>;

    /// The protocol's own error response to request `frame`, carrying `message`.
    fn refusal(frame: &[u8], head: &FrameHead, refusal: Refusal, message: &str) -> Vec<u8>;

    /// The timeout request `frame` carries for itself, when the protocol has one and it is
    /// set; it wins over the route's, as in MOSN (a caller's per-call timeout longer than
    /// the route's must not be cut short by it).
    fn request_timeout(_frame: &[u8]) -> Option<std::time::Duration> {
        None
    }

    /// What tells a client that this connection takes no new requests (Dubbo's read-only
    /// event), when the protocol has it.
    fn closing_notice() -> Option<Vec<u8>> {
        None
    }

    /// A response `frame` rewritten for the request whose first bytes are `request_head`,
    /// when the upstream answered it in a form that request's client may not read (an
    /// upstream connection is shared by clients of every version); None: as it is.
    fn answer_as_asked(_request_head: &[u8], _frame: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// One whole frame's length against the length its header declares (`what` names the
/// frame in a truncation, `length_field` the field when there are bytes to spare). A
/// splitter never hands over either; a caller decoding bytes of its own may.
pub fn check_whole_len(
    what: &'static str,
    length_field: &'static str,
    have: usize,
    declared: u64,
) -> Result<()> {
    if (have as u64) < declared {
        return Err(Error::Truncated {
            field: what,
            need: declared,
            have,
        });
    }
    if have as u64 > declared {
        return Err(Error::field(
            length_field,
            format_args!("{have} (header declares {declared})"),
        ));
    }
    Ok(())
}

/// Why the bytes at the front of a connection's read buffer cannot be a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum BadFrame {
    /// Its header gives a length over the connection's limit.
    TooLarge(u64),
    /// Its header is not the protocol's.
    Malformed(String),
}

/// The whole frame at the front of `buffer`, split off it; `Ok(None)` while the next frame
/// is still incomplete (more bytes will come). What every mesh connection reads with, on
/// either side, however the bytes arrive.
pub fn take_frame<C: Codec>(
    buffer: &mut BytesMut,
    max: u64,
) -> std::result::Result<Option<BytesMut>, BadFrame> {
    match C::frame_len(buffer) {
        Ok(Some(n)) if n > max => Err(BadFrame::TooLarge(n)),
        // n <= max, which fits in memory: the cast is lossless
        Ok(Some(n)) if n as usize <= buffer.len() => Ok(Some(buffer.split_to(n as usize))),
        Ok(_) => Ok(None),
        Err(e) => Err(BadFrame::Malformed(e.to_string())),
    }
}
