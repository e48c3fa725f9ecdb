//! SOFA Bolt framing and decoding (v1 and v2) and the v1 request/response encoders.
//!
//! All integers are big-endian. v1 request header (22 bytes):
//! `proto=1 | type | cmdcode(2) | ver2 | request id(4) | codec | timeout(i32) |
//!  class len(i16) | header len(i16) | content len(i32)`.
//! v1 response header (20 bytes) has `respstatus(2)` where the request has the timeout.
//! v2 adds `ver1` after `proto` and `switch` after `codec` (24 / 22 bytes); when `ver1`
//! is 2 and the switch has its CRC bit, a 4-byte CRC32 follows the content. (SOFA Bolt
//! sets the CRC bit by default but writes and reads the CRC only for `ver1` 2.)

use crate::codec::{check_whole_len, Codec, FrameHead, FrameKind, Refusal, RequestMeta};
use crate::error::{Error, Result};
use std::time::Duration;

pub const PROTO_V1: u8 = 1;
pub const PROTO_V2: u8 = 2;

pub const TYPE_RESPONSE: u8 = 0;
pub const TYPE_REQUEST: u8 = 1;
pub const TYPE_ONEWAY: u8 = 2;

pub const CMD_HEARTBEAT: u16 = 0;
pub const CMD_REQUEST: u16 = 1;
pub const CMD_RESPONSE: u16 = 2;
/// MOSN's control command: the peer takes no new requests on this connection.
pub const CMD_GOAWAY: u16 = 100;

pub const VER2: u8 = 1;
pub const CODEC_HESSIAN2: u8 = 1;
pub const SWITCH_CRC: u8 = 0x01;
/// The v2 `ver1` without a CRC32, and the one whose frames carry it when the switch asks.
pub const VER1: u8 = 1;
pub const VER1_CRC: u8 = 2;

pub const REQUEST_HEADER_LEN_V1: usize = 22;
pub const RESPONSE_HEADER_LEN_V1: usize = 20;
pub const REQUEST_HEADER_LEN_V2: usize = 24;
pub const RESPONSE_HEADER_LEN_V2: usize = 22;
const CRC_LEN: u64 = 4;

/// Where the fixed fields sit for one (version, type) pair.
struct Layout {
    header_len: usize,
    /// Offset of `class len`; `header len` and `content len` follow it.
    lengths_at: usize,
}

fn layout(proto: u8, ty: u8) -> Result<Layout> {
    let request = match ty {
        TYPE_REQUEST | TYPE_ONEWAY => true,
        TYPE_RESPONSE => false,
        other => return Err(Error::field("bolt type", other)),
    };
    Ok(match (proto, request) {
        (PROTO_V1, true) => Layout {
            header_len: REQUEST_HEADER_LEN_V1,
            lengths_at: 14,
        },
        (PROTO_V1, false) => Layout {
            header_len: RESPONSE_HEADER_LEN_V1,
            lengths_at: 12,
        },
        (_, true) => Layout {
            header_len: REQUEST_HEADER_LEN_V2,
            lengths_at: 16,
        },
        (_, false) => Layout {
            header_len: RESPONSE_HEADER_LEN_V2,
            lengths_at: 14,
        },
    })
}

fn be16(b: &[u8], at: usize) -> [u8; 2] {
    [b[at], b[at + 1]]
}

fn be32(b: &[u8], at: usize) -> [u8; 4] {
    [b[at], b[at + 1], b[at + 2], b[at + 3]]
}

/// Class, header and content lengths, validated non-negative.
fn lengths(buf: &[u8], at: usize) -> Result<(usize, usize, usize)> {
    let class = i16::from_be_bytes(be16(buf, at));
    if class < 0 {
        return Err(Error::field("bolt class length", class));
    }
    let header = i16::from_be_bytes(be16(buf, at + 2));
    if header < 0 {
        return Err(Error::field("bolt header length", header));
    }
    let content = i32::from_be_bytes(be32(buf, at + 4));
    if content < 0 {
        return Err(Error::field("bolt content length", content));
    }
    Ok((class as usize, header as usize, content as usize))
}

/// See [`crate::frame::Protocol::frame_len`].
pub fn frame_len(buf: &[u8]) -> Result<Option<u64>> {
    let Some(&proto) = buf.first() else {
        return Ok(None);
    };
    let type_at = match proto {
        PROTO_V1 => 1,
        PROTO_V2 => 2,
        other => return Err(Error::field("bolt proto", other)),
    };
    // A SOFA Bolt server reads no v2 frame of another `ver1`: it would wait on it for good.
    if proto == PROTO_V2 {
        match buf.get(1) {
            None => return Ok(None),
            Some(&(VER1 | VER1_CRC)) => {}
            Some(&other) => return Err(Error::field("bolt ver1", other)),
        }
    }
    let Some(&ty) = buf.get(type_at) else {
        return Ok(None);
    };
    let layout = layout(proto, ty)?;
    if buf.len() < layout.header_len {
        return Ok(None);
    }
    let (class, header, content) = lengths(buf, layout.lengths_at)?;
    let mut total = (layout.header_len + class + header + content) as u64;
    if has_crc(buf) {
        total += CRC_LEN;
    }
    Ok(Some(total))
}

/// Whether a v2 frame (its header at least) ends in a CRC32.
fn has_crc(frame: &[u8]) -> bool {
    frame.first() == Some(&PROTO_V2)
        && frame.get(1) == Some(&VER1_CRC)
        && frame.get(11).is_some_and(|switch| switch & SWITCH_CRC != 0)
}

/// A decoded Bolt request (or oneway / heartbeat), v1 or v2, borrowing from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub request_id: u32,
    pub ty: u8,
    pub cmdcode: u16,
    pub codec: u8,
    pub timeout_ms: i32,
    pub class_name: &'a str,
    pub header: Vec<(&'a str, &'a str)>,
    pub content: &'a [u8],
}

/// A decoded Bolt response, v1 or v2, borrowing from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<'a> {
    pub request_id: u32,
    pub cmdcode: u16,
    pub codec: u8,
    pub status: u16,
    pub class_name: &'a str,
    pub header: Vec<(&'a str, &'a str)>,
    pub content: &'a [u8],
}

