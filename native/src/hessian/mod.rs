//! Hessian 2.0 serialization: the subset Dubbo's `hessian2` serialization (id 2) puts on
//! the wire: null, booleans, ints, longs, doubles, dates, strings, binary, lists, maps,
//! objects (class definitions + instances) and back-references.
//!
//! Byte layouts follow the Hessian 2.0 serialization grammar and, where that grammar
//! and Java disagree, what `com.alibaba.com.caucho.hessian.io.Hessian2Output` /
//! `Hessian2Input` (dubbo-hessian-lite) actually write and read: `0x5f` is a double
//! written as `int / 1000`, and string lengths count UTF-16 code units, with a
//! supplementary character written as two 3-byte surrogates (CESU-8), as Java does.
//!
//! The decoder treats its input as hostile: every declared length is checked against the
//! bytes left before anything is allocated, nesting is limited to [`MAX_DEPTH`], and what
//! the output may hold that the input spells once (back-references, containers kept for
//! them, class and type names repeated by index) is bounded, so no input makes it panic,
//! overflow the stack or allocate much more than the input's size.

use crate::error::Error;

/// Deepest nesting of lists, maps and objects the decoder accepts. Dubbo payloads are
/// DTOs a few levels deep; the limit keeps recursion (decode, clone, drop, encode of a
/// decoded value) far from the stack's end.
pub const MAX_DEPTH: usize = 64;

/// One decoded Hessian value. Lists, maps and objects keep their Java type / class
/// names so that a value can be re-encoded the way the peer sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Double(f64),
    String(String),
    Bytes(Vec<u8>),
    /// Milliseconds since the Unix epoch, UTC.
    Date(i64),
    List {
        type_name: Option<String>,
        items: Vec<Value>,
    },
    Map {
        type_name: Option<String>,
        entries: Vec<(Value, Value)>,
    },
    Object {
        class_name: String,
        fields: Vec<(String, Value)>,
    },
}

