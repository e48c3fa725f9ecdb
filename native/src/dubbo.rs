//! Apache Dubbo framing: 16-byte header
//! `magic 0xdabb (2) | flag (1) | status (1) | request id (i64) | body length (i32)`.

use crate::error::{Error, Result};

pub const MAGIC: u16 = 0xdabb;
pub const HEADER_LEN: usize = 16;

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

pub struct Dubbo;

impl crate::codec::Codec for Dubbo {
    const NAME: &'static str = "dubbo";
    fn frame_len(buf: &[u8]) -> Result<Option<u64>> {
        frame_len(buf)
    }
    fn head(_frame: &[u8]) -> Result<crate::codec::FrameHead> {
        Err(Error::field("dubbo", "todo"))
    }
    fn request_meta(_frame: &[u8]) -> Result<crate::codec::RequestMeta> {
        Err(Error::field("dubbo", "todo"))
    }
    fn set_request_id(_frame: &mut [u8], _id: u64) {}
    fn heartbeat_reply(_frame: &[u8], _head: &crate::codec::FrameHead) -> Vec<u8> {
        Vec::new()
    }
    fn heartbeat_request(_id: u64) -> Vec<u8> {
        Vec::new()
    }
    fn refusal(
        _frame: &[u8],
        _head: &crate::codec::FrameHead,
        _r: crate::codec::Refusal,
        _m: &str,
    ) -> Vec<u8> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::*;

    #[test]
    fn golden() {
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
}
