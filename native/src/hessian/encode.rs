//! Writing Hessian values as Java's `Hessian2Output` does.

use std::collections::HashMap;

use super::Value;

/// Java splits strings longer than this many UTF-16 units into `R` chunks, and so do we.
const STRING_CHUNK: usize = 0x8000;
/// Binary chunk size for the encoder (the grammar allows up to 0xffff per chunk).
const BINARY_CHUNK: usize = 0x8000;

/// Writes Hessian values into a byte vector, compactly, as Java's `Hessian2Output` does.
/// Type names and class definitions are per stream: the first use writes the name,
/// later ones its index. No back-references are written (a `Value` is a tree).
#[derive(Debug, Default)]
pub struct Encoder {
    out: Vec<u8>,
    types: HashMap<String, usize>,
    /// Class name -> (field names, definition index), one entry per distinct layout.
    classes: HashMap<String, Vec<(Vec<String>, usize)>>,
    class_count: usize,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Continues after the bytes already in `buf` (e.g. a frame header to patch later).
    pub fn from_vec(buf: Vec<u8>) -> Self {
        Encoder {
            out: buf,
            ..Self::default()
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.out
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    pub fn write_value(&mut self, v: &Value) {
        match v {
            Value::Null => self.write_null(),
            Value::Bool(b) => self.write_bool(*b),
            Value::Int(i) => self.write_i32(*i),
            Value::Long(l) => self.write_i64(*l),
            Value::Double(d) => self.write_f64(*d),
            Value::String(s) => self.write_str(s),
            Value::Bytes(b) => self.write_bytes(b),
            Value::Date(ms) => self.write_date(*ms),
            Value::List { type_name, items } => self.write_list(type_name.as_deref(), items),
            Value::Map { type_name, entries } => self.write_map(type_name.as_deref(), entries),
            Value::Object { class_name, fields } => self.write_object(class_name, fields),
        }
    }

    pub fn write_null(&mut self) {
        self.out.push(b'N');
    }

    pub fn write_bool(&mut self, b: bool) {
        self.out.push(if b { b'T' } else { b'F' });
    }

    pub fn write_i32(&mut self, v: i32) {
        match v {
            -0x10..=0x2f => self.out.push((0x90 + v) as u8),
            -0x800..=0x7ff => self
                .out
                .extend_from_slice(&[(0xc8 + (v >> 8)) as u8, v as u8]),
            -0x40000..=0x3ffff => {
                self.out
                    .extend_from_slice(&[(0xd4 + (v >> 16)) as u8, (v >> 8) as u8, v as u8]);
            }
            _ => {
                self.out.push(b'I');
                self.out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }

    pub fn write_i64(&mut self, v: i64) {
        match v {
            -0x08..=0x0f => self.out.push((0xe0 + v) as u8),
            -0x800..=0x7ff => self
                .out
                .extend_from_slice(&[(0xf8 + (v >> 8)) as u8, v as u8]),
            -0x40000..=0x3ffff => {
                self.out
                    .extend_from_slice(&[(0x3c + (v >> 16)) as u8, (v >> 8) as u8, v as u8]);
            }
            _ => match i32::try_from(v) {
                Ok(i) => {
                    self.out.push(0x59);
                    self.out.extend_from_slice(&i.to_be_bytes());
                }
                Err(_) => {
                    self.out.push(b'L');
                    self.out.extend_from_slice(&v.to_be_bytes());
                }
            },
        }
    }

    /// The shortest of Java's forms that reads back bit-identical; `-0.0` keeps its sign
    /// (Java would write it as `0.0`).
    pub fn write_f64(&mut self, v: f64) {
        let negative_zero = v == 0.0 && v.is_sign_negative();
        let i = v as i32;
        if f64::from(i) == v && !negative_zero {
            match i {
                0 => return self.out.push(0x5b),
                1 => return self.out.push(0x5c),
                -0x80..=0x7f => return self.out.extend_from_slice(&[0x5d, i as u8]),
                -0x8000..=0x7fff => {
                    self.out.push(0x5e);
                    return self.out.extend_from_slice(&(i as i16).to_be_bytes());
                }
                _ => {}
            }
        }
        let mills = (v * 1000.0) as i32;
        if 0.001 * f64::from(mills) == v && !negative_zero {
            self.out.push(0x5f);
            self.out.extend_from_slice(&mills.to_be_bytes());
        } else {
            self.out.push(b'D');
            self.out.extend_from_slice(&v.to_bits().to_be_bytes());
        }
    }

    /// Milliseconds since the epoch; whole minutes use the 5-byte form.
    pub fn write_date(&mut self, ms: i64) {
        let minutes = ms / 60_000;
        match i32::try_from(minutes) {
            Ok(m) if ms % 60_000 == 0 => {
                self.out.push(0x4b);
                self.out.extend_from_slice(&m.to_be_bytes());
            }
            _ => {
                self.out.push(0x4a);
                self.out.extend_from_slice(&ms.to_be_bytes());
            }
        }
    }

    /// A string, its length in UTF-16 units; over 0x8000 units it is chunked as Java
    /// chunks it (never splitting a surrogate pair).
    pub fn write_str(&mut self, s: &str) {
        let mut rest = s;
        let mut units = utf16_len(s);
        while units > STRING_CHUNK {
            let (bytes, chunk_units) = split_at_units(rest, STRING_CHUNK);
            self.out.push(b'R');
            self.out
                .extend_from_slice(&(chunk_units as u16).to_be_bytes());
            push_java_utf8(&mut self.out, &rest[..bytes]);
            rest = &rest[bytes..];
            units -= chunk_units;
        }
        match units {
            0..=0x1f => self.out.push(units as u8),
            0x20..=0x3ff => self
                .out
                .extend_from_slice(&[0x30 + (units >> 8) as u8, units as u8]),
            _ => {
                self.out.push(b'S');
                self.out.extend_from_slice(&(units as u16).to_be_bytes());
            }
        }
        push_java_utf8(&mut self.out, rest);
    }

    pub fn write_bytes(&mut self, b: &[u8]) {
        let mut rest = b;
        while rest.len() > BINARY_CHUNK {
            let (chunk, tail) = rest.split_at(BINARY_CHUNK);
            self.out.push(b'A');
            self.out
                .extend_from_slice(&(BINARY_CHUNK as u16).to_be_bytes());
            self.out.extend_from_slice(chunk);
            rest = tail;
        }
        let n = rest.len();
        match n {
            0..=0x0f => self.out.push(0x20 + n as u8),
            0x10..=0x3ff => self
                .out
                .extend_from_slice(&[0x34 + (n >> 8) as u8, n as u8]),
            _ => {
                self.out.push(b'B');
                self.out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        self.out.extend_from_slice(rest);
    }

    /// A fixed-length list; `Some("")` is written untyped (Java refuses empty types).
    pub fn write_list(&mut self, type_name: Option<&str>, items: &[Value]) {
        let type_name = type_name.filter(|t| !t.is_empty());
        let n = items.len();
        match (type_name, n) {
            (Some(t), 0..=7) => {
                self.out.push(0x70 + n as u8);
                self.write_type(t);
            }
            (None, 0..=7) => self.out.push(0x78 + n as u8),
            (Some(t), _) => {
                self.out.push(b'V');
                self.write_type(t);
                self.write_i32(count_i32(n));
            }
            (None, _) => {
                self.out.push(0x58);
                self.write_i32(count_i32(n));
            }
        }
        for item in items {
            self.write_value(item);
        }
    }

    /// A map (`H`, or `M type` when typed; `Some("")` is written untyped).
    pub fn write_map(&mut self, type_name: Option<&str>, entries: &[(Value, Value)]) {
        match type_name.filter(|t| !t.is_empty()) {
            Some(t) => {
                self.out.push(b'M');
                self.write_type(t);
            }
            None => self.out.push(b'H'),
        }
        for (k, v) in entries {
            self.write_value(k);
            self.write_value(v);
        }
        self.out.push(b'Z');
    }

    pub fn write_map_untyped(&mut self, entries: &[(Value, Value)]) {
        self.write_map(None, entries);
    }

    /// An untyped map with string keys (a Java `HashMap<String, Object>`, such as
    /// Dubbo's attachments).
    pub fn write_str_map<K: AsRef<str>>(&mut self, entries: &[(K, Value)]) {
        self.out.push(b'H');
        for (k, v) in entries {
            self.write_str(k.as_ref());
            self.write_value(v);
        }
        self.out.push(b'Z');
    }

    /// An object instance, preceded by its class definition the first time this class
    /// name with these field names appears in the stream.
    pub fn write_object(&mut self, class_name: &str, fields: &[(String, Value)]) {
        let index = self.class_index(class_name, fields);
        if index <= 0x0f {
            self.out.push(0x60 + index as u8);
        } else {
            self.out.push(b'O');
            self.write_i32(count_i32(index));
        }
        for (_, v) in fields {
            self.write_value(v);
        }
    }

    fn class_index(&mut self, class_name: &str, fields: &[(String, Value)]) -> usize {
        let same_fields = |names: &Vec<String>| {
            names.len() == fields.len() && names.iter().zip(fields).all(|(a, (b, _))| a == b)
        };
        if let Some(layouts) = self.classes.get(class_name) {
            if let Some((_, index)) = layouts.iter().find(|(names, _)| same_fields(names)) {
                return *index;
            }
        }
        self.out.push(b'C');
        self.write_str(class_name);
        self.write_i32(count_i32(fields.len()));
        for (name, _) in fields {
            self.write_str(name);
        }
        let index = self.class_count;
        self.class_count += 1;
        let names = fields.iter().map(|(n, _)| n.clone()).collect();
        self.classes
            .entry(class_name.to_owned())
            .or_default()
            .push((names, index));
        index
    }

    fn write_type(&mut self, t: &str) {
        match self.types.get(t) {
            Some(&index) => self.write_i32(count_i32(index)),
            None => {
                self.types.insert(t.to_owned(), self.types.len());
                self.write_str(t);
            }
        }
    }
}

/// Counts beyond `i32::MAX` cannot be in memory as Hessian values in practice; clamp
/// rather than panic.
fn count_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn utf16_len(s: &str) -> usize {
    if s.is_ascii() {
        return s.len();
    }
    s.chars().map(char::len_utf16).sum()
}

/// Byte length and unit count of the longest prefix of `s` with at most `max` UTF-16
/// units that does not split a character.
fn split_at_units(s: &str, max: usize) -> (usize, usize) {
    let mut units = 0;
    for (at, c) in s.char_indices() {
        if units + c.len_utf16() > max {
            return (at, units);
        }
        units += c.len_utf16();
    }
    (s.len(), units)
}

/// UTF-8 as Java's Hessian writes it: supplementary characters become two 3-byte
/// surrogates (CESU-8); everything else is plain UTF-8.
fn push_java_utf8(out: &mut Vec<u8>, s: &str) {
    if !s.bytes().any(|b| b >= 0xf0) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    let mut units = [0u16; 2];
    for c in s.chars() {
        if c.len_utf16() == 1 {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            continue;
        }
        for &u in c.encode_utf16(&mut units).iter() {
            out.extend_from_slice(&[
                0xe0 | (u >> 12) as u8,
                0x80 | ((u >> 6) & 0x3f) as u8,
                0x80 | (u & 0x3f) as u8,
            ]);
        }
    }
}