impl Value {
    /// A short name of the variant, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Long(_) => "long",
            Value::Double(_) => "double",
            Value::String(_) => "string",
            Value::Bytes(_) => "binary",
            Value::Date(_) => "date",
            Value::List { .. } => "list",
            Value::Map { .. } => "map",
            Value::Object { .. } => "object",
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

mod decode;
mod encode;

pub use decode::Decoder;
pub use encode::Encoder;

/// Gives an error from a nested read the name of what was being read.
pub(crate) fn rename(e: Error, field: &'static str) -> Error {
    match e {
        Error::Truncated { need, have, .. } => Error::Truncated { field, need, have },
        Error::InvalidUtf8 { .. } => Error::InvalidUtf8 { field },
        Error::InvalidField {
            field: inner,
            value,
        } if inner != field => Error::InvalidField {
            field,
            value: format!("{value} ({inner})"),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;
    use crate::testdata::hex;

    fn enc(v: &Value) -> Vec<u8> {
        let mut e = Encoder::new();
        e.write_value(v);
        e.into_bytes()
    }

    fn dec(b: &[u8]) -> Result<Value> {
        let mut d = Decoder::new(b);
        let v = d.read_value()?;
        assert!(d.at_end(), "trailing bytes after {v:?}");
        Ok(v)
    }

    /// Encodes, checks the decoder reads it back whole, and that every strict prefix
    /// is an error.
    fn round_trip(v: &Value) -> Vec<u8> {
        let bytes = enc(v);
        assert_eq!(&dec(&bytes).unwrap(), v, "bytes {bytes:02x?}");
        // Every prefix of small encodings; a sample (and the last bytes) of large ones.
        let step = if bytes.len() > 4096 { 997 } else { 1 };
        let tail = bytes.len().saturating_sub(8);
        for n in (0..bytes.len()).step_by(step).chain(tail..bytes.len()) {
            assert!(
                Decoder::new(&bytes[..n]).read_value().is_err(),
                "prefix {n} of {v:?}"
            );
        }
        bytes
    }

    fn list(type_name: Option<&str>, items: Vec<Value>) -> Value {
        Value::List {
            type_name: type_name.map(str::to_owned),
            items,
        }
    }

    fn s(x: &str) -> Value {
        Value::from(x)
    }

    #[test]
    fn int_boundaries() {
        let cases: &[(i32, usize)] = &[
            (0, 1),
            (-16, 1),
            (47, 1),
            (-17, 2),
            (48, 2),
            (-2048, 2),
            (2047, 2),
            (-2049, 3),
            (2048, 3),
            (-262144, 3),
            (262143, 3),
            (-262145, 5),
            (262144, 5),
            (i32::MIN, 5),
            (i32::MAX, 5),
        ];
        for &(i, len) in cases {
            assert_eq!(round_trip(&Value::Int(i)).len(), len, "{i}");
        }
    }

    #[test]
    fn long_boundaries() {
        let cases: &[(i64, usize)] = &[
            (0, 1),
            (-8, 1),
            (15, 1),
            (-9, 2),
            (16, 2),
            (-2048, 2),
            (2047, 2),
            (-2049, 3),
            (2048, 3),
            (-262144, 3),
            (262143, 3),
            (-262145, 5),
            (262144, 5),
            (i32::MIN as i64, 5),
            (i32::MAX as i64, 5),
            (i32::MIN as i64 - 1, 9),
            (i32::MAX as i64 + 1, 9),
            (i64::MIN, 9),
            (i64::MAX, 9),
        ];
        for &(l, len) in cases {
            assert_eq!(round_trip(&Value::Long(l)).len(), len, "{l}");
        }
    }

    #[test]
    fn spec_int_and_long_bytes() {
        let int = |h: &str| dec(&hex(h)).unwrap();
        assert_eq!(int("90"), Value::Int(0));
        assert_eq!(int("80"), Value::Int(-16));
        assert_eq!(int("bf"), Value::Int(47));
        assert_eq!(int("c8 30"), Value::Int(48));
        assert_eq!(int("c0 00"), Value::Int(-2048));
        assert_eq!(int("c7 00"), Value::Int(-256));
        assert_eq!(int("cf ff"), Value::Int(2047));
        assert_eq!(int("d4 08 00"), Value::Int(2048));
        assert_eq!(int("d0 00 00"), Value::Int(-262144));
        assert_eq!(int("d7 ff ff"), Value::Int(262143));
        assert_eq!(int("49 00 04 00 00"), Value::Int(262144));
        assert_eq!(int("e0"), Value::Long(0));
        assert_eq!(int("d8"), Value::Long(-8));
        assert_eq!(int("ef"), Value::Long(15));
        assert_eq!(int("f8 10"), Value::Long(16));
        assert_eq!(int("f0 00"), Value::Long(-2048));
        assert_eq!(int("ff ff"), Value::Long(2047));
        assert_eq!(int("3c 08 00"), Value::Long(2048));
        assert_eq!(int("38 00 00"), Value::Long(-262144));
        assert_eq!(int("3f ff ff"), Value::Long(262143));
        assert_eq!(int("59 00 04 00 00"), Value::Long(262144));
        assert_eq!(int("59 80 00 00 00"), Value::Long(i32::MIN as i64));
        assert_eq!(int("4c 00 00 00 00 80 00 00 00"), Value::Long(1 << 31));
        // Java writes 300 as a two-byte int and 300L the same way with 0xf8.
        assert_eq!(enc(&Value::Int(300)), hex("c9 2c"));
        assert_eq!(enc(&Value::Long(300)), hex("f9 2c"));
    }

    #[test]
    fn doubles() {
        let cases: &[(f64, &str)] = &[
            (0.0, "5b"),
            (1.0, "5c"),
            (-128.0, "5d 80"),
            (127.0, "5d 7f"),
            (-32768.0, "5e 80 00"),
            (32767.0, "5e 7f ff"),
            (12.25, "5f 00 00 2f da"),
            (32768.0, "5f 01 f4 00 00"),
            (0.001, "5f 00 00 00 01"),
        ];
        for &(d, h) in cases {
            assert_eq!(enc(&Value::Double(d)), hex(h), "{d}");
            assert_eq!(round_trip(&Value::Double(d)), hex(h));
        }
        for d in [
            0.1,
            -1.5e300,
            f64::INFINITY,
            f64::MIN_POSITIVE,
            1e10,
            3.000_000_1,
        ] {
            round_trip(&Value::Double(d));
        }
        // -0.0 keeps its sign; NaN survives as a full double.
        let bytes = enc(&Value::Double(-0.0));
        assert_eq!(bytes[0], b'D');
        let Value::Double(z) = dec(&bytes).unwrap() else {
            panic!()
        };
        assert!(z == 0.0 && z.is_sign_negative());
        let Value::Double(n) = dec(&enc(&Value::Double(f64::NAN))).unwrap() else {
            panic!()
        };
        assert!(n.is_nan());
        assert_eq!(
            dec(&hex("44 40 28 80 00 00 00 00 00")).unwrap(),
            Value::Double(12.25)
        );
    }

    #[test]
    fn dates() {
        // Spec examples: 09:51:31 May 8, 1998 UTC, and 09:51 the same day in minutes.
        assert_eq!(
            dec(&hex("4a 00 00 00 d0 4b 92 84 b8")).unwrap(),
            Value::Date(894_621_091_000)
        );
        assert_eq!(
            dec(&hex("4b 00 e3 83 8f")).unwrap(),
            Value::Date(894_621_060_000)
        );
        assert_eq!(
            round_trip(&Value::Date(894_621_060_000)),
            hex("4b 00 e3 83 8f")
        );
        assert_eq!(round_trip(&Value::Date(894_621_091_000)).len(), 9);
        round_trip(&Value::Date(-60_000));
        round_trip(&Value::Date(i64::MIN));
        round_trip(&Value::Date(i64::MAX / 60_000 * 60_000));
    }

    #[test]
    fn scalars() {
        assert_eq!(round_trip(&Value::Null), b"N");
        assert_eq!(round_trip(&Value::Bool(true)), b"T");
        assert_eq!(round_trip(&Value::Bool(false)), b"F");
    }

    #[test]
    fn string_boundaries() {
        for (len, header) in [
            (0, "00"),
            (1, "01"),
            (31, "1f"),
            (32, "30 20"),
            (1023, "33 ff"),
            (1024, "53 04 00"),
            (0x8000, "53 80 00"),
        ] {
            let text = "a".repeat(len);
            let bytes = round_trip(&s(&text));
            let h = hex(header);
            assert_eq!(&bytes[..h.len()], &h[..], "{len}");
            assert_eq!(bytes.len(), h.len() + len);
        }
        // Over 0x8000 units: one R chunk of 0x8000, then a compact final chunk.
        let text = "b".repeat(0x8000 + 5);
        let bytes = round_trip(&s(&text));
        assert_eq!(&bytes[..3], &hex("52 80 00")[..]);
        assert_eq!(bytes[3 + 0x8000], 0x05);
        let text = "c".repeat(3 * 0x8000 + 2000);
        round_trip(&s(&text));
    }

    #[test]
    fn string_spec_bytes() {
        assert_eq!(dec(&hex("05 68 65 6c 6c 6f")).unwrap(), s("hello"));
        assert_eq!(dec(&hex("01 c3 83")).unwrap(), s("\u{c3}"));
        assert_eq!(dec(&hex("53 00 05 68 65 6c 6c 6f")).unwrap(), s("hello"));
        assert_eq!(dec(&hex("30 05 68 65 6c 6c 6f")).unwrap(), s("hello"));
        // Chunks: R "hel" then a final compact "lo".
        assert_eq!(dec(&hex("52 00 03 68 65 6c 02 6c 6f")).unwrap(), s("hello"));
        assert_eq!(
            dec(&hex("52 00 03 68 65 6c 53 00 02 6c 6f")).unwrap(),
            s("hello")
        );
        // "€" is one unit, three bytes.
        assert_eq!(dec(&hex("02 e2 82 ac 21")).unwrap(), s("€!"));
        assert_eq!(enc(&s("€!")), hex("02 e2 82 ac 21"));
    }

    #[test]
    fn supplementary_characters() {
        // U+1F600 is the surrogate pair d83d de00: two units, each three bytes.
        let java = hex("02 ed a0 bd ed b8 80");
        assert_eq!(enc(&s("😀")), java);
        assert_eq!(dec(&java).unwrap(), s("😀"));
        // Standard 4-byte UTF-8 counts as two units too.
        assert_eq!(dec(&hex("02 f0 9f 98 80")).unwrap(), s("😀"));
        // A pair split across chunks.
        assert_eq!(dec(&hex("52 00 01 ed a0 bd 01 ed b8 80")).unwrap(), s("😀"));
        round_trip(&s("a😀b€ü\u{0}\u{7ff}\u{800}\u{ffff}\u{10ffff}"));
        // A chunk boundary falling inside a pair moves one unit earlier, as in Java.
        let text = format!("{}😀{}", "x".repeat(0x7fff), "y".repeat(10));
        let bytes = round_trip(&s(&text));
        assert_eq!(&bytes[..3], &hex("52 7f ff")[..]);
        // A lone or reversed surrogate, which Java writes and reads back, is U+FFFD here.
        for (lone, text) in [
            ("01 ed a0 bd", "\u{fffd}"),
            ("01 ed b8 80", "\u{fffd}"),
            ("02 ed b8 80 ed a0 bd", "\u{fffd}\u{fffd}"),
            ("03 ed a0 bd 41 ed a0 bd", "\u{fffd}A\u{fffd}"),
            ("52 00 01 ed a0 bd 01 41", "\u{fffd}A"), // across chunks
        ] {
            assert_eq!(dec(&hex(lone)).unwrap(), s(text), "{lone}");
        }
        // Malformed UTF-8 is an error.
        for bad in ["01 80", "01 c3 41", "01 f0 9f 98 80", "01 ff"] {
            assert!(
                matches!(dec(&hex(bad)), Err(Error::InvalidUtf8 { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn bytes_boundaries() {
        for (len, header) in [
            (0, "20"),
            (15, "2f"),
            (16, "34 10"),
            (1023, "37 ff"),
            (1024, "42 04 00"),
            (0x8000, "42 80 00"),
        ] {
            let bytes = round_trip(&Value::Bytes(vec![0xab; len]));
            let h = hex(header);
            assert_eq!(&bytes[..h.len()], &h[..], "{len}");
        }
        let big = Value::Bytes((0..0x8000 * 2 + 7).map(|i| i as u8).collect());
        let bytes = round_trip(&big);
        assert_eq!(&bytes[..3], &hex("41 80 00")[..]);
        assert_eq!(
            dec(&hex("41 00 02 01 02 23 03 04 05")).unwrap(),
            Value::Bytes(vec![1, 2, 3, 4, 5])
        );
        assert_eq!(
            dec(&hex("41 00 01 09 42 00 00")).unwrap(),
            Value::Bytes(vec![9])
        );
    }

    #[test]
    fn lists() {
        // Spec: fixed-length typed list "[int" of 0, 1; untyped variable list of 0, 1.
        let typed = list(Some("[int"), vec![Value::Int(0), Value::Int(1)]);
        assert_eq!(dec(&hex("56 04 5b 69 6e 74 92 90 91")).unwrap(), typed);
        assert_eq!(dec(&hex("72 04 5b 69 6e 74 90 91")).unwrap(), typed);
        assert_eq!(dec(&hex("55 04 5b 69 6e 74 90 91 5a")).unwrap(), typed);
        let untyped = list(None, vec![Value::Int(0), Value::Int(1)]);
        assert_eq!(dec(&hex("57 90 91 5a")).unwrap(), untyped);
        assert_eq!(dec(&hex("58 92 90 91")).unwrap(), untyped);
        assert_eq!(dec(&hex("7a 90 91")).unwrap(), untyped);
        assert_eq!(round_trip(&typed), hex("72 04 5b 69 6e 74 90 91"));
        assert_eq!(round_trip(&untyped), hex("7a 90 91"));
        for n in [0, 7, 8, 100] {
            let items: Vec<Value> = (0..n).map(Value::Int).collect();
            let b = round_trip(&list(Some("[int"), items.clone()));
            assert_eq!(b[0], if n <= 7 { 0x70 + n as u8 } else { b'V' });
            let b = round_trip(&list(None, items));
            assert_eq!(b[0], if n <= 7 { 0x78 + n as u8 } else { 0x58 });
        }
        // The second use of a type name is its index in the type table.
        let two = list(None, vec![typed.clone(), typed.clone()]);
        assert_eq!(
            round_trip(&two),
            hex("7a 72 04 5b 69 6e 74 90 91 72 90 90 91")
        );
    }

    #[test]
    fn maps() {
        // Spec: map = new HashMap(); map.put(1, "fee"); map.put(16, "fie");
        let spec = hex("48 91 03 66 65 65 a0 03 66 69 65 5a");
        let v = Value::Map {
            type_name: None,
            entries: vec![(Value::Int(1), s("fee")), (Value::Int(16), s("fie"))],
        };
        assert_eq!(dec(&spec).unwrap(), v);
        assert_eq!(round_trip(&v), spec);
        let typed = Value::Map {
            type_name: Some("java.util.TreeMap".into()),
            entries: vec![(s("k"), Value::Null)],
        };
        let b = round_trip(&typed);
        assert_eq!(b[0], b'M');
        // Type by index.
        let pair = list(None, vec![typed.clone(), typed.clone()]);
        round_trip(&pair);
        assert_eq!(
            dec(&hex("7a 4d 01 54 5a 4d 90 5a")).unwrap(),
            list(
                None,
                vec![
                    Value::Map {
                        type_name: Some("T".into()),
                        entries: vec![]
                    },
                    Value::Map {
                        type_name: Some("T".into()),
                        entries: vec![]
                    },
                ]
            )
        );
        let mut e = Encoder::new();
        e.write_str_map(&[("a", s("b"))]);
        e.write_map_untyped(&[]);
        assert_eq!(e.into_bytes(), hex("48 01 61 01 62 5a 48 5a"));
    }

    fn car(color: &str, model: &str) -> Value {
        Value::Object {
            class_name: "example.Car".into(),
            fields: vec![("color".into(), s(color)), ("model".into(), s(model))],
        }
    }

    #[test]
    fn objects() {
        // Spec: class def example.Car {color, model}, then two instances.
        let spec = hex(
            "43 0b 65 78 61 6d 70 6c 65 2e 43 61 72 92 05 63 6f 6c 6f 72 05 6d 6f 64 65 6c
             60 03 72 65 64 08 63 6f 72 76 65 74 74 65
             60 05 67 72 65 65 6e 05 63 69 76 69 63",
        );
        let mut d = Decoder::new(&spec);
        assert_eq!(d.read_value().unwrap(), car("red", "corvette"));
        assert_eq!(d.read_value().unwrap(), car("green", "civic"));
        assert!(d.at_end());
        let mut e = Encoder::new();
        e.write_value(&car("red", "corvette"));
        e.write_value(&car("green", "civic"));
        assert_eq!(e.into_bytes(), spec);
        // 'O' with an explicit index.
        let mut long_form = spec.clone();
        long_form[26] = b'O';
        long_form.insert(27, 0x90);
        assert_eq!(
            Decoder::new(&long_form).read_value().unwrap(),
            car("red", "corvette")
        );
        // More than 16 classes switch to 'O int'.
        let many = list(
            None,
            (0..20)
                .map(|i| Value::Object {
                    class_name: format!("C{i}"),
                    fields: vec![("x".into(), Value::Int(i))],
                })
                .collect(),
        );
        let b = round_trip(&many);
        assert!(b.windows(2).any(|w| w == [b'O', 0xa0]), "{b:02x?}");
        // Same class name, different fields: a second definition.
        let two = list(
            None,
            vec![
                car("a", "b"),
                Value::Object {
                    class_name: "example.Car".into(),
                    fields: vec![],
                },
                car("c", "d"),
            ],
        );
        round_trip(&two);
    }

    #[test]
    fn references() {
        // [list0 = [1], ref 1 -> list0] inside an outer list (ref 0).
        let v = dec(&hex("7a 79 91 51 91")).unwrap();
        let inner = list(None, vec![Value::Int(1)]);
        assert_eq!(v, list(None, vec![inner.clone(), inner]));
        // A self reference (a cycle) reads as null.
        assert_eq!(
            dec(&hex("79 51 90")).unwrap(),
            list(None, vec![Value::Null])
        );
        // Objects and maps are referable too; ref index counts them in start order.
        // [A{x: {}}, ref 1 (the object), ref 2 (the map)]
        let spec = hex("43 01 41 91 01 78 7b 60 48 5a 51 91 51 92");
        let v = dec(&spec).unwrap();
        let map = Value::Map {
            type_name: None,
            entries: vec![],
        };
        let obj = Value::Object {
            class_name: "A".into(),
            fields: vec![("x".into(), map.clone())],
        };
        assert_eq!(v, list(None, vec![obj.clone(), obj, map]));
        // Ordinary sharing: a thousand references to one 1 KiB list.
        let mut b = vec![0x58];
        b.extend(int(1001));
        b.extend_from_slice(&hex("79 33 ff"));
        b.extend(std::iter::repeat_n(b'x', 1023));
        for _ in 0..1000 {
            b.extend_from_slice(&[0x51, 0x91]);
        }
        let Value::List { items, .. } = dec(&b).unwrap() else {
            panic!()
        };
        assert_eq!(items.len(), 1001);
        assert!(items.iter().all(|v| *v == items[0]));
        // Out of range.
        assert!(dec(&hex("7a 79 91 51 92")).is_err());
        assert!(dec(&hex("51 90")).is_err());
    }

    fn int(i: i32) -> Vec<u8> {
        let mut e = Encoder::new();
        e.write_i32(i);
        e.into_bytes()
    }

    #[test]
    fn reference_bombs_are_bounded() {
        // Level k is a two-element list referring to level k-1 twice, so the decoded
        // size doubles per level while the input grows by a few bytes.
        let mut b = vec![0x58];
        b.extend(int(50));
        b.extend_from_slice(&hex("79 33 ff"));
        b.extend(std::iter::repeat_n(b'x', 1023));
        for level in 1..50 {
            b.push(0x7a);
            for _ in 0..2 {
                b.push(0x51);
                b.extend(int(level));
            }
        }
        let e = dec(&b).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid hessian reference: copies exceed the decoder's size budget"
        );

        // References used to climb past the depth limit one level at a time.
        let mut b = vec![0x58];
        b.extend(int(100));
        b.extend_from_slice(&[0x79, 0x90]);
        for level in 1..100 {
            b.extend_from_slice(&[0x79, 0x51]);
            b.extend(int(level));
        }
        let e = dec(&b).unwrap_err();
        assert_eq!(e.to_string(), "invalid hessian nesting depth: more than 64");
    }

    /// A list (`0x57` ... `Z`) of `n` copies of `item`, after `prefix`.
    fn many(prefix: &[u8], item: &[u8], n: usize) -> Vec<u8> {
        let mut b = prefix.to_vec();
        b.push(0x57);
        for _ in 0..n {
            b.extend_from_slice(item);
        }
        b.push(b'Z');
        b
    }

    /// `S` + a 64 KiB-1 name of `a`s.
    fn long_name() -> Vec<u8> {
        let mut b = vec![b'S', 0xff, 0xff];
        b.extend(std::iter::repeat_n(b'a', 0xffff));
        b
    }

    #[test]
    fn name_copies_are_bounded() {
        // Each object of a class copies its name (and field names), each list typed by
        // index copies the type name: a few bytes apiece, 64 KiB of output each.
        let class = [&[b'C'][..], &long_name(), &[0x90]].concat();
        let e = dec(&many(&class, &[0x60], 100_000)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid hessian object: copies exceed the decoder's size budget"
        );
        let field = [&b"C\x01A\x91"[..], &long_name()].concat();
        let e = dec(&many(&field, &[0x60, b'N'], 100_000)).unwrap_err();
        assert!(e.to_string().contains("copies exceed"), "{e}");
        // The first list names the type, the others refer to it by index.
        let mut b = vec![0x57, 0x70];
        b.extend(long_name());
        for _ in 0..100_000 {
            b.extend_from_slice(&[0x70, 0x90]);
        }
        b.push(b'Z');
        let e = dec(&b).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid hessian type: copies exceed the decoder's size budget"
        );
        // Names as a DTO list has them decode.
        let dto = b"C\x0bcom.x.Order\x92\x02id\x04name";
        let Value::List { items, .. } = dec(&many(dto, &[0x60, 0x91, 0x01, b'x'], 1000)).unwrap()
        else {
            panic!()
        };
        assert_eq!(items.len(), 1000);
    }

    #[test]
    fn keeping_containers_leaves_the_names_their_budget() {
        // 150 000 objects of a class with eight fields, then a 0x51 byte (a "Q" in a later
        // string): keeping every object for references spends its budget, and the names
        // each object copies must still be within theirs.
        let dto = b"C\x11com.example.Order\x98\x01a\x01b\x01c\x01d\x01e\x01f\x01g\x01h";
        let mut b = many(
            dto,
            &[0x60, b'N', b'N', b'N', b'N', b'N', b'N', b'N', b'N'],
            150_000,
        );
        let value_len = b.len();
        b.extend_from_slice(b"\x12com.x.QueryService");
        let mut d = Decoder::new(&b);
        let Value::List { items, .. } = d.read_value().unwrap() else {
            panic!()
        };
        assert_eq!((items.len(), d.position()), (150_000, value_len));
        assert_eq!(d.read_value().unwrap(), Value::from("com.x.QueryService"));
    }

    #[test]
    fn nesting_does_not_multiply_the_work_of_keeping_containers() {
        // Each container's weight used to be measured by walking its subtree once it
        // ended: 64 levels around a million nulls walked them 64 times (a 16 MiB frame
        // held the mesh thread for seconds). Timed against one level, best of three.
        let nested = |levels: usize| {
            let mut b = vec![0x57; levels];
            b.extend(std::iter::repeat_n(b'N', 2_000_000)); // too heavy to keep, at any level
            b.extend(std::iter::repeat_n(b'Z', levels));
            b.push(0x51);
            b
        };
        let best = |b: &[u8]| {
            (0..3)
                .map(|_| {
                    let started = std::time::Instant::now();
                    Decoder::new(b).read_value().unwrap();
                    started.elapsed()
                })
                .min()
                .unwrap()
        };
        let (flat, deep) = (best(&nested(1)), best(&nested(64)));
        assert!(deep < flat * 3, "1 level {flat:?}, 64 levels {deep:?}");
    }

    #[test]
    fn containers_kept_for_references_are_bounded() {
        // A 0x51 byte after the value makes every container referable; 64 nested lists
        // around a million nulls would each keep a copy of all of them (gigabytes).
        let mut b = vec![0x57; 64];
        b.extend(std::iter::repeat_n(b'N', 1_000_000));
        b.extend(std::iter::repeat_n(b'Z', 64));
        let value_len = b.len();
        b.push(0x51);
        let mut d = Decoder::new(&b);
        let v = d.read_value().unwrap();
        assert_eq!(d.position(), value_len);
        assert!(d.kept_refs() < 8, "kept {}", d.kept_refs());
        drop(v);
        // Inner containers are kept first: a reference to one still works.
        let mut b = vec![0x57; 3];
        b.extend_from_slice(&[0x7a, b'N', b'T']);
        b.extend(std::iter::repeat_n(b'N', 1_000_000));
        b.extend_from_slice(&[0x51, 0x93]);
        b.extend(std::iter::repeat_n(b'Z', 3));
        let Value::List { items, .. } = dec(&b).unwrap() else {
            panic!()
        };
        let Value::List { items, .. } = &items[0] else {
            panic!()
        };
        let Value::List { items, .. } = &items[0] else {
            panic!()
        };
        assert_eq!(items.len(), 1_000_002);
        assert_eq!(items[0], items[1_000_001]);
    }

    #[test]
    fn nesting_limit() {
        let deep = |n: usize| {
            let mut b = vec![0x79; n];
            b.push(b'N');
            b
        };
        assert!(dec(&deep(MAX_DEPTH)).is_ok());
        let e = dec(&deep(MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(e.to_string(), "invalid hessian nesting depth: more than 64");
        // A million levels: an error, not a stack overflow.
        assert!(dec(&deep(1_000_000)).is_err());
        let mut maps = [b'H', 0x90].repeat(100_000);
        maps.push(b'N');
        assert!(dec(&maps).is_err());
    }

    #[test]
    fn hostile_lengths() {
        let err = |h: &str| dec(&hex(h)).unwrap_err().to_string();
        assert_eq!(
            err("58 49 7f ff ff ff 90"),
            "truncated hessian list: need 2147483647 bytes, have 1"
        );
        assert_eq!(err("58 8f"), "invalid hessian list: count -1");
        assert_eq!(
            err("56 01 61 49 7f ff ff ff"),
            "truncated hessian list: need 2147483647 bytes, have 0"
        );
        assert_eq!(
            err("53 ff ff 61"),
            "truncated hessian string: need 65535 bytes, have 1"
        );
        assert_eq!(
            err("42 ff ff 61"),
            "truncated hessian binary: need 65535 bytes, have 1"
        );
        assert_eq!(
            err("43 01 41 49 7f ff ff ff"),
            "truncated hessian class definition: need 2147483647 bytes, have 0"
        );
        assert_eq!(
            err("60"),
            "invalid hessian object: class definition #0 of 0"
        );
        assert_eq!(
            err("4f 49 7f ff ff ff"),
            "invalid hessian object: class definition #2147483647 of 0"
        );
        assert_eq!(err("72 91 90 90"), "invalid hessian type: #1 of 0");
        assert_eq!(
            err("51 49 80 00 00 00"),
            "invalid hessian reference: #-2147483648 of 0"
        );
        assert_eq!(err("5a"), "invalid hessian value: unexpected code 0x5a");
        assert_eq!(err("40"), "invalid hessian value: unexpected code 0x40");
        assert_eq!(err("57 90"), "truncated hessian list: need 1 bytes, have 0");
        assert_eq!(err(""), "truncated hessian value: need 1 bytes, have 0");
        assert_eq!(
            err("72 4e"),
            "invalid hessian type: unexpected code 0x4e (hessian int)"
        );
    }

    #[test]
    fn skipping_parses_as_reading_does() {
        // Skipped: a list holding a class definition with an object of it, and a typed
        // list; after it, an object of that class and a list of that type by index.
        let skipped = "57 43 01 41 91 01 78 60 90 71 03 61 62 63 90 5a";
        let after = hex("60 91 71 90 92");
        let b = hex(&format!("{skipped} 60 91 71 90 92"));
        let mut skipping = Decoder::new(&b);
        skipping.skip_value().unwrap();
        let mut reading = Decoder::new(&b);
        reading.read_value().unwrap();
        assert_eq!(skipping.position(), b.len() - after.len());
        for _ in 0..2 {
            assert_eq!(
                skipping.read_value().unwrap(),
                reading.read_value().unwrap()
            );
        }
        assert!(skipping.at_end());
        // Bad input fails the same way.
        let deep = [0x57].repeat(MAX_DEPTH + 1);
        let cases = [
            hex("58 49 7f ff ff ff 90"),
            hex("53 ff ff 61"),
            hex("60"),
            hex("72 91 90 90"),
            hex("57 90"),
            hex("48 90"),
            hex("5a"),
            hex("43 01 41 49 7f ff ff ff"),
            deep,
        ];
        for b in cases {
            let skipped = Decoder::new(&b).skip_value().unwrap_err().to_string();
            assert_eq!(skipped, dec(&b).unwrap_err().to_string());
        }
    }

    #[test]
    fn read_helpers() {
        let b = hex("4e 03 61 62 63 c8 30 90 4e");
        let mut d = Decoder::new(&b);
        assert_eq!(d.read_opt_string().unwrap(), None);
        assert_eq!(d.position(), 1);
        assert_eq!(d.read_string().unwrap(), "abc");
        assert_eq!(d.read_int().unwrap(), 48);
        d.skip_value().unwrap();
        assert_eq!(
            d.read_string().unwrap_err().to_string(),
            "invalid hessian string: null"
        );
        assert!(d.at_end());
        let mut d = Decoder::new(&[0x91]);
        assert_eq!(
            d.read_string().unwrap_err().to_string(),
            "invalid hessian string: unexpected code 0x91"
        );
    }

    fn sample() -> Value {
        list(
            Some("java.util.ArrayList"),
            vec![
                Value::Null,
                Value::Bool(true),
                Value::Int(-70000),
                Value::Long(1 << 40),
                Value::Double(2.5),
                s("héllo 😀"),
                Value::Bytes(vec![0, 1, 2, 255]),
                Value::Date(1_700_000_000_123),
                Value::Map {
                    type_name: None,
                    entries: vec![
                        (s("k"), car("blue", "beetle")),
                        (Value::Int(1), list(None, vec![])),
                    ],
                },
                car("red", "mini"),
                list(Some("[string"), vec![s("a"), s("b")]),
            ],
        )
    }

    #[test]
    fn mixed_round_trip() {
        round_trip(&sample());
    }

    #[test]
    fn fuzz_flips_never_panic() {
        let bytes = enc(&sample());
        for i in 0..bytes.len() {
            for x in [0x01u8, 0x10, 0x80, 0xff, 0x51 ^ bytes[i]] {
                let mut b = bytes.clone();
                b[i] ^= x;
                let _ = Decoder::new(&b).read_value();
            }
        }
        // Every single byte value, alone and followed by a few bytes.
        for c in 0..=255u8 {
            let _ = Decoder::new(&[c]).read_value();
            let _ = Decoder::new(&[c, 0xff, 0xff, 0xff, 0xff, 0x51, 0x90]).read_value();
        }
    }
}
