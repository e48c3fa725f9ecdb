//! Apache Dubbo framing: 16-byte header
//! `magic 0xdabb (2) | flag (1) | status (1) | request id (i64) | body length (i32)`.
//!
//! Flag bits: `0x80` request, `0x40` two-way, `0x20` event (heartbeat), low 5 bits the
//! serialization id (hessian2 = 2). Responses carry a status byte (20 = OK). Bodies are
//! a sequence of serialized values (see `ExchangeCodec`, `DubboCodec`,
//! `DecodeableRpcInvocation` and `DecodeableRpcResult` in apache/dubbo):
//!
//! * request: dubbo version, service path, service version, method, parameter type
//!   descriptor (`Ljava/lang/String;I`), one value per parameter, attachments map;
//! * OK response: response type int (0 exception, 1 value, 2 null, 3-5 the same with
//!   attachments), the value or exception unless null, then attachments for 3-5;
//! * non-OK response: the error message string;
//! * heartbeat: event flag, body the serialization's null (`N` in hessian2).
//!
//! Only hessian2 bodies are decoded; framing, kinds, ids and heartbeats work for any
//! serialization.

use crate::codec::{check_whole_len, Codec, FrameHead, FrameKind, Refusal, RequestMeta};
use crate::error::{Error, Result};
use crate::hessian::{rename, Decoder, Encoder, Value};

pub const MAGIC: u16 = 0xdabb;
pub const HEADER_LEN: usize = 16;

pub const FLAG_REQUEST: u8 = 0x80;
pub const FLAG_TWO_WAY: u8 = 0x40;
pub const FLAG_EVENT: u8 = 0x20;
pub const SERIALIZATION_MASK: u8 = 0x1f;
/// Serialization id of hessian2, Dubbo's default.
pub const HESSIAN2: u8 = 2;

/// Response status bytes (`org.apache.dubbo.remoting.exchange.Response`).
pub const STATUS_OK: u8 = 20;
pub const STATUS_SERIALIZATION_ERROR: u8 = 25;
pub const STATUS_CLIENT_TIMEOUT: u8 = 30;
pub const STATUS_SERVER_TIMEOUT: u8 = 31;
pub const STATUS_CHANNEL_INACTIVE: u8 = 35;
pub const STATUS_BAD_REQUEST: u8 = 40;
pub const STATUS_BAD_RESPONSE: u8 = 50;
pub const STATUS_SERVICE_NOT_FOUND: u8 = 60;
pub const STATUS_SERVICE_ERROR: u8 = 70;
pub const STATUS_SERVER_ERROR: u8 = 80;
pub const STATUS_CLIENT_ERROR: u8 = 90;
pub const STATUS_SERVER_THREADPOOL_EXHAUSTED: u8 = 100;

/// Response body types (`DubboCodec.RESPONSE_*`).
pub const RESPONSE_WITH_EXCEPTION: i32 = 0;
pub const RESPONSE_VALUE: i32 = 1;
pub const RESPONSE_NULL_VALUE: i32 = 2;
/// Added to the three above when attachments follow.
const WITH_ATTACHMENTS: i32 = 3;

/// Dubbo protocol version written by current Java Dubbo (2.7 and 3.x); from 2.0.2 on,
/// providers answer with attachments.
pub const DUBBO_VERSION: &str = "2.0.2";
/// Generic invocation (`GenericService.$invoke`), as `RpcUtils.isGenericCall` tests it.
pub const GENERIC_METHOD: &str = "$invoke";
pub const GENERIC_PARAMETER_DESC: &str = "Ljava/lang/String;[Ljava/lang/String;[Ljava/lang/Object;";

const PARAM_TYPES: &str = "dubbo parameter types";
const ATTACHMENTS: &str = "dubbo attachments";
const KIND: &str = "dubbo frame kind";

/// See [`crate::frame::Protocol::frame_len`].
pub fn frame_len(buf: &[u8]) -> Result<Option<u64>> {
    let magic = MAGIC.to_be_bytes();
    match buf {
        [] => return Ok(None),
        [b0] if *b0 != magic[0] => {
            return Err(Error::field("dubbo magic", format_args!("0x{b0:02x}..")));
        }
        [b0, b1, ..] if [*b0, *b1] != magic => {
            let got = u16::from_be_bytes([*b0, *b1]);
            return Err(Error::field("dubbo magic", format_args!("0x{got:04x}")));
        }
        _ => {}
    }
    let Some(len) = buf.get(12..HEADER_LEN) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes(len.try_into().expect("4 bytes"));
    if len < 0 {
        return Err(Error::field("dubbo body length", len));
    }
    Ok(Some(HEADER_LEN as u64 + len as u64))
}

/// The fixed fields of a header.
struct Header {
    flag: u8,
    status: u8,
    id: u64,
}

impl Header {
    fn is_request(&self) -> bool {
        self.flag & FLAG_REQUEST != 0
    }

    fn is_event(&self) -> bool {
        self.flag & FLAG_EVENT != 0
    }

    fn serialization(&self) -> u8 {
        self.flag & SERIALIZATION_MASK
    }
}

/// Reads the header of `frame` (magic checked; the body is not looked at).
fn header(frame: &[u8]) -> Result<(Header, u64)> {
    let Some(total) = frame_len(frame)? else {
        return Err(Error::Truncated {
            field: "dubbo header",
            need: HEADER_LEN as u64,
            have: frame.len(),
        });
    };
    let mut id = [0; 8];
    id.copy_from_slice(&frame[4..12]);
    let h = Header {
        flag: frame[2],
        status: frame[3],
        id: u64::from_be_bytes(id),
    };
    Ok((h, total))
}

/// Header and body of one whole frame: the declared length must be the frame's.
fn split(frame: &[u8]) -> Result<(Header, &[u8])> {
    let (h, total) = header(frame)?;
    check_whole_len("dubbo frame", "dubbo frame length", frame.len(), total)?;
    Ok((h, &frame[HEADER_LEN..]))
}

/// Bodies are only decoded in hessian2; anything else cannot be routed by its content.
fn check_hessian2(h: &Header) -> Result<()> {
    match h.serialization() {
        HESSIAN2 => Ok(()),
        other => Err(Error::field(
            "dubbo serialization",
            format_args!("{other} (only hessian2 (2) is decoded)"),
        )),
    }
}

/// Whether event request `frame` (whole) carries Dubbo's read-only event: the string "R"
/// (`Request.READONLY_EVENT`) in Hessian2; a heartbeat's data is null.
fn is_read_only_event(frame: &[u8]) -> bool {
    match split(frame) {
        Ok((h, body)) if h.serialization() == HESSIAN2 => {
            // Only a string is read: whatever else the body holds is not decoded.
            matches!(Decoder::new(body).read_opt_string(), Ok(Some(s)) if s == "R")
        }
        _ => false,
    }
}

