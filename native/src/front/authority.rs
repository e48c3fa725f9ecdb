//! Repair of `:authority` on Unix-socket connections, before h2 sees the bytes.
//!
//! grpc-core clients (Python, C++, Ruby, ...) send the socket path, percent-encoded
//! or not, as `:authority` on a Unix socket; h2 rejects that as a malformed request
//! (hyperium/h2#487, unmerged). On such connections every header block is decoded
//! with the client's HPACK state and re-encoded for h2 with ours, with an
//! unparsable authority replaced by `localhost` (what grpc-go sends). Frames other
//! than HEADERS/CONTINUATION pass through untouched.

use std::borrow::Cow;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use bytes::{BufMut, BytesMut};
use fluke_hpack::{Decoder, Encoder};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const MAX_FRAME: usize = 16_384;
const HEADER_TABLE_SIZE: usize = 4_096;
/// CONTINUATION frames one header block may take: a block at twice the header list limit
/// fits in a few full frames.
const MAX_CONTINUATIONS: usize = 64;

thread_local! {
    /// Set while fluke-hpack decodes: a panic then is the peer's broken input, caught and
    /// ended with its connection; the default hook would print it (with a backtrace, at
    /// tens of milliseconds each, under RUST_BACKTRACE), as often as a peer sends one.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Installs, once, a panic hook that stays silent while QUIET is set and hands every
/// other panic to the hook that was there before.
fn quiet_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

pub struct AuthorityRepair {
    preface_left: usize,
    pending: BytesMut,
    block: Option<(u32, u8, Vec<u8>)>, // stream id, HEADERS flags, fragments so far
    continuations: usize,              // CONTINUATION frames of the open block
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
    max_header_list: usize,
}

impl AuthorityRepair {
    pub fn new(max_header_list: usize) -> Self {
        AuthorityRepair {
            preface_left: PREFACE_LEN,
            pending: BytesMut::new(),
            block: None,
            continuations: 0,
            decoder: {
                let mut decoder = Decoder::new();
                // What h2 allows a peer (SETTINGS_HEADER_TABLE_SIZE, not raised): a size
                // update past it is an error, not a table of any size the peer names.
                decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
                decoder
            },
            encoder: Encoder::new(),
            max_header_list,
        }
    }

    /// Append the repaired form of `data` to `out`; an error means the peer broke HTTP/2.
    pub fn process(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), String> {
        let mut data = data;
        if self.preface_left > 0 {
            let n = self.preface_left.min(data.len());
            out.extend_from_slice(&data[..n]);
            self.preface_left -= n;
            data = &data[n..];
        }
        self.pending.extend_from_slice(data);
        while self.pending.len() >= FRAME_HEADER {
            let head = &self.pending[..FRAME_HEADER];
            let length =
                (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            if length > MAX_FRAME {
                // h2 answers FRAME_SIZE_ERROR; hand it the frame header and let it.
                out.extend_from_slice(&self.pending);
                self.pending.clear();
                return Ok(());
            }
            if self.pending.len() < FRAME_HEADER + length {
                break;
            }
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let frame = self.pending.split_to(FRAME_HEADER + length);
            let payload = &frame[FRAME_HEADER..];
            match (kind, self.block.is_some()) {
                (HEADERS, false) => {
                    let fragment = strip_headers_payload(payload, flags)?;
                    self.block = Some((stream, flags, fragment.to_vec()));
                    self.continuations = 0;
                    if flags & END_HEADERS != 0 {
                        self.emit_block(out)?;
                    }
                }
                (CONTINUATION, true) => {
                    let block = self.block.as_mut().expect("checked");
                    if block.0 != stream {
                        return Err("CONTINUATION on another stream".into());
                    }
                    block.2.extend_from_slice(payload);
                    if block.2.len() > self.max_header_list.saturating_mul(2) {
                        return Err("header block too large".into());
                    }
                    // Empty CONTINUATION frames add no bytes: without a count a peer could
                    // send them forever (h2 counts them too, but never sees these).
                    self.continuations += 1;
                    if self.continuations > MAX_CONTINUATIONS {
                        return Err("too many CONTINUATION frames in one header block".into());
                    }
                    if flags & END_HEADERS != 0 {
                        self.emit_block(out)?;
                    }
                }
                (_, true) => return Err("frame interleaved inside a header block".into()),
                _ => out.extend_from_slice(&frame),
            }
        }
        Ok(())
    }

    fn emit_block(&mut self, out: &mut BytesMut) -> Result<(), String> {
        let (stream, flags, fragment) = self.block.take().expect("a block is open");
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut size = 0usize;
        let mut too_large = false;
        // A list over the limit goes on to h2, which refuses that stream alone (431), as
        // over TCP; only one past twice the limit is an attack, and ends the connection.
        let hard_limit = self.max_header_list.saturating_mul(2);
        let decoder = &mut self.decoder;
        // fluke-hpack panics on a size update cut short (it unwraps the integer's
        // decoding): that is the peer's broken HPACK, and ends this connection like any
        // other. The decoder is not used again.
        quiet_panics();
        QUIET.with(|quiet| quiet.set(true));
        let decoded = panic::catch_unwind(AssertUnwindSafe(|| {
            decoder.decode_with_cb(&fragment, |name: Cow<[u8]>, value: Cow<[u8]>| {
                size += name.len() + value.len() + 32;
                too_large |= size > hard_limit;
                if !too_large {
                    headers.push((name.into_owned(), value.into_owned()));
                }
            })
        }));
        QUIET.with(|quiet| quiet.set(false));
        match decoded {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("HPACK decoding failed: {e:?}")),
            Err(_) => return Err("HPACK decoding failed: a malformed integer".into()),
        }
        if too_large {
            return Err("header list over twice the size limit".into());
        }
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority"
                && http::uri::Authority::try_from(value.as_slice()).is_err()
            {
                *value = b"localhost".to_vec();
            }
        }
        let block = self
            .encoder
            .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut chunks = block.chunks(MAX_FRAME).peekable();
        let mut first = true;
        if block.is_empty() {
            write_frame(
                out,
                HEADERS,
                (flags & END_STREAM) | END_HEADERS,
                stream,
                &[],
            );
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let end_headers = if last { END_HEADERS } else { 0 };
            if first {
                write_frame(
                    out,
                    HEADERS,
                    (flags & END_STREAM) | end_headers,
                    stream,
                    chunk,
                );
                first = false;
            } else {
                write_frame(out, CONTINUATION, end_headers, stream, chunk);
            }
        }
        Ok(())
    }
}

