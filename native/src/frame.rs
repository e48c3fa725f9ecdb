//! Streaming frame splitter shared by all protocols.

use bytes::BytesMut;

use crate::error::{Error, Result};
use crate::{bolt, dubbo, grpc};

/// The capacity a buffer holding `len` bytes of a frame (or gRPC message) of `whole` bytes,
/// when known, grows to so that `needed` bytes fit: at least twice `len`, as a `Vec` grows,
/// but never past `whole` while what is needed fits in it. What the buffer takes stays
/// within twice what came of the frame, and a declared size alone reserves nothing. Past
/// the frame's end, what is needed is the next frame's start, moved out once this one is
/// cut off: exactly that.
pub fn room_to_grow(len: usize, needed: usize, whole: Option<usize>) -> usize {
    let room = needed.max(2 * len);
    match whole {
        Some(whole) if needed <= whole => room.min(whole),
        Some(_) => needed,
        None => room,
    }
}

/// `buffer`'s bytes moved to an allocation of their own of `capacity` (at least their
/// length): one no longer shared with frames cut off before them, and sized by the caller.
pub fn regrow(buffer: &mut BytesMut, capacity: usize) {
    let mut fresh = BytesMut::with_capacity(capacity.max(buffer.len()));
    fresh.extend_from_slice(buffer);
    *buffer = fresh;
}

/// Default `max_frame_size`: 16 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// Wire protocols the splitter understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// SOFA Bolt v1 and v2 (told apart by the first byte).
    Bolt,
    /// Apache Dubbo (magic 0xdabb).
    Dubbo,
    /// gRPC length-prefixed messages.
    Grpc,
}

impl Protocol {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "bolt" => Ok(Protocol::Bolt),
            "dubbo" => Ok(Protocol::Dubbo),
            "grpc" => Ok(Protocol::Grpc),
            other => Err(Error::InvalidArgument {
                name: "protocol",
                message: format!("{other:?} (expected \"bolt\", \"dubbo\" or \"grpc\")"),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Bolt => "bolt",
            Protocol::Dubbo => "dubbo",
            Protocol::Grpc => "grpc",
        }
    }

    /// Length of the frame at the start of `buf`: `Ok(None)` if more bytes are needed to
    /// know it, `Ok(Some(n))` once the header is complete (the frame itself may still
    /// be incomplete), `Err` if the header is malformed. Checks `max`.
    pub fn frame_len(self, buf: &[u8], max: usize) -> Result<Option<usize>> {
        let len = match self {
            Protocol::Bolt => bolt::frame_len(buf)?,
            Protocol::Dubbo => dubbo::frame_len(buf)?,
            Protocol::Grpc => grpc::frame_len(buf)?,
        };
        match len {
            Some(n) if n > max as u64 => Err(Error::FrameTooLarge {
                protocol: self.name(),
                size: n,
                max,
            }),
            // n <= max <= usize::MAX, so the cast is lossless.
            Some(n) => Ok(Some(n as usize)),
            None => Ok(None),
        }
    }
}

/// Calls `emit` for every complete frame at the front of `buf`, returns the number of
/// bytes consumed.
fn split_into<F: FnMut(&[u8])>(
    protocol: Protocol,
    max: usize,
    buf: &[u8],
    emit: &mut F,
) -> Result<usize> {
    let mut pos = 0;
    while pos < buf.len() {
        let rest = &buf[pos..];
        match protocol.frame_len(rest, max)? {
            Some(n) if n <= rest.len() => {
                emit(&rest[..n]);
                pos += n;
            }
            _ => break,
        }
    }
    Ok(pos)
}

/// Buffers a byte stream and cuts it into whole frames.
#[derive(Debug)]
pub struct Splitter {
    protocol: Protocol,
    max_frame_size: usize,
    buf: Vec<u8>,
    failed: Option<Error>,
}

