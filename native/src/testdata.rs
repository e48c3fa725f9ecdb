//! Golden frames shared by the unit tests.

pub fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd hex length");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// id 111, hessian2, no timeout, empty class, header {"k": "v"}, content "hello world".
pub const BOLT_V1_REQUEST: &str = "01 01 0001 01 0000006f 01 ffffffff 0000 000a 0000000b \
     00000001 6b 00000001 76 68656c6c6f20776f726c64";
pub const BOLT_V1_HEARTBEAT: &str = "01 01 0000 01 0000006f 01 ffffffff 0000 0000 00000000";
pub const BOLT_V1_HEARTBEAT_ACK: &str = "01 00 0000 01 0000006f 01 0000 0000 0000 00000000";
/// v2 request with the CRC switch bit: class "abc", header 2 bytes, content "xy", CRC.
pub const BOLT_V2_REQUEST_CRC: &str =
    "02 01 01 0001 01 00000001 01 01 00000bb8 0003 0000 00000002 \
     616263 7879 deadbeef";
/// v2 response without CRC, content "z".
pub const BOLT_V2_RESPONSE: &str = "02 01 00 0002 01 00000001 01 00 0000 0000 0000 00000001 7a";
pub const DUBBO_HEARTBEAT: &str = "dabb e2 00 0000000000000001 00000001 4e";
pub const DUBBO_EMPTY_BODY: &str = "dabb 02 14 0000000000000002 00000000";
pub const GRPC_MESSAGE: &str = "00 00000005 68656c6c6f";
pub const GRPC_EMPTY: &str = "00 00000000";
pub const GRPC_COMPRESSED: &str = "01 00000002 abcd";

/// Frames recorded from peers this project did not write (anthunder, dubbo-ssl-python,
/// dubbo-py) by `tests/mesh/make_golden.py`.
const GOLDEN: &str = include_str!("../../tests/mesh/golden/vectors.json");

/// The bytes of golden vector `name`.
pub fn golden(name: &str) -> Vec<u8> {
    let entry = GOLDEN
        .find(&format!("\"{name}\": {{"))
        .unwrap_or_else(|| panic!("no golden vector {name}"));
    let rest = &GOLDEN[entry..];
    let start = rest.find("\"hex\": \"").expect("a hex field") + "\"hex\": \"".len();
    let end = start + rest[start..].find('"').expect("closing quote");
    hex(&rest[start..end])
}
