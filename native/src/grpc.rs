//! gRPC length-prefixed messages: compressed flag (1 byte, 0 or 1) + length (u32 BE). The
//! one place the prefix is read and written, for the front, the client and the splitter.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};

pub const PREFIX_LEN: usize = 5;

/// The message encodings decoded here, as `grpc-accept-encoding` lists them.
pub const ACCEPTED_ENCODINGS: &str = "identity,gzip";

/// Why a gzip message could not be read.
#[derive(Debug)]
pub enum Gunzip {
    /// Its decompressed size passes the limit given.
    TooLarge,
    Corrupt(std::io::Error),
}

/// The message a gzip-compressed one stands for, refused past `max` bytes (one byte past
/// the limit is read to tell it was passed: a gzip bomb costs no more than that).
pub fn gunzip(body: &[u8], max: usize) -> std::result::Result<Bytes, Gunzip> {
    use std::io::Read;
    let mut message = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(max as u64 + 1)
        .read_to_end(&mut message)
        .map_err(Gunzip::Corrupt)?;
    if message.len() > max {
        return Err(Gunzip::TooLarge);
    }
    Ok(message.into())
}

/// The compressed flag and the message length of the prefix at the start of `buf`; None
/// while fewer than five bytes are there.
pub fn prefix(buf: &[u8]) -> Option<(u8, usize)> {
    let head: &[u8; PREFIX_LEN] = buf.get(..PREFIX_LEN)?.try_into().ok()?;
    Some((
        head[0],
        u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize,
    ))
}

/// Appends `message`, uncompressed, with its prefix.
pub fn frame_into(buffer: &mut BytesMut, message: &[u8]) {
    buffer.reserve(PREFIX_LEN + message.len());
    buffer.put_u8(0);
    buffer.put_u32(message.len() as u32);
    buffer.put_slice(message);
}

/// See [`crate::frame::Protocol::frame_len`].
pub fn frame_len(buf: &[u8]) -> Result<Option<u64>> {
    let Some(&flag) = buf.first() else {
        return Ok(None);
    };
    if flag > 1 {
        return Err(Error::field("grpc compressed flag", flag));
    }
    Ok(prefix(buf).map(|(_, len)| (PREFIX_LEN + len) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::*;

    #[test]
    fn golden() {
        assert_eq!(frame_len(&hex(GRPC_MESSAGE)).unwrap(), Some(10));
        assert_eq!(frame_len(&hex(GRPC_EMPTY)).unwrap(), Some(5));
        assert_eq!(frame_len(&hex(GRPC_COMPRESSED)).unwrap(), Some(7));
        assert_eq!(frame_len(&[0, 0, 0, 0]).unwrap(), None);
        assert_eq!(frame_len(&[]).unwrap(), None);
    }
}