/// A decoder over the body of one whole invocation request frame.
fn request_body(frame: &[u8]) -> Result<Decoder<'_>> {
    let (h, body) = split(frame)?;
    if !h.is_request() {
        return Err(Error::field(KIND, "a response, not a request"));
    }
    if h.is_event() {
        return Err(Error::field(
            KIND,
            "an event (heartbeat), not an invocation",
        ));
    }
    check_hessian2(&h)?;
    Ok(Decoder::new(body))
}

/// Everything before the arguments of a request body.
struct CallHead {
    dubbo_version: String,
    path: String,
    version: String,
    method: String,
    param_types: String,
}

/// A string field Java may write as null (`writeUTF(null)` is `N`), read as "".
fn opt_string(d: &mut Decoder<'_>, field: &'static str) -> Result<String> {
    let s = d.read_opt_string().map_err(|e| rename(e, field))?;
    Ok(s.unwrap_or_default())
}

/// A string field Dubbo cannot do without.
fn string(d: &mut Decoder<'_>, field: &'static str) -> Result<String> {
    d.read_opt_string()
        .map_err(|e| rename(e, field))?
        .ok_or_else(|| Error::field(field, "null"))
}

impl CallHead {
    fn read(d: &mut Decoder<'_>) -> Result<Self> {
        Ok(CallHead {
            dubbo_version: opt_string(d, "dubbo version")?,
            path: string(d, "dubbo service path")?,
            version: opt_string(d, "dubbo service version")?,
            method: string(d, "dubbo method")?,
            param_types: opt_string(d, PARAM_TYPES)?,
        })
    }
}

/// Number of parameters in a JVM descriptor list such as `Ljava/lang/String;[II`:
/// one per primitive letter or `L...;` class, each with any number of `[` in front.
/// (`V` is counted as Dubbo's `ReflectUtils.DESC_PATTERN` counts it.)
pub fn parameter_count(desc: &str) -> Result<usize> {
    let b = desc.as_bytes();
    let mut at = 0;
    let mut n = 0;
    while at < b.len() {
        while b.get(at) == Some(&b'[') {
            at += 1;
        }
        match b.get(at) {
            Some(b'B' | b'C' | b'D' | b'F' | b'I' | b'J' | b'S' | b'Z' | b'V') => at += 1,
            Some(b'L') => match b[at..].iter().position(|&c| c == b';') {
                Some(end) if end > 1 => at += end + 1,
                _ => {
                    return Err(Error::field(
                        PARAM_TYPES,
                        format_args!("unterminated class at offset {at}"),
                    ))
                }
            },
            Some(&c) => {
                return Err(Error::field(
                    PARAM_TYPES,
                    format_args!("unexpected {:?} at offset {at}", char::from(c)),
                ))
            }
            None => {
                return Err(Error::field(PARAM_TYPES, "array without element type"));
            }
        }
        n += 1;
    }
    Ok(n)
}

/// The attachments map at the end of a body; entries with non-string keys are dropped
/// (Java declares it `Map<String, Object>`). A body that ends before it, or a null map,
/// has none.
fn read_attachments(d: &mut Decoder<'_>) -> Result<Vec<(String, Value)>> {
    if d.at_end() {
        return Ok(Vec::new());
    }
    match d.read_value().map_err(|e| rename(e, ATTACHMENTS))? {
        Value::Null => Ok(Vec::new()),
        Value::Map { entries, .. } => Ok(entries
            .into_iter()
            .filter_map(|(k, v)| match k {
                Value::String(k) => Some((k, v)),
                _ => None,
            })
            .collect()),
        other => Err(Error::field(
            ATTACHMENTS,
            format_args!("a {} instead of a map", other.kind()),
        )),
    }
}

/// A decoded (or to be encoded) Dubbo invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub dubbo_version: String,
    pub path: String,
    /// Empty when the consumer sent null.
    pub version: String,
    pub method: String,
    /// JVM descriptors of the parameters, e.g. `Ljava/lang/String;I`.
    pub param_types: String,
    pub args: Vec<Value>,
    pub attachments: Vec<(String, Value)>,
}

impl Invocation {
    pub fn attachment(&self, key: &str) -> Option<&Value> {
        self.attachments
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// Decodes one whole hessian2 invocation request (two-way or oneway).
pub fn decode_request(frame: &[u8]) -> Result<Invocation> {
    let mut d = request_body(frame)?;
    let head = CallHead::read(&mut d)?;
    let n = parameter_count(&head.param_types)?;
    // Every argument takes at least one byte.
    let mut args = Vec::with_capacity(n.min(d.remaining()));
    for _ in 0..n {
        args.push(d.read_value().map_err(|e| rename(e, "dubbo argument"))?);
    }
    Ok(Invocation {
        dubbo_version: head.dubbo_version,
        path: head.path,
        version: head.version,
        method: head.method,
        param_types: head.param_types,
        args,
        attachments: read_attachments(&mut d)?,
    })
}

/// A header with a zero body length, to be patched by [`finish`].
fn start(flag: u8, status: u8, id: u64, body_hint: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body_hint);
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&[flag, status]);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out
}