impl Splitter {
    pub fn new(protocol: Protocol, max_frame_size: usize) -> Result<Self> {
        if max_frame_size == 0 {
            return Err(Error::InvalidArgument {
                name: "max_frame_size",
                message: "must be > 0".into(),
            });
        }
        Ok(Splitter {
            protocol,
            max_frame_size,
            buf: Vec::new(),
            failed: None,
        })
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Bytes held back as the start of an incomplete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Feeds `data`; `emit` gets every frame completed by it, in order. On a malformed
    /// frame returns the error, drops the buffer, and fails every later call.
    /// Frames emitted before the error in the same call were already passed to `emit`.
    pub fn feed<F: FnMut(&[u8])>(&mut self, data: &[u8], mut emit: F) -> Result<()> {
        if let Some(first) = &self.failed {
            return Err(Error::Poisoned(Box::new(first.clone())));
        }
        let result = if self.buf.is_empty() {
            // Fast path: parse straight from the input, keep only the tail.
            split_into(self.protocol, self.max_frame_size, data, &mut emit).map(|used| {
                self.buf.extend_from_slice(&data[used..]);
            })
        } else {
            self.buf.extend_from_slice(data);
            split_into(self.protocol, self.max_frame_size, &self.buf, &mut emit).map(|used| {
                // Drop the consumed prefix once per call.
                self.buf.drain(..used);
            })
        };
        if let Err(e) = &result {
            self.failed = Some(e.clone());
            self.buf = Vec::new();
        }
        result
    }

    /// Convenience for Rust callers and tests: collect the frames.
    pub fn feed_collect(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        self.feed(data, |f| out.push(f.to_vec()))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::*;

    fn all_frames(p: Protocol) -> Vec<Vec<u8>> {
        match p {
            Protocol::Bolt => vec![
                hex(BOLT_V1_REQUEST),
                hex(BOLT_V1_HEARTBEAT),
                hex(BOLT_V1_HEARTBEAT_ACK),
                hex(BOLT_V2_REQUEST_CRC),
                hex(BOLT_V2_RESPONSE),
                hex(BOLT_V2_REQUEST_VER1_1),
                hex(BOLT_V1_REQUEST),
            ],
            Protocol::Dubbo => vec![
                hex(DUBBO_HEARTBEAT),
                hex(DUBBO_EMPTY_BODY),
                hex(DUBBO_HEARTBEAT),
            ],
            Protocol::Grpc => vec![hex(GRPC_MESSAGE), hex(GRPC_EMPTY), hex(GRPC_COMPRESSED)],
        }
    }

    fn splitter(p: Protocol) -> Splitter {
        Splitter::new(p, DEFAULT_MAX_FRAME_SIZE).unwrap()
    }

    #[test]
    fn whole_stream_in_one_feed() {
        for p in [Protocol::Bolt, Protocol::Dubbo, Protocol::Grpc] {
            let frames = all_frames(p);
            let mut s = splitter(p);
            assert_eq!(s.feed_collect(&frames.concat()).unwrap(), frames);
            assert_eq!(s.buffered(), 0);
        }
    }

    #[test]
    fn split_at_every_boundary() {
        for p in [Protocol::Bolt, Protocol::Dubbo, Protocol::Grpc] {
            let frames = all_frames(p);
            let stream = frames.concat();
            for cut in 0..=stream.len() {
                let mut s = splitter(p);
                let mut got = s.feed_collect(&stream[..cut]).unwrap();
                got.extend(s.feed_collect(&stream[cut..]).unwrap());
                assert_eq!(got, frames, "{p:?} cut at {cut}");
                assert_eq!(s.buffered(), 0);
            }
        }
    }

    #[test]
    fn split_at_every_pair_of_boundaries() {
        for p in [Protocol::Bolt, Protocol::Dubbo, Protocol::Grpc] {
            let frames = all_frames(p);
            let stream = frames.concat();
            for a in 0..=stream.len() {
                for b in a..=stream.len() {
                    let mut s = splitter(p);
                    let mut got = s.feed_collect(&stream[..a]).unwrap();
                    got.extend(s.feed_collect(&stream[a..b]).unwrap());
                    got.extend(s.feed_collect(&stream[b..]).unwrap());
                    assert_eq!(got, frames, "{p:?} cuts at {a},{b}");
                }
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        for p in [Protocol::Bolt, Protocol::Dubbo, Protocol::Grpc] {
            let frames = all_frames(p);
            let stream = frames.concat();
            let mut s = splitter(p);
            let mut got = Vec::new();
            for (i, b) in stream.iter().enumerate() {
                got.extend(s.feed_collect(std::slice::from_ref(b)).unwrap());
                // Everything not yet emitted is buffered.
                let emitted: usize = got.iter().map(Vec::len).sum();
                assert_eq!(s.buffered(), i + 1 - emitted);
            }
            assert_eq!(got, frames);
        }
    }

    #[test]
    fn random_chunking() {
        // Deterministic xorshift: cheap stand-in for a property test.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for p in [Protocol::Bolt, Protocol::Dubbo, Protocol::Grpc] {
            let frames: Vec<Vec<u8>> = (0..40)
                .map(|i| all_frames(p)[i % all_frames(p).len()].clone())
                .collect();
            let stream = frames.concat();
            for _ in 0..200 {
                let mut s = splitter(p);
                let mut got = Vec::new();
                let mut pos = 0;
                while pos < stream.len() {
                    let n = 1 + (next() % 97) as usize;
                    let end = (pos + n).min(stream.len());
                    got.extend(s.feed_collect(&stream[pos..end]).unwrap());
                    pos = end;
                }
                assert_eq!(got, frames);
                assert_eq!(s.buffered(), 0);
            }
        }
    }

    #[test]
    fn partial_input_is_buffered() {
        let frame = hex(BOLT_V1_REQUEST);
        let mut s = splitter(Protocol::Bolt);
        assert!(s.feed_collect(&frame[..10]).unwrap().is_empty());
        assert_eq!(s.buffered(), 10);
        assert!(s.feed_collect(&[]).unwrap().is_empty());
        assert_eq!(s.feed_collect(&frame[10..]).unwrap(), vec![frame]);
        assert_eq!(s.buffered(), 0);
    }

    fn expect_err(p: Protocol, max: usize, data: &[u8]) -> Error {
        let mut s = Splitter::new(p, max).unwrap();
        let err = s.feed_collect(data).unwrap_err();
        assert!(s.is_failed());
        assert_eq!(s.buffered(), 0);
        // Stays failed, even for valid input.
        match s.feed_collect(&[]).unwrap_err() {
            Error::Poisoned(first) => assert_eq!(*first, err),
            other => panic!("expected Poisoned, got {other:?}"),
        }
        err
    }

    #[test]
    fn malformed_inputs() {
        let e = expect_err(Protocol::Bolt, DEFAULT_MAX_FRAME_SIZE, &[3]);
        assert_eq!(e.to_string(), "invalid bolt proto: 3");

        let e = expect_err(Protocol::Dubbo, DEFAULT_MAX_FRAME_SIZE, &[0xda, 0xbc]);
        assert_eq!(e.to_string(), "invalid dubbo magic: 0xdabc");
        // Detected from the first byte already.
        let e = expect_err(Protocol::Dubbo, DEFAULT_MAX_FRAME_SIZE, &[0x00]);
        assert!(e.to_string().starts_with("invalid dubbo magic"), "{e}");

        let mut neg = hex(DUBBO_HEARTBEAT);
        neg[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        let e = expect_err(Protocol::Dubbo, DEFAULT_MAX_FRAME_SIZE, &neg);
        assert_eq!(e.to_string(), "invalid dubbo body length: -1");

        let mut neg = hex(BOLT_V1_REQUEST);
        neg[18..22].copy_from_slice(&(-5i32).to_be_bytes());
        let e = expect_err(Protocol::Bolt, DEFAULT_MAX_FRAME_SIZE, &neg);
        assert_eq!(e.to_string(), "invalid bolt content length: -5");

        let mut neg = hex(BOLT_V1_REQUEST);
        neg[14..16].copy_from_slice(&(-2i16).to_be_bytes());
        let e = expect_err(Protocol::Bolt, DEFAULT_MAX_FRAME_SIZE, &neg);
        assert_eq!(e.to_string(), "invalid bolt class length: -2");

        let mut bad_type = hex(BOLT_V1_REQUEST);
        bad_type[1] = 7;
        let e = expect_err(Protocol::Bolt, DEFAULT_MAX_FRAME_SIZE, &bad_type);
        assert_eq!(e.to_string(), "invalid bolt type: 7");

        let e = expect_err(Protocol::Grpc, DEFAULT_MAX_FRAME_SIZE, &[2, 0, 0, 0, 0]);
        assert_eq!(e.to_string(), "invalid grpc compressed flag: 2");
    }

    #[test]
    fn error_after_good_frames_in_same_feed() {
        let mut data = hex(BOLT_V1_REQUEST);
        data.push(9);
        let mut s = splitter(Protocol::Bolt);
        let mut seen = 0;
        let err = s.feed(&data, |_| seen += 1).unwrap_err();
        assert_eq!(seen, 1);
        assert_eq!(err.to_string(), "invalid bolt proto: 9");
        assert!(s.is_failed());
    }

    #[test]
    fn oversize() {
        let frame = hex(BOLT_V1_REQUEST); // 43 bytes
        let mut s = Splitter::new(Protocol::Bolt, 43).unwrap();
        assert_eq!(s.feed_collect(&frame).unwrap(), vec![frame.clone()]);
        let e = expect_err(Protocol::Bolt, 42, &frame[..22]);
        assert_eq!(
            e.to_string(),
            "bolt frame size 43 exceeds max_frame_size 42"
        );

        // Length fields at their maximum never overflow.
        let mut huge = vec![0u8, 0xff, 0xff, 0xff, 0xff];
        let e = expect_err(Protocol::Grpc, DEFAULT_MAX_FRAME_SIZE, &huge);
        assert_eq!(
            e.to_string(),
            format!("grpc frame size 4294967300 exceeds max_frame_size {DEFAULT_MAX_FRAME_SIZE}")
        );
        // A huge (but legal) dubbo body under a huge limit is just "not complete yet".
        huge = hex(DUBBO_HEARTBEAT);
        huge[12..16].copy_from_slice(&i32::MAX.to_be_bytes());
        let mut s = Splitter::new(Protocol::Dubbo, usize::MAX).unwrap();
        assert!(s.feed_collect(&huge).unwrap().is_empty());
        assert_eq!(s.buffered(), huge.len());
    }

    #[test]
    fn oversize_is_detected_from_header_alone() {
        let mut s = Splitter::new(Protocol::Grpc, 1024).unwrap();
        assert!(s.feed_collect(&[0, 0, 0]).unwrap().is_empty());
        let e = s.feed_collect(&[0x10, 0x00]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::FrameTooLarge {
                    size: 4101,
                    max: 1024,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn protocol_and_argument_errors() {
        assert_eq!(Protocol::parse("grpc").unwrap(), Protocol::Grpc);
        let e = Protocol::parse("http").unwrap_err();
        assert!(e.is_argument_error());
        assert!(Splitter::new(Protocol::Bolt, 0)
            .unwrap_err()
            .is_argument_error());
    }
}