/// Where a whole frame's fixed fields sit, and its three variable parts.
struct Parts<'a> {
    /// `ver1` adds a byte after `proto` in v2, `switch` another after `codec`.
    shift: usize,
    class: &'a [u8],
    header: &'a [u8],
    content: &'a [u8],
}

/// The parts of one whole frame of any version and type, its length checked against its
/// header (`what` names it in errors). A v2 CRC32 is left to the caller: the mesh forwards
/// frames and leaves their check to the peer.
fn parts<'a>(frame: &'a [u8], what: &'static str) -> Result<Parts<'a>> {
    let (type_at, _, _) = offsets(frame, what)?;
    let Some(&ty) = frame.get(type_at) else {
        return Err(Error::Truncated {
            field: what,
            need: type_at as u64 + 1,
            have: frame.len(),
        });
    };
    let layout = layout(frame[0], ty)?;
    if frame.len() < layout.header_len {
        return Err(Error::Truncated {
            field: what,
            need: layout.header_len as u64,
            have: frame.len(),
        });
    }
    let (class, header, content) = lengths(frame, layout.lengths_at)?;
    let crc = if has_crc(frame) { CRC_LEN as usize } else { 0 };
    let total = layout.header_len + class + header + content + crc;
    check_whole_len(what, "bolt frame length", frame.len(), total as u64)?;
    let body = &frame[layout.header_len..total - crc];
    let (class_bytes, rest) = body.split_at(class);
    let (header_bytes, content_bytes) = rest.split_at(header);
    Ok(Parts {
        shift: type_at - 1,
        class: class_bytes,
        header: header_bytes,
        content: content_bytes,
    })
}

/// The parts of one whole request (`want_request`) or response frame, its v2 CRC32 checked.
fn whole_parts(frame: &[u8], want_request: bool) -> Result<Parts<'_>> {
    let what = if want_request {
        "bolt request"
    } else {
        "bolt response"
    };
    let (type_at, _, _) = offsets(frame, what)?;
    if let Some(&ty) = frame.get(type_at) {
        let is_request = ty == TYPE_REQUEST || ty == TYPE_ONEWAY;
        if ty > TYPE_ONEWAY || is_request != want_request {
            return Err(Error::field(
                "bolt type",
                format_args!("{ty} (expected {what})"),
            ));
        }
    }
    let parts = parts(frame, what)?;
    check_crc(frame)?;
    Ok(parts)
}

/// The CRC32 of a whole frame that carries one, against its bytes.
fn check_crc(frame: &[u8]) -> Result<()> {
    if !has_crc(frame) || frame.len() < CRC_LEN as usize {
        return Ok(());
    }
    let end = frame.len() - CRC_LEN as usize;
    let sent = u32::from_be_bytes(be32(frame, end));
    let computed = crc32(&frame[..end]);
    if sent != computed {
        return Err(Error::field(
            "bolt crc32",
            format_args!("{sent:#010x} (the frame's is {computed:#010x})"),
        ));
    }
    Ok(())
}

fn class_name(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|_| Error::InvalidUtf8 {
        field: "bolt class name",
    })
}

/// Decodes one whole Bolt request frame, v1 or v2 (type request or oneway; any cmdcode).
pub fn decode_request(frame: &[u8]) -> Result<Request<'_>> {
    let parts = whole_parts(frame, true)?;
    let s = parts.shift;
    Ok(Request {
        request_id: u32::from_be_bytes(be32(frame, 5 + s)),
        ty: frame[1 + s],
        cmdcode: u16::from_be_bytes(be16(frame, 2 + s)),
        codec: frame[9 + s],
        timeout_ms: i32::from_be_bytes(be32(frame, 10 + 2 * s)),
        class_name: class_name(parts.class)?,
        header: decode_header_map(parts.header)?,
        content: parts.content,
    })
}

/// Decodes one whole Bolt response frame, v1 or v2.
pub fn decode_response(frame: &[u8]) -> Result<Response<'_>> {
    let parts = whole_parts(frame, false)?;
    let s = parts.shift;
    Ok(Response {
        request_id: u32::from_be_bytes(be32(frame, 5 + s)),
        cmdcode: u16::from_be_bytes(be16(frame, 2 + s)),
        codec: frame[9 + s],
        status: u16::from_be_bytes(be16(frame, 10 + 2 * s)),
        class_name: class_name(parts.class)?,
        header: decode_header_map(parts.header)?,
        content: parts.content,
    })
}

/// One length-prefixed string of the header map; `None` for length -1 (Java null).
fn read_string<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    field: &'static str,
    len_field: &'static str,
) -> Result<Option<&'a str>> {
    let have = buf.len() - *pos;
    if have < 4 {
        return Err(Error::Truncated {
            field: len_field,
            need: 4,
            have,
        });
    }
    let len = i32::from_be_bytes(be32(buf, *pos));
    *pos += 4;
    if len == -1 {
        return Ok(None);
    }
    if len < 0 {
        return Err(Error::field(len_field, len));
    }
    let len = len as usize;
    let have = buf.len() - *pos;
    if have < len {
        return Err(Error::Truncated {
            field,
            need: len as u64,
            have,
        });
    }
    let bytes = &buf[*pos..*pos + len];
    *pos += len;
    std::str::from_utf8(bytes)
        .map(Some)
        .map_err(|_| Error::InvalidUtf8 { field })
}

/// `[i32 key len][key][i32 value len][value]...`; entries with a null (-1) key or value
/// are skipped, as SOFA's SimpleMapSerializer does.
pub fn decode_header_map(buf: &[u8]) -> Result<Vec<(&str, &str)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = read_string(buf, &mut pos, "bolt header key", "bolt header key length")?;
        let value = read_string(
            buf,
            &mut pos,
            "bolt header value",
            "bolt header value length",
        )?;
        if let (Some(k), Some(v)) = (key, value) {
            out.push((k, v));
        }
    }
    Ok(out)
}

fn arg_len(name: &'static str, len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(Error::InvalidArgument {
            name,
            message: format!("{len} bytes exceeds the Bolt limit of {max}"),
        });
    }
    Ok(())
}

