//! gRPC length-prefixed messages: compressed flag (1 byte, 0 or 1) + length (u32 BE).

use crate::error::{Error, Result};

pub const PREFIX_LEN: usize = 5;

/// See [`crate::frame::Protocol::frame_len`].
pub fn frame_len(buf: &[u8]) -> Result<Option<u64>> {
    let Some(&flag) = buf.first() else {
        return Ok(None);
    };
    if flag > 1 {
        return Err(Error::field("grpc compressed flag", flag));
    }
    let Some(len) = buf.get(1..PREFIX_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(len.try_into().expect("4 bytes"));
    Ok(Some(PREFIX_LEN as u64 + u64::from(len)))
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