/// Writes the body length. Bodies over `i32::MAX` bytes cannot be framed; they are far
/// beyond any configured max_frame_size, and the length is clamped rather than panic.
fn finish(mut frame: Vec<u8>) -> Vec<u8> {
    let len = i32::try_from(frame.len() - HEADER_LEN).unwrap_or(i32::MAX);
    frame[12..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    frame
}

/// Whether a one-way event in a serialization not decoded here is the read-only one: its
/// body, quotes and whitespace aside, ends in neither "W" nor "H" (each serialization writes
/// the one-letter string last, whatever it puts before it), and is not empty.
fn read_only_event_in_other_form(frame: &[u8]) -> bool {
    let body = frame.get(HEADER_LEN..).unwrap_or_default();
    let last = body
        .iter()
        .rev()
        .find(|b| !matches!(b, b'"' | b' ' | b'\n' | b'\r'));
    last.is_some_and(|b| !matches!(b, b'W' | b'H'))
}

fn frame_with_body(flag: u8, status: u8, id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = start(flag, status, id, body.len());
    out.extend_from_slice(body);
    finish(out)
}

/// Encodes a hessian2 invocation request. The caller keeps `args` in step with
/// `param_types`; the provider reads as many values as the descriptor lists.
pub fn encode_request(id: u64, inv: &Invocation, two_way: bool) -> Vec<u8> {
    let mut flag = FLAG_REQUEST | HESSIAN2;
    if two_way {
        flag |= FLAG_TWO_WAY;
    }
    let mut e = Encoder::from_vec(start(flag, 0, id, 256));
    for s in [
        &inv.dubbo_version,
        &inv.path,
        &inv.version,
        &inv.method,
        &inv.param_types,
    ] {
        e.write_str(s);
    }
    for arg in &inv.args {
        e.write_value(arg);
    }
    e.write_str_map(&inv.attachments);
    finish(e.into_bytes())
}

/// The attachments a Dubbo consumer sends with every call (`path`, `interface`, `version`
/// when not empty) and `extra`, each unless the caller gave it already.
pub fn add_default_attachments(
    attachments: &mut Vec<(String, Value)>,
    extra: &[(&str, &str)],
    path: &str,
    version: &str,
) {
    let defaults = [("path", path), ("interface", path), ("version", version)];
    for &(key, value) in defaults.iter().chain(extra) {
        let present = attachments.iter().any(|(k, _)| k == key);
        if !present && !value.is_empty() {
            attachments.push((key.to_owned(), Value::from(value)));
        }
    }
}

/// Dubbo's `$invoke` generic call of `method(arg_types...)` on `path`: what
/// `GenericFilter` on the provider turns back into a normal call. Arguments are
/// `[method, String[] types, Object[] args]` (Hessian list types `[string` and `[object`,
/// as hessian-lite writes Java arrays). `path`, `interface`, `version` (when not empty)
/// and `generic = "true"` are added to `attachments` unless already there. The caller
/// keeps `arg_types` and `args` the same length (GenericFilter rejects otherwise).
pub fn generic_invocation(
    path: &str,
    version: &str,
    method: &str,
    arg_types: Vec<String>,
    args: Vec<Value>,
    mut attachments: Vec<(String, Value)>,
) -> Invocation {
    add_default_attachments(&mut attachments, &[("generic", "true")], path, version);
    Invocation {
        dubbo_version: DUBBO_VERSION.to_owned(),
        path: path.to_owned(),
        version: version.to_owned(),
        method: GENERIC_METHOD.to_owned(),
        param_types: GENERIC_PARAMETER_DESC.to_owned(),
        args: vec![
            Value::from(method),
            Value::List {
                type_name: Some("[string".to_owned()),
                items: arg_types.into_iter().map(Value::String).collect(),
            },
            Value::List {
                type_name: Some("[object".to_owned()),
                items: args,
            },
        ],
        attachments,
    }
}

/// What an OK response carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Value(Value),
    /// The method returned null (or void).
    Null,
    /// The method threw; usually a Java `Throwable` object.
    Exception(Value),
}

/// A decoded (or to be encoded) response to an invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u8,
    /// `Err(message)` for a non-OK status.
    pub outcome: std::result::Result<Outcome, String>,
    pub attachments: Vec<(String, Value)>,
}

impl Reply {
    pub fn ok(outcome: Outcome, attachments: Vec<(String, Value)>) -> Self {
        Reply {
            status: STATUS_OK,
            outcome: Ok(outcome),
            attachments,
        }
    }

    pub fn error(status: u8, message: impl Into<String>) -> Self {
        Reply {
            status,
            outcome: Err(message.into()),
            attachments: Vec::new(),
        }
    }
}

/// Encodes a response to request `id`. The body is hessian2 and written by `outcome`:
/// `Err` as the error message, `Ok` as a typed result; `status` and `serialization` go
/// into the header as given (pass [`HESSIAN2`], and a non-OK status with `Err`). The
/// with-attachments types (3-5) are used only when there are attachments, so that a
/// consumer older than Dubbo protocol 2.0.2 can read the rest.
pub fn encode_response(id: u64, serialization: u8, reply: &Reply) -> Vec<u8> {
    let flag = serialization & SERIALIZATION_MASK;
    let mut e = Encoder::from_vec(start(flag, reply.status, id, 64));
    match &reply.outcome {
        Err(message) => e.write_str(message),
        Ok(outcome) => {
            let (ty, value) = match outcome {
                Outcome::Exception(v) => (RESPONSE_WITH_EXCEPTION, Some(v)),
                Outcome::Value(v) => (RESPONSE_VALUE, Some(v)),
                Outcome::Null => (RESPONSE_NULL_VALUE, None),
            };
            let attach = !reply.attachments.is_empty();
            e.write_i32(if attach { ty + WITH_ATTACHMENTS } else { ty });
            if let Some(v) = value {
                e.write_value(v);
            }
            if attach {
                e.write_str_map(&reply.attachments);
            }
        }
    }
    finish(e.into_bytes())
}

/// Decodes one whole hessian2 response to an invocation (not a heartbeat response).
pub fn decode_response(frame: &[u8]) -> Result<Reply> {
    let (h, body) = split(frame)?;
    if h.is_request() {
        return Err(Error::field(KIND, "a request, not a response"));
    }
    if h.is_event() {
        return Err(Error::field(KIND, "a heartbeat response"));
    }
    check_hessian2(&h)?;
    let mut d = Decoder::new(body);
    if h.status != STATUS_OK {
        let message = if d.at_end() {
            String::new()
        } else {
            opt_string(&mut d, "dubbo error message")?
        };
        return Ok(Reply::error(h.status, message));
    }
    let ty = d.read_int().map_err(|e| rename(e, "dubbo response type"))?;
    let value = |d: &mut Decoder<'_>, field| d.read_value().map_err(|e| rename(e, field));
    let outcome = match ty {
        0 | 3 => Outcome::Exception(value(&mut d, "dubbo exception")?),
        1 | 4 => Outcome::Value(value(&mut d, "dubbo response value")?),
        2 | 5 => Outcome::Null,
        other => return Err(Error::field("dubbo response type", other)),
    };
    let attachments = if ty >= WITH_ATTACHMENTS {
        read_attachments(&mut d)?
    } else {
        Vec::new()
    };
    Ok(Reply {
        status: h.status,
        outcome: Ok(outcome),
        attachments,
    })
}