pub fn encode_header_map<K: AsRef<str>, V: AsRef<str>>(header: &[(K, V)]) -> Result<Vec<u8>> {
    let size: usize = header
        .iter()
        .map(|(k, v)| 8 + k.as_ref().len() + v.as_ref().len())
        .sum();
    let mut out = Vec::with_capacity(size);
    for (k, v) in header {
        for s in [k.as_ref(), v.as_ref()] {
            arg_len("header", s.len(), i32::MAX as usize)?;
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    Ok(out)
}

/// Shared tail of request and response encoding: lengths + variable parts.
fn finish<K: AsRef<str>, V: AsRef<str>>(
    mut out: Vec<u8>,
    class_name: &str,
    header: &[(K, V)],
    content: &[u8],
) -> Result<Vec<u8>> {
    let header = encode_header_map(header)?;
    arg_len("class_name", class_name.len(), i16::MAX as usize)?;
    arg_len("header", header.len(), i16::MAX as usize)?;
    arg_len("content", content.len(), i32::MAX as usize)?;
    out.reserve_exact(8 + class_name.len() + header.len() + content.len());
    out.extend_from_slice(&(class_name.len() as u16).to_be_bytes());
    out.extend_from_slice(&(header.len() as u16).to_be_bytes());
    out.extend_from_slice(&(content.len() as u32).to_be_bytes());
    out.extend_from_slice(class_name.as_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(content);
    Ok(out)
}

/// Bolt v1 response (type response, cmdcode response).
pub fn encode_response<K: AsRef<str>, V: AsRef<str>>(
    request_id: u32,
    codec: u8,
    status: u16,
    class_name: &str,
    header: &[(K, V)],
    content: &[u8],
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(RESPONSE_HEADER_LEN_V1);
    out.extend_from_slice(&[PROTO_V1, TYPE_RESPONSE]);
    out.extend_from_slice(&CMD_RESPONSE.to_be_bytes());
    out.push(VER2);
    out.extend_from_slice(&request_id.to_be_bytes());
    out.push(codec);
    out.extend_from_slice(&status.to_be_bytes());
    finish(out, class_name, header, content)
}

/// Bolt v1 request (cmdcode request; type request, or oneway).
pub fn encode_request<K: AsRef<str>, V: AsRef<str>>(
    request_id: u32,
    codec: u8,
    timeout_ms: i32,
    class_name: &str,
    header: &[(K, V)],
    content: &[u8],
    oneway: bool,
) -> Result<Vec<u8>> {
    let ty = if oneway { TYPE_ONEWAY } else { TYPE_REQUEST };
    let mut out = Vec::with_capacity(REQUEST_HEADER_LEN_V1);
    out.extend_from_slice(&[PROTO_V1, ty]);
    out.extend_from_slice(&CMD_REQUEST.to_be_bytes());
    out.push(VER2);
    out.extend_from_slice(&request_id.to_be_bytes());
    out.push(codec);
    out.extend_from_slice(&timeout_ms.to_be_bytes());
    finish(out, class_name, header, content)
}

/// Bolt v1 heartbeat ack: response type, heartbeat cmdcode, hessian2, status 0, empty.
pub fn encode_heartbeat_ack(request_id: u32) -> Vec<u8> {
    response_to(&[PROTO_V1], request_id, CMD_HEARTBEAT, STATUS_SUCCESS)
}

/// The Bolt protocol for the mesh (see [`crate::codec`]); v1 and v2 frames.
pub struct Bolt;

/// Response status codes (Bolt's `ResponseStatus`) the proxy answers with.
pub const STATUS_SUCCESS: u16 = 0x0000;
pub const STATUS_SERVER_THREADPOOL_BUSY: u16 = 0x0004;
pub const STATUS_NO_PROCESSOR: u16 = 0x0006;
pub const STATUS_TIMEOUT: u16 = 0x0007;
pub const STATUS_CODEC_EXCEPTION: u16 = 0x0009;
pub const STATUS_CONNECTION_CLOSED: u16 = 0x0010;

/// Where `type`, `cmdcode` and the request id sit: v2 has `ver1` after `proto`.
fn offsets(frame: &[u8], what: &'static str) -> Result<(usize, usize, usize)> {
    match frame.first() {
        Some(&PROTO_V1) => Ok((1, 2, 5)),
        Some(&PROTO_V2) => Ok((2, 3, 6)),
        Some(&other) => Err(Error::field("bolt proto", other)),
        None => Err(Error::Truncated {
            field: what,
            need: 1,
            have: 0,
        }),
    }
}

/// Bolt v2's CRC32 (IEEE, as java.util.zip.CRC32) over everything before it.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8)
    })
}

impl Codec for Bolt {
    const NAME: &'static str = "bolt";
    const MAX_REQUEST_ID: u64 = u32::MAX as u64;

    fn frame_len(buf: &[u8]) -> Result<Option<u64>> {
        frame_len(buf)
    }

    fn head(frame: &[u8]) -> Result<FrameHead> {
        let (type_at, cmd_at, id_at) = offsets(frame, "bolt frame")?;
        if frame.len() < id_at + 4 {
            return Err(Error::Truncated {
                field: "bolt frame",
                need: (id_at + 4) as u64,
                have: frame.len(),
            });
        }
        let cmdcode = u16::from_be_bytes(be16(frame, cmd_at));
        // A SOFA Bolt server closes the connection at any other command code or a CRC32
        // that does not match: such a frame must not reach a connection others share.
        // MOSN's GoAway is read (as a notice, never forwarded): a MOSN or Layotto upstream
        // sends it as it shuts down, and its connection is drained, not dropped.
        if cmdcode > CMD_RESPONSE && cmdcode != CMD_GOAWAY {
            return Err(Error::field("bolt cmdcode", cmdcode));
        }
        check_crc(frame)?;
        let kind = match (frame[type_at], cmdcode) {
            (TYPE_REQUEST | TYPE_ONEWAY, CMD_GOAWAY) => FrameKind::Closing,
            (_, CMD_GOAWAY) => return Err(Error::field("bolt cmdcode", cmdcode)),
            (TYPE_REQUEST | TYPE_ONEWAY, CMD_HEARTBEAT) => FrameKind::HeartbeatRequest,
            (TYPE_RESPONSE, CMD_HEARTBEAT) => FrameKind::HeartbeatResponse,
            (TYPE_REQUEST, _) => FrameKind::Request,
            (TYPE_ONEWAY, _) => FrameKind::Oneway,
            (TYPE_RESPONSE, _) => FrameKind::Response,
            (other, _) => return Err(Error::field("bolt type", other)),
        };
        Ok(FrameHead {
            kind,
            request_id: u32::from_be_bytes(be32(frame, id_at)) as u64,
        })
    }