fn strip_headers_payload(payload: &[u8], flags: u8) -> Result<&[u8], String> {
    let mut payload = payload;
    let mut padding = 0usize;
    if flags & PADDED != 0 {
        let (&pad, rest) = payload
            .split_first()
            .ok_or("HEADERS too short for its padding")?;
        padding = usize::from(pad);
        payload = rest;
    }
    if flags & PRIORITY != 0 {
        if payload.len() < 5 {
            return Err("HEADERS too short for its priority".into());
        }
        payload = &payload[5..];
    }
    if padding > payload.len() {
        return Err("HEADERS padding longer than the frame".into());
    }
    Ok(&payload[..payload.len() - padding])
}

fn write_frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let length = payload.len();
    out.put_u8((length >> 16) as u8);
    out.put_u8((length >> 8) as u8);
    out.put_u8(length as u8);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
    out.put_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_frame(encoder: &mut Encoder<'_>, authority: &[u8], flags: u8) -> Vec<u8> {
        let block = encoder.encode(vec![
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/x.Y/Z"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
        ]);
        let mut out = BytesMut::new();
        write_frame(&mut out, HEADERS, flags | END_HEADERS, 1, &block);
        out.to_vec()
    }

    fn decode_all(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut decoder = Decoder::new();
        let mut blocks = Vec::new();
        let mut rest = &bytes[PREFACE_LEN..];
        while rest.len() >= FRAME_HEADER {
            let length =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            let payload = &rest[FRAME_HEADER..FRAME_HEADER + length];
            if rest[3] == HEADERS {
                blocks.push(decoder.decode(payload).unwrap());
            }
            rest = &rest[FRAME_HEADER + length..];
        }
        blocks
    }

    #[test]
    fn socket_path_authority_becomes_localhost_and_the_rest_is_kept() {
        let mut client = Encoder::new();
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend(headers_frame(&mut client, b"/tmp/layotto.sock", END_STREAM));
        input.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]); // an empty SETTINGS frame passes through
        input.extend(headers_frame(&mut client, b"127.0.0.1:34904", 0)); // indexed from the client's table
        let mut repair = AuthorityRepair::new(16 * 1024);
        let mut out = BytesMut::new();
        for byte in &input {
            repair
                .process(std::slice::from_ref(byte), &mut out)
                .unwrap();
        }
        let blocks = decode_all(&out);
        assert_eq!(blocks.len(), 2);
        let authority = |block: &Vec<(Vec<u8>, Vec<u8>)>| {
            block
                .iter()
                .find(|(n, _)| n == b":authority")
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(authority(&blocks[0]), b"localhost");
        assert_eq!(authority(&blocks[1]), b"127.0.0.1:34904");
        assert_eq!(blocks[0].len(), 5);
        assert_eq!(out[PREFACE_LEN + 4] & END_STREAM, END_STREAM);
    }

    #[test]
    fn broken_table_size_updates_are_errors_not_panics() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        for block in [
            &[0x3f][..],                           // a size update cut short
            &[0x3f, 0xff, 0xff, 0xff, 0xff, 0x01], // an integer past what it decodes
            &[0x3f, 0xe2, 0x1f, 0x82],             // 4096 + 1: over what h2 allows
        ] {
            let mut input = preface.to_vec();
            let length = u8::try_from(block.len()).unwrap();
            input.extend([0, 0, length, HEADERS, END_HEADERS, 0, 0, 0, 1]);
            input.extend_from_slice(block);
            let mut repair = AuthorityRepair::new(16 * 1024);
            let e = repair.process(&input, &mut BytesMut::new()).unwrap_err();
            assert!(e.starts_with("HPACK decoding failed"), "{block:x?}: {e}");
        }
    }

    #[test]
    fn endless_empty_continuations_are_an_error() {
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend([0, 0, 1, HEADERS, 0, 0, 0, 0, 1, 0x82]); // no END_HEADERS
        for _ in 0..=MAX_CONTINUATIONS {
            input.extend([0, 0, 0, CONTINUATION, 0, 0, 0, 0, 1]);
        }
        let mut repair = AuthorityRepair::new(16 * 1024);
        let e = repair.process(&input, &mut BytesMut::new()).unwrap_err();
        assert!(e.contains("too many CONTINUATION"), "{e}");
    }

    #[test]
    fn interleaved_frame_is_an_error() {
        let mut repair = AuthorityRepair::new(16 * 1024);
        let mut out = BytesMut::new();
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend([0, 0, 1, HEADERS, 0, 0, 0, 0, 1, 0x82]);
        input.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert!(repair.process(&input, &mut out).is_err());
    }
}