/// The status a refusal is reported with. A Java consumer (`DefaultFuture.doReceived`)
/// turns 30/31 into a `TimeoutException`, 25 into a `SerializationException` and every
/// other non-OK status into a `RemotingException` carrying the message, which failover
/// clusters retry on another address.
fn refusal_status(refusal: Refusal) -> u8 {
    match refusal {
        Refusal::NoService => STATUS_SERVICE_NOT_FOUND,
        // What a Java provider itself answers when its thread pool rejects a request
        // (`WrappedChannelHandler`), so consumers log the familiar overload error.
        Refusal::Overloaded => STATUS_SERVER_THREADPOOL_EXHAUSTED,
        // "Server side" timeout: the proxy is the server as the consumer sees it, and
        // the consumer's message then says the provider, not the network, was slow.
        Refusal::Timeout => STATUS_SERVER_TIMEOUT,
        // The status a Java consumer reports itself when the connection a request was
        // on goes away (`DefaultFuture.closeChannel`): the closest match for "no
        // upstream", and retried like a network error.
        Refusal::Unavailable => STATUS_CHANNEL_INACTIVE,
        Refusal::BadRequest => STATUS_BAD_REQUEST,
    }
}

/// The Dubbo protocol (hessian2 bodies for routing; any serialization for framing).
pub struct Dubbo;

impl Codec for Dubbo {
    const NAME: &'static str = "dubbo";
    const MAX_REQUEST_ID: u64 = u64::MAX;

    fn frame_len(buf: &[u8]) -> Result<Option<u64>> {
        frame_len(buf)
    }

    /// An event request is a heartbeat, except the read-only event ("R") a provider sends
    /// on each connection when it starts shutting down: `Closing`.
    fn head(frame: &[u8]) -> Result<FrameHead> {
        let (h, _) = header(frame)?;
        let kind = match (h.is_request(), h.is_event()) {
            (true, true) if is_read_only_event(frame) => FrameKind::Closing,
            (true, true) if h.flag & FLAG_TWO_WAY != 0 => FrameKind::HeartbeatRequest,
            // One-way: Java Dubbo answers none. In a serialization not decoded here, one is
            // taken for the read-only event ("R") unless its body ends in the writeable
            // event's "W" or the mock heartbeat's "H".
            (true, true)
                if h.serialization() != HESSIAN2 && read_only_event_in_other_form(frame) =>
            {
                FrameKind::Closing
            }
            (true, true) => FrameKind::Notice,
            (true, false) if h.flag & FLAG_TWO_WAY != 0 => FrameKind::Request,
            (true, false) => FrameKind::Oneway,
            (false, true) => FrameKind::HeartbeatResponse,
            (false, false) => FrameKind::Response,
        };
        Ok(FrameHead {
            kind,
            request_id: h.id,
        })
    }