    fn request_timeout(frame: &[u8]) -> Option<Duration> {
        // v1: after proto, type, cmdcode, ver2, id and codec; v2 has ver1 and switch too.
        let at = match *frame.first()? {
            PROTO_V1 => 10,
            PROTO_V2 => 12,
            _ => return None,
        };
        let ms = i32::from_be_bytes(frame.get(at..at + 4)?.try_into().ok()?);
        (ms > 0).then(|| Duration::from_millis(ms as u64))
    }

    fn request_meta(frame: &[u8], with_headers: bool) -> Result<RequestMeta> {
        let pairs = decode_header_map(parts(frame, "bolt frame")?.header)?;
        let find = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map_or_else(String::new, |(_, v)| (*v).to_owned())
        };
        Ok(RequestMeta {
            service: find("service"),
            version: String::new(),
            method: find("sofa_head_method_name"),
            headers: if with_headers {
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            } else {
                Vec::new()
            },
        })
    }

    fn response_status(frame: &[u8]) -> u16 {
        let at = if frame.first() == Some(&PROTO_V2) {
            12
        } else {
            10
        };
        frame
            .get(at..at + 2)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn set_request_id(frame: &mut [u8], id: u64) {
        let Ok((_, _, id_at)) = offsets(frame, "bolt frame") else {
            return;
        };
        if frame.len() < id_at + 4 {
            return;
        }
        // The CRC32 is written again: [`Codec::head`], which every frame passes first,
        // refuses one whose CRC32 did not match, so none damaged on the way is signed here.
        let crc_at = frame.len().saturating_sub(4);
        let signed = has_crc(frame) && crc_at >= id_at + 4;
        frame[id_at..id_at + 4].copy_from_slice(&(id as u32).to_be_bytes());
        if signed {
            let crc = crc32(&frame[..crc_at]);
            frame[crc_at..].copy_from_slice(&crc.to_be_bytes());
        }
    }

    fn heartbeat_reply(frame: &[u8], head: &FrameHead) -> Vec<u8> {
        response_to(frame, head.request_id as u32, CMD_HEARTBEAT, STATUS_SUCCESS)
    }

    fn heartbeat_request(id: u64) -> Vec<u8> {
        let mut out = vec![0u8; REQUEST_HEADER_LEN_V1];
        out[0] = PROTO_V1;
        out[1] = TYPE_REQUEST;
        out[2..4].copy_from_slice(&CMD_HEARTBEAT.to_be_bytes());
        out[4] = VER2;
        out[5..9].copy_from_slice(&(id as u32).to_be_bytes());
        out[9] = CODEC_HESSIAN2;
        out[10..14].copy_from_slice(&(-1i32).to_be_bytes());
        out
    }

    fn refusal(frame: &[u8], head: &FrameHead, refusal: Refusal, _message: &str) -> Vec<u8> {
        // Bolt carries no text outside the payload, whose serialization is the
        // application's (hessian, protobuf): the status alone tells the client why.
        let status = match refusal {
            Refusal::NoService => STATUS_NO_PROCESSOR,
            Refusal::Overloaded => STATUS_SERVER_THREADPOOL_BUSY,
            Refusal::Timeout => STATUS_TIMEOUT,
            Refusal::Unavailable => STATUS_CONNECTION_CLOSED,
            Refusal::BadRequest => STATUS_CODEC_EXCEPTION,
        };
        response_to(frame, head.request_id as u32, CMD_RESPONSE, status)
    }

    fn answer_as_asked(request_head: &[u8], frame: &[u8]) -> Option<Vec<u8>> {
        // A v2 client reads a v1 answer (SOFA's decoder goes by each frame's own proto).
        (request_head.first() == Some(&PROTO_V1))
            .then(|| response_as_v1(frame))
            .flatten()
    }
}

/// A v2 response as the v1 response a v1 request is owed: a SOFA Bolt server answers
/// every request on a connection in the version of the connection's first frame, and a v1
/// client (anthunder) reads no other. `ver1` and `switch` dropped, and the CRC32 with them.
fn response_as_v1(frame: &[u8]) -> Option<Vec<u8>> {
    if frame.first() != Some(&PROTO_V2) || frame.len() < RESPONSE_HEADER_LEN_V2 {
        return None;
    }
    let end = frame.len() - if has_crc(frame) { CRC_LEN as usize } else { 0 };
    let mut out = Vec::with_capacity(end - 2);
    out.push(PROTO_V1);
    out.extend_from_slice(&frame[2..11]); // type, cmdcode, ver2, request id, codec
    out.extend_from_slice(&frame[12..end]); // status, lengths, class, header, content
    Some(out)
}

