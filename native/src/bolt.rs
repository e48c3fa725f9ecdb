//! SOFA Bolt framing (v1 and v2) and the v1 request/response codec.
//!
//! All integers are big-endian. v1 request header (22 bytes):
//! `proto=1 | type | cmdcode(2) | ver2 | request id(4) | codec | timeout(i32) |
//!  class len(i16) | header len(i16) | content len(i32)`.
//! v1 response header (20 bytes) has `respstatus(2)` where the request has the timeout.
//! v2 adds `ver1` after `proto` and `switch` after `codec` (24 / 22 bytes); with the
//! CRC switch bit a 4-byte CRC32 follows the content.

use crate::error::{Error, Result};

pub const PROTO_V1: u8 = 1;
pub const PROTO_V2: u8 = 2;

pub const TYPE_RESPONSE: u8 = 0;
pub const TYPE_REQUEST: u8 = 1;
pub const TYPE_ONEWAY: u8 = 2;

pub const CMD_HEARTBEAT: u16 = 0;
pub const CMD_REQUEST: u16 = 1;
pub const CMD_RESPONSE: u16 = 2;

pub const VER2: u8 = 1;
pub const CODEC_HESSIAN2: u8 = 1;
pub const SWITCH_CRC: u8 = 0x01;

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
    switch_at: Option<usize>,
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
            switch_at: None,
        },
        (PROTO_V1, false) => Layout {
            header_len: RESPONSE_HEADER_LEN_V1,
            lengths_at: 12,
            switch_at: None,
        },
        (_, true) => Layout {
            header_len: REQUEST_HEADER_LEN_V2,
            lengths_at: 16,
            switch_at: Some(11),
        },
        (_, false) => Layout {
            header_len: RESPONSE_HEADER_LEN_V2,
            lengths_at: 14,
            switch_at: Some(11),
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
    let Some(&ty) = buf.get(type_at) else {
        return Ok(None);
    };
    let layout = layout(proto, ty)?;
    if buf.len() < layout.header_len {
        return Ok(None);
    }
    let (class, header, content) = lengths(buf, layout.lengths_at)?;
    let mut total = (layout.header_len + class + header + content) as u64;
    if let Some(at) = layout.switch_at {
        if buf[at] & SWITCH_CRC != 0 {
            total += CRC_LEN;
        }
    }
    Ok(Some(total))
}

/// A decoded Bolt v1 request (or oneway / heartbeat), borrowing from the frame.
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

/// A decoded Bolt v1 response, borrowing from the frame.
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

/// Checks proto/type/total length of one whole v1 frame; returns the three variable parts.
fn v1_parts(frame: &[u8], want_request: bool) -> Result<(&[u8], &[u8], &[u8])> {
    let what = if want_request {
        "bolt request"
    } else {
        "bolt response"
    };
    let Some(&proto) = frame.first() else {
        return Err(Error::Truncated {
            field: what,
            need: 1,
            have: 0,
        });
    };
    if proto != PROTO_V1 {
        return Err(Error::field(
            "bolt proto",
            format_args!("{proto} (only v1 (1) is decoded)"),
        ));
    }
    let Some(&ty) = frame.get(1) else {
        return Err(Error::Truncated {
            field: what,
            need: 2,
            have: frame.len(),
        });
    };
    let is_request = ty == TYPE_REQUEST || ty == TYPE_ONEWAY;
    if ty > TYPE_ONEWAY || is_request != want_request {
        return Err(Error::field(
            "bolt type",
            format_args!("{ty} (expected {what})"),
        ));
    }
    let layout = layout(proto, ty)?;
    if frame.len() < layout.header_len {
        return Err(Error::Truncated {
            field: what,
            need: layout.header_len as u64,
            have: frame.len(),
        });
    }
    let (class, header, content) = lengths(frame, layout.lengths_at)?;
    let total = layout.header_len + class + header + content;
    if frame.len() < total {
        return Err(Error::Truncated {
            field: what,
            need: total as u64,
            have: frame.len(),
        });
    }
    if frame.len() > total {
        return Err(Error::field(
            "bolt frame length",
            format_args!("{} (header declares {total})", frame.len()),
        ));
    }
    let body = &frame[layout.header_len..];
    let (class_bytes, rest) = body.split_at(class);
    let (header_bytes, content_bytes) = rest.split_at(header);
    Ok((class_bytes, header_bytes, content_bytes))
}

fn class_name(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|_| Error::InvalidUtf8 {
        field: "bolt class name",
    })
}

/// Decodes one whole Bolt v1 request frame (type request or oneway; any cmdcode).
pub fn decode_request(frame: &[u8]) -> Result<Request<'_>> {
    let (class, header, content) = v1_parts(frame, true)?;
    Ok(Request {
        request_id: u32::from_be_bytes(be32(frame, 5)),
        ty: frame[1],
        cmdcode: u16::from_be_bytes(be16(frame, 2)),
        codec: frame[9],
        timeout_ms: i32::from_be_bytes(be32(frame, 10)),
        class_name: class_name(class)?,
        header: decode_header_map(header)?,
        content,
    })
}

/// Decodes one whole Bolt v1 response frame.
pub fn decode_response(frame: &[u8]) -> Result<Response<'_>> {
    let (class, header, content) = v1_parts(frame, false)?;
    Ok(Response {
        request_id: u32::from_be_bytes(be32(frame, 5)),
        cmdcode: u16::from_be_bytes(be16(frame, 2)),
        codec: frame[9],
        status: u16::from_be_bytes(be16(frame, 10)),
        class_name: class_name(class)?,
        header: decode_header_map(header)?,
        content,
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
pub fn encode_heartbeat_ack(request_id: u32) -> [u8; RESPONSE_HEADER_LEN_V1] {
    let mut out = [0u8; RESPONSE_HEADER_LEN_V1];
    out[0] = PROTO_V1;
    out[1] = TYPE_RESPONSE;
    out[2..4].copy_from_slice(&CMD_HEARTBEAT.to_be_bytes());
    out[4] = VER2;
    out[5..9].copy_from_slice(&request_id.to_be_bytes());
    out[9] = CODEC_HESSIAN2;
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
        assert!(msg(&hex(BOLT_V2_REQUEST_CRC)).starts_with("invalid bolt proto: 2"));
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