    /// Path, version and method from the body; headers are the string-valued
    /// attachments. The arguments are decoded only to find where they end.
    fn request_meta(frame: &[u8], with_headers: bool) -> Result<RequestMeta> {
        let mut d = request_body(frame)?;
        let head = CallHead::read(&mut d)?;
        if !with_headers {
            // The attachments come after every argument: skip decoding them all.
            return Ok(RequestMeta {
                service: head.path,
                version: head.version,
                method: head.method,
                headers: Vec::new(),
            });
        }
        for _ in 0..parameter_count(&head.param_types)? {
            d.skip_value().map_err(|e| rename(e, "dubbo argument"))?;
        }
        let headers = read_attachments(&mut d)?
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(v) => Some((k, v)),
                _ => None,
            })
            .collect();
        Ok(RequestMeta {
            service: head.path,
            version: head.version,
            method: head.method,
            headers,
        })
    }

    fn response_status(frame: &[u8]) -> u16 {
        frame.get(3).map_or(0, |&s| s as u16)
    }

    fn set_request_id(frame: &mut [u8], id: u64) {
        if let Some(field) = frame.get_mut(4..12) {
            field.copy_from_slice(&id.to_be_bytes());
        }
    }

    /// Event response, status OK, same id and serialization. The body is the
    /// serialization's null, which is how Java recognises a heartbeat: `N` for
    /// hessian2, and for other serializations the request's own body (a heartbeat
    /// request's body is exactly that null).
    fn heartbeat_reply(frame: &[u8], head: &FrameHead) -> Vec<u8> {
        let serialization = frame.get(2).map_or(HESSIAN2, |f| f & SERIALIZATION_MASK);
        let body = match serialization {
            HESSIAN2 => b"N".as_slice(),
            _ => frame.get(HEADER_LEN..).unwrap_or_default(),
        };
        frame_with_body(FLAG_EVENT | serialization, STATUS_OK, head.request_id, body)
    }

    fn closing_notice() -> Option<Vec<u8>> {
        // Dubbo's read-only event: a one-way event whose data is the string "R".
        Some(frame_with_body(
            FLAG_REQUEST | FLAG_EVENT | HESSIAN2,
            0,
            0,
            b"\x01R",
        ))
    }

    fn heartbeat_request(id: u64) -> Vec<u8> {
        let flag = FLAG_REQUEST | FLAG_TWO_WAY | FLAG_EVENT | HESSIAN2;
        frame_with_body(flag, 0, id, b"N")
    }

    /// A non-OK response (see `refusal_status`) with the message as a hessian2
    /// string. Its flag says hessian2 whatever the request used: the consumer reads
    /// the message with the serialization the response names, and hessian2 is the one
    /// this codec writes (and every Java Dubbo ships).
    fn refusal(_frame: &[u8], head: &FrameHead, refusal: Refusal, message: &str) -> Vec<u8> {
        let reply = Reply::error(refusal_status(refusal), message);
        encode_response(head.request_id, HESSIAN2, &reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, FrameKind};

    #[test]
    fn frames_from_real_peers() {
        // dubbo-ssl-python's request: decoded, routed, and re-encoded byte for byte.
        let request = golden("dubbo_request_echo");
        assert_eq!(frame_len(&request).unwrap(), Some(request.len() as u64));
        let head = Dubbo::head(&request).unwrap();
        assert_eq!(head.kind, FrameKind::Request);
        let meta = Dubbo::request_meta(&request, true).unwrap();
        let lean = Dubbo::request_meta(&request, false).unwrap();
        assert_eq!(
            (
                lean.service.as_str(),
                lean.version.as_str(),
                lean.method.as_str()
            ),
            ("com.example.EchoService", "1.0", "echo")
        );
        assert!(
            lean.headers.is_empty() && meta.header("interface") == Some("com.example.EchoService")
        );
        assert_eq!(
            (
                meta.service.as_str(),
                meta.version.as_str(),
                meta.method.as_str()
            ),
            ("com.example.EchoService", "1.0", "echo")
        );
        let invocation = decode_request(&request).unwrap();
        assert_eq!(invocation.dubbo_version, "2.4.10");
        assert_eq!(invocation.args, vec![Value::String("hello".into())]);
        assert_eq!(encode_request(head.request_id, &invocation, true), request);

        // dubbo-py's answers.
        let answer = decode_response(&golden("dubbo_response_echo")).unwrap();
        assert_eq!(answer.status, STATUS_OK);
        assert_eq!(
            answer.outcome,
            Ok(Outcome::Value(Value::String("hello".into())))
        );
        assert_eq!(
            encode_response(0, HESSIAN2, &answer),
            golden("dubbo_response_echo")
        );
        let error = decode_response(&golden("dubbo_response_error")).unwrap();
        assert_eq!(
            (error.status, error.outcome),
            (90, Err("asked to fail".into()))
        );

        // Heartbeats: the client's probe, and the answer a Java-style peer gives (status 20).
        let probe = golden("dubbo_heartbeat_request");
        let head = Dubbo::head(&probe).unwrap();
        assert_eq!(head.kind, FrameKind::HeartbeatRequest);
        let mut expected = golden("dubbo_client_heartbeat_response");
        expected[4..12].copy_from_slice(&head.request_id.to_be_bytes());
        assert_eq!(Dubbo::heartbeat_reply(&probe, &head), expected);
        assert_eq!(
            Dubbo::head(&golden("dubbo_heartbeat_response"))
                .unwrap()
                .kind,
            FrameKind::HeartbeatResponse
        );
    }

    #[test]
    fn the_read_only_event_is_closing_and_other_events_heartbeats() {
        // What a Java provider sends on each connection as it starts shutting down:
        // a one-way event whose data is the string "R" (`Request.READONLY_EVENT`).
        let read_only = frame_with_body(FLAG_REQUEST | FLAG_EVENT | HESSIAN2, 0, 7, b"\x01R");
        assert_eq!(Dubbo::head(&read_only).unwrap().kind, FrameKind::Closing);
        // The same in another serialization (fastjson2's "R"): not decoded, still read-only;
        // its writeable event ("W", a provider back in service) is not.
        let fastjson2 = frame_with_body(FLAG_REQUEST | FLAG_EVENT | 23, 0, 7, b"\"R\"");
        assert_eq!(Dubbo::head(&fastjson2).unwrap().kind, FrameKind::Closing);
        let writeable = frame_with_body(FLAG_REQUEST | FLAG_EVENT | 23, 0, 7, b"\"W\"");
        assert_eq!(Dubbo::head(&writeable).unwrap().kind, FrameKind::Notice);
        // Java serialization (3) writes a stream header and the string's length first.
        let java = frame_with_body(
            FLAG_REQUEST | FLAG_EVENT | 3,
            0,
            7,
            b"\xac\xed\x00\x05\x77\x01\x01\x74\x00\x01R",
        );
        assert_eq!(Dubbo::head(&java).unwrap().kind, FrameKind::Closing);
        let empty = frame_with_body(FLAG_REQUEST | FLAG_EVENT | 23, 0, 7, b"");
        assert_eq!(Dubbo::head(&empty).unwrap().kind, FrameKind::Notice);
        assert_eq!(
            Dubbo::head(&Dubbo::closing_notice().unwrap()).unwrap().kind,
            FrameKind::Closing,
            "the mesh's own notice to its clients reads as the read-only event"
        );
        // Other one-way events ask for nothing; a two-way one is a heartbeat.
        let other = frame_with_body(FLAG_REQUEST | FLAG_EVENT | HESSIAN2, 0, 8, b"\x01X");
        assert_eq!(Dubbo::head(&other).unwrap().kind, FrameKind::Notice);
        // Only a string is read from an event: a list, however large, is not decoded.
        let mut list = vec![0x57];
        list.extend(std::iter::repeat_n(b'N', 1 << 20));
        list.push(b'Z');
        let list = frame_with_body(FLAG_REQUEST | FLAG_EVENT | HESSIAN2, 0, 8, &list);
        assert_eq!(Dubbo::head(&list).unwrap().kind, FrameKind::Notice);
        let null_one_way = frame_with_body(FLAG_REQUEST | FLAG_EVENT | HESSIAN2, 0, 8, b"N");
        assert_eq!(Dubbo::head(&null_one_way).unwrap().kind, FrameKind::Notice);
        let two_way = frame_with_body(
            FLAG_REQUEST | FLAG_EVENT | FLAG_TWO_WAY | HESSIAN2,
            0,
            8,
            b"N",
        );
        assert_eq!(
            Dubbo::head(&two_way).unwrap().kind,
            FrameKind::HeartbeatRequest
        );
        let beat = Dubbo::heartbeat_request(9);
        assert_eq!(
            Dubbo::head(&beat).unwrap().kind,
            FrameKind::HeartbeatRequest
        );
    }

    #[test]
    fn frames_from_java_dubbo() {
        let request = golden("dubbo_request_java");
        let head = Dubbo::head(&request).unwrap();
        assert_eq!(head.kind, FrameKind::Request);
        let meta = Dubbo::request_meta(&request, true).unwrap();
        assert_eq!(
            (
                meta.service.as_str(),
                meta.version.as_str(),
                meta.method.as_str()
            ),
            ("com.example.EchoService", "1.0", "echo")
        );
        assert_eq!(
            meta.header("remote.application"),
            Some("interop-dubbo-consumer")
        );
        let invocation = decode_request(&request).unwrap();
        assert_eq!(invocation.dubbo_version, "2.0.2");
        assert_eq!(invocation.args, vec![Value::String("echo-0".into())]);
        assert_eq!(
            encode_request(head.request_id, &invocation, true),
            request,
            "Java's request re-encodes byte for byte"
        );
        let response = golden("dubbo_response_java");
        let reply = decode_response(&response).unwrap();
        assert_eq!(
            reply.outcome,
            Ok(Outcome::Value(Value::String("echo-0".into())))
        );
        assert_eq!(
            reply.attachments,
            vec![("dubbo".to_string(), Value::String("2.0.2".into()))]
        );
        assert_eq!(
            encode_response(Dubbo::head(&response).unwrap().request_id, HESSIAN2, &reply),
            response
        );
        let beat = golden("dubbo_heartbeat_request_java");
        let beat_head = Dubbo::head(&beat).unwrap();
        assert_eq!(beat_head.kind, FrameKind::HeartbeatRequest);
        assert_eq!(
            Dubbo::heartbeat_reply(&beat, &beat_head),
            golden("dubbo_heartbeat_response_java")
        );
    }

    use crate::testdata::*;

    #[test]
    fn golden_frame_len() {
        let hb = hex(DUBBO_HEARTBEAT);
        assert_eq!(hb.len(), 17);
        assert_eq!(frame_len(&hb).unwrap(), Some(17));
        assert_eq!(frame_len(&hb[..16]).unwrap(), Some(17));
        for n in 0..16 {
            assert_eq!(frame_len(&hb[..n]).unwrap(), None, "prefix {n}");
        }
        assert_eq!(frame_len(&hex(DUBBO_EMPTY_BODY)).unwrap(), Some(16));
    }

    #[test]
    fn bad_magic() {
        assert_eq!(
            frame_len(&[0xdb]).unwrap_err().to_string(),
            "invalid dubbo magic: 0xdb.."
        );
        assert_eq!(
            frame_len(&[0xda, 0xbb - 1, 0]).unwrap_err().to_string(),
            "invalid dubbo magic: 0xdaba"
        );
    }

    fn echo_invocation() -> Invocation {
        let path = "com.example.EchoService";
        Invocation {
            dubbo_version: "2.0.2".into(),
            path: path.into(),
            version: "1.0".into(),
            method: "echo".into(),
            param_types: "Ljava/lang/String;".into(),
            args: vec![Value::from("hello")],
            attachments: vec![
                ("path".into(), Value::from(path)),
                ("interface".into(), Value::from(path)),
                ("version".into(), Value::from("1.0")),
                ("timeout".into(), Value::Int(3000)),
            ],
        }
    }

    fn golden_frames() -> Vec<Vec<u8>> {
        [
            DUBBO_HEARTBEAT,
            DUBBO_EMPTY_BODY,
            DUBBO_HEARTBEAT_REPLY,
            DUBBO_ECHO_REQUEST,
            DUBBO_RESPONSE_VALUE,
            DUBBO_RESPONSE_NULL,
            DUBBO_RESPONSE_VALUE_ATTACHMENTS,
            DUBBO_RESPONSE_NULL_ATTACHMENTS,
            DUBBO_RESPONSE_EXCEPTION,
            DUBBO_RESPONSE_EXCEPTION_ATTACHMENTS,
            DUBBO_RESPONSE_SERVICE_ERROR,
            DUBBO_REFUSAL_NO_SERVICE,
        ]
        .iter()
        .map(|h| hex(h))
        .collect()
    }

    #[test]
    fn golden_lengths_match_headers() {
        for frame in golden_frames() {
            assert_eq!(
                frame_len(&frame).unwrap(),
                Some(frame.len() as u64),
                "{frame:02x?}"
            );
        }
    }

    #[test]
    fn heads() {
        let head = |h: &str| Dubbo::head(&hex(h)).unwrap();
        assert_eq!(
            head(DUBBO_HEARTBEAT),
            FrameHead {
                kind: FrameKind::HeartbeatRequest,
                request_id: 1
            }
        );
        assert_eq!(
            head(DUBBO_HEARTBEAT_REPLY).kind,
            FrameKind::HeartbeatResponse
        );
        assert_eq!(
            head(DUBBO_ECHO_REQUEST),
            FrameHead {
                kind: FrameKind::Request,
                request_id: 7
            }
        );
        assert_eq!(head(DUBBO_RESPONSE_VALUE).kind, FrameKind::Response);
        assert_eq!(head(DUBBO_RESPONSE_SERVICE_ERROR).kind, FrameKind::Response);
        let mut oneway = hex(DUBBO_ECHO_REQUEST);
        oneway[2] &= !FLAG_TWO_WAY;
        assert_eq!(Dubbo::head(&oneway).unwrap().kind, FrameKind::Oneway);
        // Only the header is needed.
        assert_eq!(Dubbo::head(&oneway[..16]).unwrap().request_id, 7);
        assert_eq!(
            Dubbo::head(&oneway[..15]).unwrap_err().to_string(),
            "truncated dubbo header: need 16 bytes, have 15"
        );
        assert_eq!(
            Dubbo::head(&[0xda, 0xbc]).unwrap_err().to_string(),
            "invalid dubbo magic: 0xdabc"
        );
        let mut big_id = hex(DUBBO_HEARTBEAT);
        Dubbo::set_request_id(&mut big_id, u64::MAX - 1);
        assert_eq!(Dubbo::head(&big_id).unwrap().request_id, u64::MAX - 1);
        Dubbo::set_request_id(&mut big_id[..5], 9); // too short: left alone
    }

    #[test]
    fn heartbeat() {
        assert_eq!(Dubbo::heartbeat_request(1), hex(DUBBO_HEARTBEAT));
        let hb = hex(DUBBO_HEARTBEAT);
        let head = Dubbo::head(&hb).unwrap();
        assert_eq!(
            Dubbo::heartbeat_reply(&hb, &head),
            hex(DUBBO_HEARTBEAT_REPLY)
        );
        // Another serialization: its own flag bits, and the request's body echoed.
        // 0xf7: request | two-way | event | serialization 23.
        let other = hex("dabb f7 00 0000000000000003 00000004 6e756c6c");
        let head = Dubbo::head(&other).unwrap();
        assert_eq!(
            Dubbo::heartbeat_reply(&other, &head),
            hex("dabb 37 14 0000000000000003 00000004 6e756c6c")
        );
        assert_eq!(Dubbo::NAME, "dubbo");
    }

    #[test]
    fn golden_request() {
        let frame = hex(DUBBO_ECHO_REQUEST);
        assert_eq!(encode_request(7, &echo_invocation(), true), frame);
        assert_eq!(decode_request(&frame).unwrap(), echo_invocation());
        let meta = Dubbo::request_meta(&frame, true).unwrap();
        assert_eq!(meta.service, "com.example.EchoService");
        assert_eq!(meta.version, "1.0");
        assert_eq!(meta.method, "echo");
        assert_eq!(
            meta.headers,
            [
                ("path", "com.example.EchoService"),
                ("interface", "com.example.EchoService"),
                ("version", "1.0"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(meta.header("timeout"), None);
        let oneway = encode_request(7, &echo_invocation(), false);
        assert_eq!(oneway[2], FLAG_REQUEST | HESSIAN2);
        assert_eq!(&oneway[3..], &frame[3..]);
    }

    #[test]
    fn request_meta_skips_complex_arguments() {
        let obj = Value::Object {
            class_name: "com.example.Dto".into(),
            fields: vec![
                ("id".into(), Value::Long(5)),
                (
                    "tags".into(),
                    Value::List {
                        type_name: None,
                        items: vec![Value::from("a"); 3],
                    },
                ),
            ],
        };
        let inv = Invocation {
            dubbo_version: DUBBO_VERSION.into(),
            path: "p.S".into(),
            version: String::new(),
            method: "m".into(),
            param_types: "IJ[Ljava/lang/String;Lcom/example/Dto;[[DZLcom/example/Dto;".into(),
            args: vec![
                Value::Int(1),
                Value::Long(2),
                Value::List {
                    type_name: Some("[string".into()),
                    items: vec![Value::from("x")],
                },
                obj.clone(),
                Value::Null,
                Value::Bool(true),
                obj,
            ],
            attachments: vec![
                ("k".into(), Value::from("v")),
                ("n".into(), Value::Null),
                ("group".into(), Value::from("g")),
            ],
        };
        let frame = encode_request(u64::MAX, &inv, true);
        assert_eq!(decode_request(&frame).unwrap(), inv);
        let meta = Dubbo::request_meta(&frame, true).unwrap();
        assert_eq!((meta.service.as_str(), meta.version.as_str()), ("p.S", ""));
        assert_eq!(meta.header("k"), Some("v"));
        assert_eq!(meta.header("group"), Some("g"));
        assert_eq!(meta.headers.len(), 2);
    }

    #[test]
    fn null_fields_and_missing_attachments() {
        // Version null, descriptor "", no attachments at all.
        let body = hex("05 322e302e32 01 53 4e 01 6d 00");
        let mut frame = start(0xc2, 0, 1, body.len());
        frame.extend_from_slice(&body);
        let frame = finish(frame);
        let meta = Dubbo::request_meta(&frame, true).unwrap();
        assert_eq!(
            (
                meta.service.as_str(),
                meta.version.as_str(),
                meta.method.as_str()
            ),
            ("S", "", "m")
        );
        assert!(meta.headers.is_empty());
        // A null path is an error naming the field.
        let body = hex("05 322e302e32 4e 4e 01 6d 00");
        let mut frame = start(0xc2, 0, 1, body.len());
        frame.extend_from_slice(&body);
        assert_eq!(
            Dubbo::request_meta(&finish(frame), true)
                .unwrap_err()
                .to_string(),
            "invalid dubbo service path: null"
        );
    }

    #[test]
    fn parameter_counts() {
        for (desc, n) in [
            ("", 0),
            ("I", 1),
            ("Ljava/lang/String;I", 2),
            ("BCDFIJSZ", 8),
            ("[I[[Ljava/lang/Object;", 2),
            (GENERIC_PARAMETER_DESC, 3),
        ] {
            assert_eq!(parameter_count(desc).unwrap(), n, "{desc}");
        }
        let err = |d| parameter_count(d).unwrap_err().to_string();
        assert_eq!(
            err("Ljava/lang/String"),
            "invalid dubbo parameter types: unterminated class at offset 0"
        );
        assert_eq!(
            err("IL;"),
            "invalid dubbo parameter types: unterminated class at offset 1"
        );
        assert_eq!(
            err("I["),
            "invalid dubbo parameter types: array without element type"
        );
        assert_eq!(
            err("Ix"),
            "invalid dubbo parameter types: unexpected 'x' at offset 1"
        );
    }

    #[test]
    fn golden_responses() {
        let hello = Value::from("hello");
        let boom = Value::Object {
            class_name: "java.lang.RuntimeException".into(),
            fields: vec![("detailMessage".into(), Value::from("boom"))],
        };
        let version = vec![("dubbo".to_owned(), Value::from("2.0.2"))];
        let cases = [
            (
                DUBBO_RESPONSE_VALUE,
                Reply::ok(Outcome::Value(hello.clone()), vec![]),
            ),
            (DUBBO_RESPONSE_NULL, Reply::ok(Outcome::Null, vec![])),
            (
                DUBBO_RESPONSE_VALUE_ATTACHMENTS,
                Reply::ok(Outcome::Value(hello), version),
            ),
            (
                DUBBO_RESPONSE_EXCEPTION,
                Reply::ok(Outcome::Exception(boom.clone()), vec![]),
            ),
            (
                DUBBO_RESPONSE_SERVICE_ERROR,
                Reply::error(STATUS_SERVICE_ERROR, "boom"),
            ),
        ];
        for (h, reply) in cases {
            let frame = hex(h);
            assert_eq!(decode_response(&frame).unwrap(), reply, "{h}");
            assert_eq!(encode_response(7, HESSIAN2, &reply), frame, "{h}");
        }
        // Types 3 and 5 with an empty map read back like 0 and 2.
        assert_eq!(
            decode_response(&hex(DUBBO_RESPONSE_EXCEPTION_ATTACHMENTS)).unwrap(),
            Reply::ok(Outcome::Exception(boom), vec![])
        );
        assert_eq!(
            decode_response(&hex(DUBBO_RESPONSE_NULL_ATTACHMENTS)).unwrap(),
            Reply::ok(Outcome::Null, vec![])
        );
        let with = Reply::ok(Outcome::Null, vec![("a".into(), Value::Int(1))]);
        let frame = encode_response(1, HESSIAN2, &with);
        assert_eq!(frame[HEADER_LEN], 0x95);
        assert_eq!(decode_response(&frame).unwrap(), with);
        let exc = Reply::ok(
            Outcome::Exception(Value::Null),
            vec![("a".into(), Value::Null)],
        );
        let frame = encode_response(1, HESSIAN2, &exc);
        assert_eq!(frame[HEADER_LEN], 0x93);
        assert_eq!(decode_response(&frame).unwrap(), exc);
    }

    #[test]
    fn refusals() {
        let req = hex(DUBBO_ECHO_REQUEST);
        let head = Dubbo::head(&req).unwrap();
        let frame = Dubbo::refusal(&req, &head, Refusal::NoService, "no route");
        assert_eq!(frame, hex(DUBBO_REFUSAL_NO_SERVICE));
        for (refusal, status) in [
            (Refusal::NoService, 60),
            (Refusal::Overloaded, 100),
            (Refusal::Timeout, 31),
            (Refusal::Unavailable, 35),
            (Refusal::BadRequest, 40),
        ] {
            let frame = Dubbo::refusal(&req, &head, refusal, "nope ü");
            let reply = decode_response(&frame).unwrap();
            assert_eq!(reply, Reply::error(status, "nope ü"));
            assert_eq!(
                Dubbo::head(&frame).unwrap(),
                FrameHead {
                    kind: FrameKind::Response,
                    request_id: 7
                }
            );
        }
        // Works on a frame that could not be parsed at all.
        let frame = Dubbo::refusal(&[], &head, Refusal::BadRequest, "");
        assert_eq!(decode_response(&frame).unwrap(), Reply::error(40, ""));
    }

    #[test]
    fn generic() {
        let inv = generic_invocation(
            "com.example.EchoService",
            "1.0",
            "echo",
            vec!["java.lang.String".into()],
            vec![Value::from("hi")],
            vec![("group".into(), Value::from("g"))],
        );
        assert_eq!(inv.method, "$invoke");
        assert_eq!(inv.param_types, GENERIC_PARAMETER_DESC);
        assert_eq!(inv.attachment("generic"), Some(&Value::from("true")));
        assert_eq!(
            inv.attachment("path"),
            Some(&Value::from("com.example.EchoService"))
        );
        assert_eq!(inv.attachment("group"), Some(&Value::from("g")));
        let frame = encode_request(3, &inv, true);
        assert_eq!(decode_request(&frame).unwrap(), inv);
        // The arguments as hessian-lite writes them: "echo", a typed "[string" list, a
        // typed "[object" list.
        let args = hex("04 6563686f
             71 07 5b737472696e67 10 6a6176612e6c616e672e537472696e67
             71 07 5b6f626a656374 02 6869");
        assert!(frame.windows(args.len()).any(|w| w == args), "{frame:02x?}");
        let meta = Dubbo::request_meta(&frame, true).unwrap();
        assert_eq!(meta.method, "$invoke");
        // An explicit generic attachment wins; no version, no version attachment.
        let inv = generic_invocation(
            "S",
            "",
            "m",
            vec![],
            vec![],
            vec![("generic".into(), Value::from("gson"))],
        );
        assert_eq!(inv.attachment("generic"), Some(&Value::from("gson")));
        assert_eq!(inv.attachment("version"), None);
    }

    #[test]
    fn decode_errors() {
        let req = hex(DUBBO_ECHO_REQUEST);
        let meta_err = |f: &[u8]| Dubbo::request_meta(f, true).unwrap_err().to_string();
        assert_eq!(
            meta_err(&req[..10]),
            "truncated dubbo header: need 16 bytes, have 10"
        );
        assert_eq!(
            meta_err(&req[..100]),
            "truncated dubbo frame: need 168 bytes, have 100"
        );
        let mut long = req.clone();
        long.push(0);
        assert_eq!(
            meta_err(&long),
            "invalid dubbo frame length: 169 (header declares 168)"
        );
        assert_eq!(
            meta_err(&hex(DUBBO_HEARTBEAT)),
            "invalid dubbo frame kind: an event (heartbeat), not an invocation"
        );
        assert_eq!(
            meta_err(&hex(DUBBO_RESPONSE_VALUE)),
            "invalid dubbo frame kind: a response, not a request"
        );
        let mut kryo = req.clone();
        kryo[2] = 0xc8;
        assert_eq!(
            meta_err(&kryo),
            "invalid dubbo serialization: 8 (only hessian2 (2) is decoded)"
        );
        // Path length past the end of the body.
        let mut bad = req.clone();
        bad[22] = 0x30 + 3;
        assert!(
            meta_err(&bad).starts_with("truncated dubbo service path"),
            "{}",
            meta_err(&bad)
        );
        // Path that is an int.
        let mut bad = req.clone();
        bad[22] = 0x91;
        assert_eq!(
            meta_err(&bad),
            "invalid dubbo service path: unexpected code 0x91 (hessian string)"
        );
        // A descriptor declaring two arguments over a body holding one and no map.
        let body = hex("05 322e302e32 01 53 00 01 6d 02 4949 91");
        let mut frame = start(0xc2, 0, 1, body.len());
        frame.extend_from_slice(&body);
        assert_eq!(
            meta_err(&finish(frame)),
            "truncated dubbo argument: need 1 bytes, have 0"
        );
        // Attachments that are not a map.
        let mut inv = echo_invocation();
        inv.attachments.clear();
        let mut frame = encode_request(7, &inv, true);
        let at = frame.len() - 2;
        frame.truncate(at);
        frame.push(0x91);
        let frame = finish(frame);
        assert_eq!(
            meta_err(&frame),
            "invalid dubbo attachments: a int instead of a map"
        );

        let resp_err = |f: &[u8]| decode_response(f).unwrap_err().to_string();
        assert_eq!(
            resp_err(&req),
            "invalid dubbo frame kind: a request, not a response"
        );
        assert_eq!(
            resp_err(&hex(DUBBO_HEARTBEAT_REPLY)),
            "invalid dubbo frame kind: a heartbeat response"
        );
        let mut bad = hex(DUBBO_RESPONSE_NULL);
        bad[16] = 0x96;
        assert_eq!(resp_err(&bad), "invalid dubbo response type: 6");
        bad[16] = 0x4e;
        assert_eq!(
            resp_err(&bad),
            "invalid dubbo response type: unexpected code 0x4e (hessian int)"
        );
        assert_eq!(
            resp_err(&hex(DUBBO_EMPTY_BODY)),
            "truncated dubbo response type: need 1 bytes, have 0"
        );
        let mut bad = hex(DUBBO_RESPONSE_VALUE);
        bad[17] = 0x06;
        bad.push(b'!'); // keeps the declared length wrong on purpose
        assert!(resp_err(&bad).starts_with("invalid dubbo frame length"));
        let empty_error = hex("dabb 02 50 0000000000000007 00000000");
        assert_eq!(decode_response(&empty_error).unwrap(), Reply::error(80, ""));
    }

    /// Every prefix of every golden frame, and a few byte flips, through every decoding
    /// entry point: errors are fine, panics are not.
    #[test]
    fn fuzz_golden_frames() {
        let poke = |f: &[u8]| {
            let _ = frame_len(f);
            if let Ok(head) = Dubbo::head(f) {
                let _ = Dubbo::heartbeat_reply(f, &head);
                let _ = Dubbo::refusal(f, &head, Refusal::Timeout, "t");
            }
            let _ = Dubbo::request_meta(f, true);
            let _ = Dubbo::request_meta(f, false);
            let _ = decode_request(f);
            let _ = decode_response(f);
            let mut copy = f.to_vec();
            Dubbo::set_request_id(&mut copy, 42);
        };
        let mut frames = golden_frames();
        frames.push(encode_request(
            9,
            &generic_invocation(
                "a.B",
                "1",
                "m",
                vec!["I".into()],
                vec![Value::Int(1)],
                vec![],
            ),
            true,
        ));
        for frame in &frames {
            for n in 0..=frame.len() {
                poke(&frame[..n]);
                // The prefix with its length field fixed up, so the body parser sees it.
                if n >= HEADER_LEN {
                    let mut fixed = frame[..n].to_vec();
                    fixed[12..16].copy_from_slice(&((n - HEADER_LEN) as u32).to_be_bytes());
                    poke(&fixed);
                }
            }
            for i in 0..frame.len() {
                for x in [0x01u8, 0x08, 0x40, 0x80, 0xff] {
                    let mut b = frame.clone();
                    b[i] ^= x;
                    poke(&b);
                }
            }
        }
    }
}