/// An empty response in the request's version and codec.
fn response_to(request: &[u8], id: u32, cmdcode: u16, status: u16) -> Vec<u8> {
    let codec_at = if request.first() == Some(&PROTO_V2) {
        10
    } else {
        9
    };
    let codec = request.get(codec_at).copied().unwrap_or(CODEC_HESSIAN2);
    if request.first() == Some(&PROTO_V2) {
        let mut out = vec![0u8; RESPONSE_HEADER_LEN_V2];
        out[0] = PROTO_V2;
        out[1] = request.get(1).copied().unwrap_or(1);
        out[2] = TYPE_RESPONSE;
        out[3..5].copy_from_slice(&cmdcode.to_be_bytes());
        out[5] = VER2;
        out[6..10].copy_from_slice(&id.to_be_bytes());
        out[10] = codec;
        out[12..14].copy_from_slice(&status.to_be_bytes());
        return out;
    }
    let mut out = vec![0u8; RESPONSE_HEADER_LEN_V1];
    out[0] = PROTO_V1;
    out[1] = TYPE_RESPONSE;
    out[2..4].copy_from_slice(&cmdcode.to_be_bytes());
    out[4] = VER2;
    out[5..9].copy_from_slice(&id.to_be_bytes());
    out[9] = codec;
    out[10..12].copy_from_slice(&status.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::*;

    const NO_HEADER: &[(&str, &str)] = &[];

    #[test]
    fn golden_request_decode() {
        let frame = hex(BOLT_V1_REQUEST);
        assert_eq!(frame.len(), 43);
        assert_eq!(frame_len(&frame).unwrap(), Some(43));
        let req = decode_request(&frame).unwrap();
        assert_eq!(
            req,
            Request {
                request_id: 111,
                ty: TYPE_REQUEST,
                cmdcode: CMD_REQUEST,
                codec: CODEC_HESSIAN2,
                timeout_ms: -1,
                class_name: "",
                header: vec![("k", "v")],
                content: b"hello world",
            }
        );
    }

    #[test]
    fn golden_request_encode() {
        let frame = encode_request(111, 1, -1, "", &[("k", "v")], b"hello world", false).unwrap();
        assert_eq!(frame, hex(BOLT_V1_REQUEST));
    }

    #[test]
    fn golden_heartbeat() {
        let hb = hex(BOLT_V1_HEARTBEAT);
        assert_eq!(frame_len(&hb).unwrap(), Some(22));
        let req = decode_request(&hb).unwrap();
        assert_eq!(req.cmdcode, CMD_HEARTBEAT);
        assert_eq!(req.request_id, 111);
        assert!(req.header.is_empty() && req.content.is_empty());

        let ack = encode_heartbeat_ack(111);
        assert_eq!(ack.to_vec(), hex(BOLT_V1_HEARTBEAT_ACK));
        assert_eq!(frame_len(&ack).unwrap(), Some(20));
        let resp = decode_response(&ack).unwrap();
        assert_eq!((resp.request_id, resp.cmdcode, resp.status), (111, 0, 0));
    }

    #[test]
    fn response_round_trip() {
        let header = [("service", "com.foo.Bar"), ("k", "ü")];
        let frame = encode_response(
            7,
            11,
            0x10,
            "com.alipay.sofa.rpc.core.response.SofaResponse",
            &header,
            b"\x00\x01payload",
        )
        .unwrap();
        assert_eq!(frame_len(&frame).unwrap(), Some(frame.len() as u64));
        let resp = decode_response(&frame).unwrap();
        assert_eq!(
            resp,
            Response {
                request_id: 7,
                cmdcode: CMD_RESPONSE,
                codec: 11,
                status: 0x10,
                class_name: "com.alipay.sofa.rpc.core.response.SofaResponse",
                header: header.to_vec(),
                content: b"\x00\x01payload",
            }
        );
    }

    #[test]
    fn request_round_trip_oneway() {
        let frame = encode_request(u32::MAX, 12, 3000, "c", NO_HEADER, b"{}", true).unwrap();
        let req = decode_request(&frame).unwrap();
        assert_eq!(req.ty, TYPE_ONEWAY);
        assert_eq!(req.request_id, u32::MAX);
        assert_eq!(req.timeout_ms, 3000);
        assert_eq!((req.class_name, req.content), ("c", &b"{}"[..]));
    }

    #[test]
    fn v2_frame_len() {
        assert_eq!(frame_len(&hex(BOLT_V2_REQUEST_CRC)).unwrap(), Some(33));
        assert_eq!(frame_len(&hex(BOLT_V2_RESPONSE)).unwrap(), Some(23));
        // Not enough for the v2 request header yet.
        assert_eq!(frame_len(&hex(BOLT_V2_REQUEST_CRC)[..23]).unwrap(), None);
    }

    #[test]
    fn header_map_nulls_are_skipped() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&(-1i32).to_be_bytes());
        buf.extend_from_slice(&1i32.to_be_bytes());
        buf.push(b'x');
        buf.extend_from_slice(&encode_header_map(&[("a", "b")]).unwrap());
        assert_eq!(decode_header_map(&buf).unwrap(), vec![("a", "b")]);
    }

    #[test]
    fn decode_errors() {
        let frame = hex(BOLT_V1_REQUEST);
        let msg = |f: &[u8]| decode_request(f).unwrap_err().to_string();
        assert_eq!(msg(&[]), "truncated bolt request: need 1 bytes, have 0");
        assert_eq!(
            msg(&frame[..42]),
            "truncated bolt request: need 43 bytes, have 42"
        );
        let mut long = frame.clone();
        long.push(0);
        assert_eq!(
            msg(&long),
            "invalid bolt frame length: 44 (header declares 43)"
        );
        assert_eq!(
            msg(&hex(BOLT_V1_HEARTBEAT_ACK)),
            "invalid bolt type: 0 (expected bolt request)"
        );
        let mut v3 = frame.clone();
        v3[0] = 3;
        assert_eq!(msg(&v3), "invalid bolt proto: 3");
        // a v2 frame whose CRC32 is not its bytes'
        assert!(msg(&hex(BOLT_V2_REQUEST_CRC))
            .starts_with("invalid bolt crc32: 0xdeadbeef (the frame's is 0x"));
        let mut bad = frame.clone();
        bad[22..26].copy_from_slice(&(-3i32).to_be_bytes());
        assert_eq!(msg(&bad), "invalid bolt header key length: -3");
        let mut bad = frame.clone();
        bad[22..26].copy_from_slice(&9i32.to_be_bytes());
        assert_eq!(msg(&bad), "truncated bolt header key: need 9 bytes, have 6");
        let mut bad = frame.clone();
        bad[26] = 0xff;
        assert_eq!(msg(&bad), "invalid bolt header key: not valid UTF-8");
        // Header length cutting a key length field short.
        let mut bad = frame.clone();
        bad[16..18].copy_from_slice(&2u16.to_be_bytes());
        bad[18..22].copy_from_slice(&19u32.to_be_bytes());
        assert_eq!(
            msg(&bad),
            "truncated bolt header key length: need 4 bytes, have 2"
        );
    }

    #[test]
    fn real_v2_frames_decode() {
        use crate::testdata::golden;
        for name in ["bolt_request_v2_bolt", "bolt_request_v2_crc_bolt"] {
            let frame = golden(name);
            let r = decode_request(&frame).unwrap();
            assert_eq!(
                (r.request_id, r.ty, r.cmdcode, r.codec, r.class_name),
                (
                    1,
                    TYPE_REQUEST,
                    CMD_REQUEST,
                    CODEC_HESSIAN2,
                    "java.lang.String"
                ),
                "{name}"
            );
            assert_eq!(
                (r.timeout_ms, r.content),
                (3000, &b"\x06bolt-0"[..]),
                "{name}"
            );
        }
        for name in ["bolt_response_v2_bolt", "bolt_response_v2_crc_bolt"] {
            let frame = golden(name);
            let resp = decode_response(&frame).unwrap();
            assert_eq!(
                (resp.request_id, resp.cmdcode, resp.codec, resp.status),
                (1, CMD_RESPONSE, CODEC_HESSIAN2, STATUS_SUCCESS),
                "{name}"
            );
            assert_eq!(resp.content, b"\x0becho:bolt-0", "{name}");
            assert!(resp.header.is_empty());
        }
        // one bit off in the content: the CRC32 no longer matches
        let mut bad = golden("bolt_response_v2_crc_bolt");
        let at = bad.len() - 6;
        bad[at] ^= 1;
        assert!(decode_response(&bad)
            .unwrap_err()
            .to_string()
            .starts_with("invalid bolt crc32"));
    }

    #[test]
    fn a_v2_answer_to_a_v1_request_is_given_in_v1() {
        let v1_request = encode_request(1, 1, 3000, "", NO_HEADER, b"x", false).unwrap();
        for name in ["bolt_response_v2_bolt", "bolt_response_v2_crc_bolt"] {
            let v2 = golden(name);
            let v1 = Bolt::answer_as_asked(&v1_request, &v2).unwrap();
            assert_eq!(v1[0], PROTO_V1, "{name}");
            assert_eq!(frame_len(&v1).unwrap(), Some(v1.len() as u64), "{name}");
            let (was, now) = (decode_response(&v2).unwrap(), decode_response(&v1).unwrap());
            assert_eq!(
                (now.request_id, now.cmdcode, now.codec, now.status),
                (was.request_id, was.cmdcode, was.codec, was.status),
                "{name}"
            );
            assert_eq!(
                (now.class_name, now.header, now.content),
                (was.class_name, was.header, was.content),
                "{name}"
            );
            // a v2 request's answer, and a v1 answer, go as they are
            let v2_request = golden("bolt_request_v2_bolt");
            assert_eq!(Bolt::answer_as_asked(&v2_request, &v2), None);
            assert_eq!(Bolt::answer_as_asked(&v1_request, &v1), None);
        }
    }

    /// MOSN's GoAway (a request with command code 100, sent by a MOSN or Layotto upstream
    /// as it shuts down) was a malformed frame: the upstream connection every client
    /// shares was dropped with all it carried.
    #[test]
    fn mosn_s_goaway_is_read_as_closing() {
        let mut goaway = encode_request(0, 1, 0, "", NO_HEADER, b"", false).unwrap();
        goaway[2..4].copy_from_slice(&CMD_GOAWAY.to_be_bytes());
        assert_eq!(Bolt::head(&goaway).unwrap().kind, FrameKind::Closing);
        let mut as_answer = goaway.clone();
        as_answer[1] = TYPE_RESPONSE;
        assert!(Bolt::head(&as_answer).is_err());
        let mut other = goaway;
        other[2..4].copy_from_slice(&101u16.to_be_bytes());
        assert!(
            Bolt::head(&other).is_err(),
            "other command codes still close"
        );
    }

    /// A SOFARPC consumer's per-call timeout is in the request: MOSN makes it the call's
    /// deadline; the route's (3 s by default) cut a 10 s call at 3 s.
    #[test]
    fn a_request_s_own_timeout_is_read_from_v1_and_v2() {
        let v1 = encode_request(1, 1, 10_000, "c", NO_HEADER, b"x", false).unwrap();
        assert_eq!(Bolt::request_timeout(&v1), Some(Duration::from_secs(10)));
        let v2 = hex("02 02 02 0001 07 0a0b0c0d 0b 00 00000bb8 0001 0000 00000001 63 78");
        assert_eq!(
            Bolt::request_timeout(&v2),
            Some(Duration::from_millis(3000))
        );
        for unset in [0, -1] {
            let frame = encode_request(1, 1, unset, "c", NO_HEADER, b"x", false).unwrap();
            assert_eq!(Bolt::request_timeout(&frame), None, "{unset}: the route's");
        }
    }

    #[test]
    fn v2_fields_are_read_where_v2_puts_them() {
        // every fixed field a distinct value: id 0x0a0b0c0d, codec 0x0b, switch 0, ver2 0x07
        let request = hex("02 02 02 0001 07 0a0b0c0d 0b 00 00000bb8 0001 0000 00000001 63 78");
        let r = decode_request(&request).unwrap();
        assert_eq!(
            (
                r.request_id,
                r.ty,
                r.cmdcode,
                r.codec,
                r.timeout_ms,
                r.class_name,
                r.content
            ),
            (
                0x0a0b_0c0d,
                TYPE_ONEWAY,
                CMD_REQUEST,
                0x0b,
                3000,
                "c",
                &b"x"[..]
            )
        );
        assert_eq!(
            frame_len(&request).unwrap(),
            Some(request.len() as u64),
            "no CRC: switch 0"
        );
        let response = hex("02 01 00 0002 07 0a0b0c0d 0c 00 0012 0000 0000 00000001 79");
        let r = decode_response(&response).unwrap();
        assert_eq!(
            (r.request_id, r.cmdcode, r.codec, r.status, r.content),
            (0x0a0b_0c0d, CMD_RESPONSE, 0x0c, 0x0012, &b"y"[..])
        );
        // the mesh's own v2 answer decodes to what it meant
        let refusal = Bolt::refusal(
            &request,
            &Bolt::head(&request).unwrap(),
            Refusal::Timeout,
            "",
        );
        let r = decode_response(&refusal).unwrap();
        assert_eq!(
            (r.request_id, r.codec, r.status),
            (0x0a0b_0c0d, 0x0b, STATUS_TIMEOUT)
        );
    }

    #[test]
    fn a_damaged_v2_frame_is_refused() {
        let mut frame = golden_crc_request();
        let at = frame.len() - 6;
        frame[at] ^= 1; // damaged on the way in: its CRC32 no longer matches
        assert!(Bolt::head(&frame)
            .unwrap_err()
            .to_string()
            .starts_with("invalid bolt crc32"));
    }

    #[test]
    fn frames_a_bolt_server_would_close_on_are_malformed() {
        let mut unknown_command = hex(BOLT_V1_REQUEST);
        unknown_command[2..4].copy_from_slice(&3u16.to_be_bytes());
        assert_eq!(
            frame_len(&unknown_command).unwrap(),
            Some(unknown_command.len() as u64)
        );
        assert!(Bolt::head(&unknown_command)
            .unwrap_err()
            .to_string()
            .starts_with("invalid bolt cmdcode"));
        let mut other_ver1 = golden_crc_request();
        for ver1 in [0u8, 3, 0xff] {
            other_ver1[1] = ver1;
            assert!(frame_len(&other_ver1)
                .unwrap_err()
                .to_string()
                .starts_with("invalid bolt ver1"));
        }
        assert_eq!(frame_len(&[PROTO_V2]).unwrap(), None, "ver1 not read yet");
    }

    fn golden_crc_request() -> Vec<u8> {
        crate::testdata::golden("bolt_request_v2_crc_bolt")
    }

    #[test]
    fn anthunder_frames() {
        let echo = golden("bolt_request_echo");
        assert_eq!(frame_len(&echo).unwrap(), Some(echo.len() as u64));
        let head = Bolt::head(&echo).unwrap();
        assert_eq!(head.kind, FrameKind::Request);
        let meta = Bolt::request_meta(&echo, true).unwrap();
        assert_eq!(meta.service, "com.example.EchoService:1.0");
        assert_eq!(meta.method, "echo");
        assert_eq!(
            meta.header("sofa_head_target_service"),
            Some("com.example.EchoService:1.0")
        );
        let request = decode_request(&echo).unwrap();
        assert_eq!(
            request.class_name,
            "com.alipay.sofa.rpc.core.request.SofaRequest"
        );
        assert_eq!((request.codec, request.timeout_ms), (11, 3000));
        // Re-encoding what was decoded gives anthunder's bytes back.
        let again = encode_request(
            request.request_id,
            request.codec,
            request.timeout_ms,
            request.class_name,
            &request.header,
            request.content,
            false,
        )
        .unwrap();
        assert_eq!(again, echo);

        let answer = golden("bolt_response_echo");
        let response = decode_response(&answer).unwrap();
        assert_eq!(
            Bolt::head(&answer).unwrap(),
            FrameHead {
                kind: FrameKind::Response,
                request_id: head.request_id
            }
        );
        let again = encode_response(
            response.request_id,
            response.codec,
            response.status,
            response.class_name,
            &response.header,
            response.content,
        )
        .unwrap();
        assert_eq!(again, answer);

        let beat = golden("bolt_heartbeat_request");
        let head = Bolt::head(&beat).unwrap();
        assert_eq!(head.kind, FrameKind::HeartbeatRequest);
        assert_eq!(
            Bolt::heartbeat_reply(&beat, &head),
            golden("bolt_heartbeat_response")
        );

        let oneway = golden("bolt_request_oneway");
        assert_eq!(Bolt::head(&oneway).unwrap().kind, FrameKind::Oneway);
        let no_processor = golden("bolt_response_no_processor");
        assert_eq!(
            decode_response(&no_processor).unwrap().status,
            STATUS_NO_PROCESSOR
        );
    }

    #[test]
    fn sofarpc_frames() {
        let request = golden("bolt_request_sofarpc");
        let head = Bolt::head(&request).unwrap();
        assert_eq!(head.kind, FrameKind::Request);
        let meta = Bolt::request_meta(&request, false).unwrap();
        assert_eq!(
            (meta.service.as_str(), meta.method.as_str()),
            ("com.example.EchoService:1.0", "echo")
        );
        let decoded = decode_request(&request).unwrap();
        assert_eq!(
            (decoded.codec, decoded.class_name),
            (
                CODEC_HESSIAN2,
                "com.alipay.sofa.rpc.core.request.SofaRequest"
            )
        );
        let again = encode_request(
            decoded.request_id,
            decoded.codec,
            decoded.timeout_ms,
            decoded.class_name,
            &decoded.header,
            decoded.content,
            false,
        )
        .unwrap();
        assert_eq!(again, request, "SOFARPC's request re-encodes byte for byte");
        let response = golden("bolt_response_sofarpc");
        assert_eq!(Bolt::head(&response).unwrap().request_id, head.request_id);
        assert_eq!(Bolt::response_status(&response), STATUS_SUCCESS);
        let beat = golden("bolt_heartbeat_request_sofarpc");
        let beat_head = Bolt::head(&beat).unwrap();
        assert_eq!(beat_head.kind, FrameKind::HeartbeatRequest);
        assert_eq!(
            Bolt::heartbeat_reply(&beat, &beat_head),
            golden("bolt_heartbeat_response_sofarpc")
        );
    }

    #[test]
    fn no_input_panics() {
        for name in [
            "bolt_request_echo",
            "bolt_response_echo",
            "bolt_heartbeat_request",
            "bolt_request_oneway",
        ] {
            let frame = golden(name);
            for cut in 0..frame.len() {
                let _ = Bolt::head(&frame[..cut]);
                let _ = Bolt::request_meta(&frame[..cut], true);
                let _ = frame_len(&frame[..cut]);
            }
            for at in 0..frame.len() {
                let mut flipped = frame.clone();
                flipped[at] ^= 0xff;
                let _ = Bolt::head(&flipped);
                let _ = Bolt::request_meta(&flipped, true);
                Bolt::set_request_id(&mut flipped, 3);
            }
        }
    }

    #[test]
    fn codec_heads() {
        let head = |f: &[u8]| Bolt::head(f).unwrap();
        assert_eq!(
            head(&hex(BOLT_V1_REQUEST)),
            FrameHead {
                kind: FrameKind::Request,
                request_id: 111
            }
        );
        assert_eq!(
            head(&hex(BOLT_V1_HEARTBEAT)).kind,
            FrameKind::HeartbeatRequest
        );
        assert_eq!(
            head(&hex(BOLT_V1_HEARTBEAT_ACK)).kind,
            FrameKind::HeartbeatResponse
        );
        assert_eq!(
            head(&hex(BOLT_V2_RESPONSE)),
            FrameHead {
                kind: FrameKind::Response,
                request_id: 1
            }
        );
        let oneway = encode_request(9, 1, 0, "", NO_HEADER, b"", true).unwrap();
        assert_eq!(head(&oneway).kind, FrameKind::Oneway);
        assert!(Bolt::head(&[]).is_err());
        assert!(Bolt::head(&[7, 1, 0]).is_err());
        assert!(Bolt::head(&hex(BOLT_V1_REQUEST)[..6]).is_err());
    }

    #[test]
    fn codec_meta_reads_the_service_header() {
        let frame = encode_request(
            5,
            11,
            3000,
            "com.alipay.sofa.rpc.core.request.SofaRequest",
            &[
                ("service", "com.example.EchoService:1.0"),
                ("sofa_head_method_name", "echo"),
            ],
            b"payload",
            false,
        )
        .unwrap();
        let meta = Bolt::request_meta(&frame, true).unwrap();
        assert_eq!(meta.service, "com.example.EchoService:1.0");
        assert_eq!(meta.method, "echo");
        assert_eq!(meta.header("service"), Some("com.example.EchoService:1.0"));
        let lean = Bolt::request_meta(&frame, false).unwrap();
        assert_eq!(
            (lean.service.as_str(), lean.method.as_str()),
            ("com.example.EchoService:1.0", "echo")
        );
        assert!(
            lean.headers.is_empty(),
            "headers are decoded only when a route needs them"
        );
        // A frame cut short is an error, not a panic.
        assert!(Bolt::request_meta(&frame[..frame.len() - 1], true).is_err());
    }

    #[test]
    fn codec_rewrites_ids_and_v2_crc() {
        let mut frame = hex(BOLT_V1_REQUEST);
        Bolt::set_request_id(&mut frame, 0x1_0000_0002);
        assert_eq!(
            Bolt::head(&frame).unwrap().request_id,
            2,
            "Bolt keeps the low 32 bits"
        );
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        let mut v2 = golden_crc_request();
        Bolt::set_request_id(&mut v2, 77);
        assert_eq!(Bolt::head(&v2).unwrap().request_id, 77);
        let end = v2.len() - 4;
        assert_eq!(v2[end..], crc32(&v2[..end]).to_be_bytes());
    }

    #[test]
    fn real_v2_frames_are_framed_and_rewritten_as_bolt_does() {
        use crate::testdata::golden;
        for (name, crc) in [
            ("bolt_request_v2_bolt", false),
            ("bolt_response_v2_bolt", false),
            ("bolt_request_v2_crc_bolt", true),
            ("bolt_response_v2_crc_bolt", true),
        ] {
            let frame = golden(name);
            assert_eq!(
                frame_len(&frame).unwrap(),
                Some(frame.len() as u64),
                "{name}"
            );
            assert_eq!(has_crc(&frame), crc, "{name}");
            let head = Bolt::head(&frame).unwrap();
            assert_eq!(head.request_id, 1, "{name}");
            // the same id written back gives bolt's own bytes, its CRC32 included
            let mut same = frame.clone();
            Bolt::set_request_id(&mut same, 1);
            assert_eq!(same, frame, "{name}");
            let mut other = frame.clone();
            Bolt::set_request_id(&mut other, 0x0102_0304);
            assert_eq!(Bolt::head(&other).unwrap().request_id, 0x0102_0304);
            if crc {
                let end = other.len() - 4;
                assert_eq!(other[end..], crc32(&other[..end]).to_be_bytes(), "{name}");
            }
        }
        // ver1 1 with the CRC bit: framed without a CRC (a 4-byte wait would stall the peer)
        let ver1_1 = hex(BOLT_V2_REQUEST_VER1_1);
        assert_eq!(frame_len(&ver1_1).unwrap(), Some(ver1_1.len() as u64));
    }

    #[test]
    fn codec_answers_without_an_upstream() {
        let hb = hex(BOLT_V1_HEARTBEAT);
        let head = Bolt::head(&hb).unwrap();
        assert_eq!(
            Bolt::heartbeat_reply(&hb, &head),
            hex(BOLT_V1_HEARTBEAT_ACK)
        );
        let probe = Bolt::heartbeat_request(111);
        assert_eq!(
            Bolt::head(&probe).unwrap(),
            FrameHead {
                kind: FrameKind::HeartbeatRequest,
                request_id: 111
            }
        );
        let request = encode_request(42, 11, 3000, "", NO_HEADER, b"x", false).unwrap();
        let head = Bolt::head(&request).unwrap();
        for (refusal, status) in [
            (Refusal::NoService, STATUS_NO_PROCESSOR),
            (Refusal::Overloaded, STATUS_SERVER_THREADPOOL_BUSY),
            (Refusal::Timeout, STATUS_TIMEOUT),
            (Refusal::Unavailable, STATUS_CONNECTION_CLOSED),
            (Refusal::BadRequest, STATUS_CODEC_EXCEPTION),
        ] {
            let answer = Bolt::refusal(&request, &head, refusal, "why");
            let response = decode_response(&answer).unwrap();
            assert_eq!(
                (response.request_id, response.status, response.codec),
                (42, status, 11)
            );
        }
        // A v2 request gets a v2 answer.
        let v2 = golden_crc_request();
        let answer = Bolt::refusal(&v2, &Bolt::head(&v2).unwrap(), Refusal::Timeout, "");
        assert_eq!(frame_len(&answer).unwrap(), Some(answer.len() as u64));
        assert_eq!(
            Bolt::head(&answer).unwrap(),
            FrameHead {
                kind: FrameKind::Response,
                request_id: 1
            }
        );
    }

    #[test]
    fn encode_limits() {
        let big = "x".repeat(i16::MAX as usize + 1);
        let e = encode_response(1, 1, 0, &big, NO_HEADER, b"").unwrap_err();
        assert!(e.is_argument_error());
        assert_eq!(
            e.to_string(),
            "invalid class_name: 32768 bytes exceeds the Bolt limit of 32767"
        );
        let e = encode_response(1, 1, 0, "", &[("k", big.as_str())], b"").unwrap_err();
        assert!(e.is_argument_error(), "{e}");
    }
}
