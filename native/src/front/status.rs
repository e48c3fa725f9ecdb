//! gRPC wire details of the HTTP/2 mapping: timeouts, status messages, metadata.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use http::HeaderMap;

use super::connection::Metadata;

/// `grpc-timeout` ("<up to 8 digits><unit>", unit one of H M S m u n) in microseconds.
pub fn parse_timeout(value: &[u8]) -> Option<i64> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: i64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => n * 3_600_000_000,
        b"M" => n * 60_000_000,
        b"S" => n * 1_000_000,
        b"m" => n * 1_000,
        b"u" => n,
        b"n" => (n + 999) / 1_000,
        _ => return None,
    })
}

/// Bytes of a status message sent: grpc-java refuses trailers over 8 KiB and grpc-core
/// some over 8 KiB, so a message echoing a long input (a key, a name) would reach them as
/// another status than its own. Percent-encoding may triple it.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Percent-encode a status message as the gRPC spec asks for `grpc-message`, cut to
/// [`MAX_MESSAGE_BYTES`] (on a character boundary) when longer.
pub fn encode_message(message: &str) -> String {
    let cut;
    let message = if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        cut = format!("{}... ({} bytes in all)", &message[..end], message.len());
        cut.as_str()
    } else {
        message
    };
    let mut out = String::with_capacity(message.len());
    for &byte in message.as_bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Headers that belong to the transport, not to the application's metadata.
fn is_transport_header(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "te"
            | "grpc-timeout"
            | "grpc-encoding"
            | "grpc-accept-encoding"
            | "user-agent"
    )
}

/// Binary values: standard alphabet, padded or not (gRPC peers send both).
const BINARY: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The application metadata of a request, or None when there is none (the common case). A
/// binary (`-bin`) value arrives decoded, as gRPC libraries hand it over; Err names a header
/// whose value is not base64 (a comma-joined list is not: grpc-go and grpc core refuse it too).
pub fn metadata(headers: &HeaderMap) -> Result<Metadata, String> {
    let mut pairs: Metadata = None;
    for (name, value) in headers {
        let name = name.as_str();
        if is_transport_header(name) {
            continue;
        }
        let pairs = pairs.get_or_insert_with(Vec::new);
        if !name.ends_with("-bin") {
            pairs.push((name.to_owned(), value.as_bytes().to_vec()));
            continue;
        }
        let decoded = BINARY
            .decode(value.as_bytes())
            .map_err(|why| format!("metadata {name}: the value is not base64 ({why})"))?;
        pairs.push((name.to_owned(), decoded));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_MESSAGE_BYTES); // two bytes each
        let encoded = encode_message(&long);
        assert!(encoded.ends_with(&format!("... ({} bytes in all)", 2 * MAX_MESSAGE_BYTES)));
        assert_eq!(
            encoded.matches("%C3%A9").count(),
            MAX_MESSAGE_BYTES / 2,
            "whole characters only"
        );
        assert_eq!(encode_message("short"), "short");
    }

    #[test]
    fn binary_metadata_is_decoded() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/grpc".parse().unwrap());
        headers.insert("trace-bin", "AAEC".parse().unwrap());
        headers.append("trace-bin", "/w".parse().unwrap()); // unpadded
        headers.insert("tags-bin", "AQ==".parse().unwrap());
        headers.insert("user", "a=b".parse().unwrap());
        let mut pairs = metadata(&headers).unwrap().unwrap();
        pairs.sort();
        let expected: Vec<(String, Vec<u8>)> = vec![
            ("tags-bin".into(), vec![1]),
            ("trace-bin".into(), vec![0, 1, 2]),
            ("trace-bin".into(), vec![255]),
            ("user".into(), b"a=b".to_vec()),
        ];
        assert_eq!(pairs, expected);
        for bad in ["not base64!", "AQ==,Ag=="] {
            headers.insert("bad-bin", bad.parse().unwrap());
            assert!(metadata(&headers).unwrap_err().contains("bad-bin"));
        }
        let mut transport_only = HeaderMap::new();
        transport_only.insert("te", "trailers".parse().unwrap());
        assert_eq!(metadata(&transport_only), Ok(None));
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout(b"1S"), Some(1_000_000));
        assert_eq!(parse_timeout(b"250m"), Some(250_000));
        assert_eq!(parse_timeout(b"2H"), Some(7_200_000_000));
        assert_eq!(parse_timeout(b"1500n"), Some(2));
        assert_eq!(parse_timeout(b"99999999u"), Some(99_999_999));
        assert_eq!(parse_timeout(b"123456789S"), None);
        assert_eq!(parse_timeout(b"S"), None);
        assert_eq!(parse_timeout(b"10x"), None);
        assert_eq!(parse_timeout(b""), None);
    }

    #[test]
    fn messages() {
        assert_eq!(encode_message("key is empty"), "key is empty");
        assert_eq!(encode_message("100% ünï\n"), "100%25 %C3%BCn%C3%AF%0A");
    }
}
