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
/// v2 request, ver1 2, with the CRC switch bit: class "abc", content "xy", CRC.
pub const BOLT_V2_REQUEST_CRC: &str =
    "02 02 01 0001 01 00000001 01 01 00000bb8 0003 0000 00000002 \
     616263 7879 deadbeef";
/// The same with ver1 1: the switch's CRC bit is set, but no CRC follows (as SOFA Bolt writes it).
pub const BOLT_V2_REQUEST_VER1_1: &str =
    "02 01 01 0001 01 00000001 01 01 00000bb8 0003 0000 00000002 616263 7879";
/// v2 response without CRC, content "z".
pub const BOLT_V2_RESPONSE: &str = "02 01 00 0002 01 00000001 01 00 0000 0000 0000 00000001 7a";
pub const DUBBO_HEARTBEAT: &str = "dabb e2 00 0000000000000001 00000001 4e";
pub const DUBBO_EMPTY_BODY: &str = "dabb 02 14 0000000000000002 00000000";
/// Reply to DUBBO_HEARTBEAT: event | hessian2, status OK, same id, body null.
pub const DUBBO_HEARTBEAT_REPLY: &str = "dabb 22 14 0000000000000001 00000001 4e";

/// Two-way hessian2 request id 7: dubbo "2.0.2", com.example.EchoService version "1.0",
/// echo(String "hello"), attachments path, interface, version and timeout (int 3000).
pub const DUBBO_ECHO_REQUEST: &str = "
    dabb c2 00 0000000000000007 00000098
    05 322e302e32
    17 636f6d2e6578616d706c652e4563686f53657276696365
    03 312e30
    04 6563686f
    12 4c6a6176612f6c616e672f537472696e673b
    05 68656c6c6f
    48
      04 70617468       17 636f6d2e6578616d706c652e4563686f53657276696365
      09 696e74657266616365 17 636f6d2e6578616d706c652e4563686f53657276696365
      07 76657273696f6e 03 312e30
      07 74696d656f7574 d4 0bb8
    5a";

/// Responses to request 7 (hessian2, status OK), one per response type.
pub const DUBBO_RESPONSE_VALUE: &str = "dabb 02 14 0000000000000007 00000007 91 05 68656c6c6f";
pub const DUBBO_RESPONSE_NULL: &str = "dabb 02 14 0000000000000007 00000001 92";
/// Value "hello" with attachments {"dubbo": "2.0.2"}.
pub const DUBBO_RESPONSE_VALUE_ATTACHMENTS: &str = "
    dabb 02 14 0000000000000007 00000015
    94 05 68656c6c6f 48 05 647562626f 05 322e302e32 5a";
pub const DUBBO_RESPONSE_NULL_ATTACHMENTS: &str = "dabb 02 14 0000000000000007 00000003 95 48 5a";
/// java.lang.RuntimeException {detailMessage: "boom"} (trimmed to one field).
pub const DUBBO_RESPONSE_EXCEPTION: &str = "
    dabb 02 14 0000000000000007 00000032
    90 43 1a 6a6176612e6c616e672e52756e74696d65457863657074696f6e
       91 0d 64657461696c4d657373616765
    60 04 626f6f6d";
pub const DUBBO_RESPONSE_EXCEPTION_ATTACHMENTS: &str = "
    dabb 02 14 0000000000000007 00000034
    93 43 1a 6a6176612e6c616e672e52756e74696d65457863657074696f6e
       91 0d 64657461696c4d657373616765
    60 04 626f6f6d
    48 5a";
/// Status 70 (service error) with message "boom".
pub const DUBBO_RESPONSE_SERVICE_ERROR: &str = "dabb 02 46 0000000000000007 00000005 04 626f6f6d";
/// The proxy's refusal of request 7 with no route: status 60, message "no route".
pub const DUBBO_REFUSAL_NO_SERVICE: &str =
    "dabb 02 3c 0000000000000007 00000009 08 6e6f20726f757465";
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
