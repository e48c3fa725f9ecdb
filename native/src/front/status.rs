//! gRPC wire details of the HTTP/2 mapping: timeouts, status messages, metadata.

use http::HeaderMap;

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

/// Percent-encode a status message as the gRPC spec asks for `grpc-message`.
pub fn encode_message(message: &str) -> String {
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

/// The application metadata of a request, or None when there is none (the common case).
pub fn metadata(headers: &HeaderMap) -> Option<Vec<(String, Vec<u8>)>> {
    let mut pairs: Option<Vec<(String, Vec<u8>)>> = None;
    for (name, value) in headers {
        let name = name.as_str();
        if !is_transport_header(name) {
            pairs
                .get_or_insert_with(Vec::new)
                .push((name.to_owned(), value.as_bytes().to_vec()));
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

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
