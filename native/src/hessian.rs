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
//! back-references may copy is bounded, so no input makes it panic, overflow the stack or
//! allocate much more than the input's size.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// Deepest nesting of lists, maps and objects the decoder accepts. Dubbo payloads are
/// DTOs a few levels deep; the limit keeps recursion (decode, clone, drop, encode of a
/// decoded value) far from the stack's end.
pub const MAX_DEPTH: usize = 64;

/// Bytes (as `measure` estimates them) that back-references may copy in one stream,
/// plus [`REF_BUDGET_PER_BYTE`] per input byte. A chain of references to references
/// would otherwise grow the output exponentially in the input's length; legitimate
/// sharing (many DTOs pointing at one shared object) stays far below it.
const REF_BUDGET_BASE: usize = 32 << 20;
const REF_BUDGET_PER_BYTE: usize = 32;

/// Upper bound on capacity reserved from a declared count. The count is already checked
/// against the bytes left; this keeps nested containers from each reserving that much.
const PREALLOC_MAX: usize = 1024;

/// Java splits strings longer than this many UTF-16 units into `R` chunks, and so do we.
const STRING_CHUNK: usize = 0x8000;
/// Binary chunk size for the encoder (the grammar allows up to 0xffff per chunk).
const BINARY_CHUNK: usize = 0x8000;

const STR: &str = "hessian string";
const BIN: &str = "hessian binary";
const INT: &str = "hessian int";
const LONG: &str = "hessian long";
const DOUBLE: &str = "hessian double";
const DATE: &str = "hessian date";
const LIST: &str = "hessian list";
const MAP: &str = "hessian map";
const OBJECT: &str = "hessian object";
const CLASS: &str = "hessian class definition";
const TYPE: &str = "hessian type";
const REF: &str = "hessian reference";
const VALUE: &str = "hessian value";
const DEPTH: &str = "hessian nesting depth";

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

/// `(height, weight)` of a value: nesting levels of lists/maps/objects (0 for a scalar),
/// and roughly how many bytes of memory a copy costs (a `Value` per node plus text and
/// byte lengths).
/// Recursion is bounded because every decoded value is at most [`MAX_DEPTH`] high.
fn measure(v: &Value) -> (usize, usize) {
    const NODE: usize = std::mem::size_of::<Value>();
    let name_len = |t: &Option<String>| t.as_ref().map_or(0, String::len);
    let (children, names): (Vec<&Value>, usize) = match v {
        Value::String(s) => return (0, NODE + s.len()),
        Value::Bytes(b) => return (0, NODE + b.len()),
        Value::List { type_name, items } => (items.iter().collect(), name_len(type_name)),
        Value::Map { type_name, entries } => (
            entries.iter().flat_map(|(k, v)| [k, v]).collect(),
            name_len(type_name),
        ),
        Value::Object { class_name, fields } => (
            fields.iter().map(|(_, v)| v).collect(),
            class_name.len() + fields.iter().map(|(n, _)| n.len()).sum::<usize>(),
        ),
        _ => return (0, NODE),
    };
    // An empty container is still one level.
    let mut height = 1;
    let mut weight = NODE + names;
    for child in children {
        let (h, w) = measure(child);
        height = height.max(h + 1);
        weight = weight.saturating_add(w);
    }
    (height, weight)
}

fn is_string_code(code: u8) -> bool {
    matches!(code, 0x00..=0x1f | 0x30..=0x33 | b'S' | b'R')
}

fn unexpected(field: &'static str, code: u8) -> Error {
    Error::field(field, format_args!("unexpected code 0x{code:02x}"))
}

struct ClassDef {
    name: String,
    fields: Vec<String>,
}

/// Reads Hessian values from one stream. Class definitions, type names and the
/// back-reference table are per stream (one Dubbo body), so one decoder reads a whole
/// body value after value.
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Lists, maps and objects currently open around the value being read.
    depth: usize,
    classes: Vec<ClassDef>,
    types: Vec<String>,
    /// Every list, map and object in stream order, for `0x51` references. `None` while
    /// it is still being decoded (a reference to it is a cycle) or when no reference can
    /// follow it (see `keep_for_refs`).
    refs: Vec<Option<Value>>,
    /// Offset of the last `0x51` byte in the input: a container that ends after it
    /// cannot be referenced, so it is not copied into `refs`. Most bodies have no
    /// references at all and pay nothing for them.
    last_ref_byte: Option<usize>,
    ref_budget: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder {
            buf,
            pos: 0,
            depth: 0,
            classes: Vec::new(),
            types: Vec::new(),
            refs: Vec::new(),
            last_ref_byte: buf.iter().rposition(|&b| b == 0x51),
            ref_budget: REF_BUDGET_BASE
                .saturating_add(buf.len().saturating_mul(REF_BUDGET_PER_BYTE)),
        }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Bytes not consumed yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn peek(&self, field: &'static str) -> Result<u8> {
        self.buf.get(self.pos).copied().ok_or(Error::Truncated {
            field,
            need: 1,
            have: 0,
        })
    }

    fn byte(&mut self, field: &'static str) -> Result<u8> {
        let b = self.peek(field)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8]> {
        let have = self.remaining();
        if n > have {
            return Err(Error::Truncated {
                field,
                need: n as u64,
                have,
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    /// Reads any value. Class definitions (`C`) in front of it are read into the table
    /// on the way: in Hessian they are not values themselves.
    pub fn read_value(&mut self) -> Result<Value> {
        let code = self.code(VALUE)?;
        Ok(match code {
            b'N' => Value::Null,
            b'T' => Value::Bool(true),
            b'F' => Value::Bool(false),
            0x80..=0xd7 | b'I' => Value::Int(self.int_from(code)?),
            0xd8..=0xff | 0x38..=0x3f | 0x59 | b'L' => Value::Long(self.long_from(code)?),
            0x5b..=0x5f | b'D' => Value::Double(self.double_from(code)?),
            0x4a | 0x4b => Value::Date(self.date_from(code)?),
            c if is_string_code(c) => Value::String(self.string_from(code)?),
            0x20..=0x2f | 0x34..=0x37 | b'B' | b'A' => Value::Bytes(self.bytes_from(code)?),
            0x55 | b'V' | 0x57 | 0x58 | 0x70..=0x7f => self.list_from(code)?,
            b'M' | b'H' => self.map_from(code)?,
            b'O' | 0x60..=0x6f => self.object_from(code)?,
            0x51 => self.reference()?,
            other => return Err(unexpected(VALUE, other)),
        })
    }

    /// Skips one value. Values are decoded and dropped: a later reference may point
    /// into a skipped value, so the tables have to be kept exactly as when reading.
    pub fn skip_value(&mut self) -> Result<()> {
        self.read_value().map(drop)
    }

    /// Reads a string; `null` is an error.
    pub fn read_string(&mut self) -> Result<String> {
        self.read_opt_string()?
            .ok_or_else(|| Error::field(STR, "null"))
    }

    /// Reads a string or `null` (Java writes a null `String` as `N`).
    pub fn read_opt_string(&mut self) -> Result<Option<String>> {
        match self.code(STR)? {
            b'N' => Ok(None),
            code => self.string_from(code).map(Some),
        }
    }

    /// Reads an int in any of its encodings (not a long or double).
    pub fn read_int(&mut self) -> Result<i32> {
        let code = self.code(INT)?;
        self.int_from(code)
    }

    /// The next value's first byte, after any class definitions.
    fn code(&mut self, field: &'static str) -> Result<u8> {
        loop {
            match self.byte(field)? {
                b'C' => self.class_def()?,
                code => return Ok(code),
            }
        }
    }

    fn int_from(&mut self, code: u8) -> Result<i32> {
        let c = i32::from(code);
        Ok(match code {
            0x80..=0xbf => c - 0x90,
            0xc0..=0xcf => ((c - 0xc8) << 8) | i32::from(self.byte(INT)?),
            0xd0..=0xd7 => {
                let [b1, b0] = self.array(INT)?;
                ((c - 0xd4) << 16) | i32::from(b1) << 8 | i32::from(b0)
            }
            b'I' => i32::from_be_bytes(self.array(INT)?),
            other => return Err(unexpected(INT, other)),
        })
    }

    fn long_from(&mut self, code: u8) -> Result<i64> {
        let c = i64::from(code);
        Ok(match code {
            0xd8..=0xef => c - 0xe0,
            0xf0..=0xff => ((c - 0xf8) << 8) | i64::from(self.byte(LONG)?),
            0x38..=0x3f => {
                let [b1, b0] = self.array(LONG)?;
                ((c - 0x3c) << 16) | i64::from(b1) << 8 | i64::from(b0)
            }
            0x59 => i64::from(i32::from_be_bytes(self.array(LONG)?)),
            b'L' => i64::from_be_bytes(self.array(LONG)?),
            other => return Err(unexpected(LONG, other)),
        })
    }

    fn double_from(&mut self, code: u8) -> Result<f64> {
        Ok(match code {
            0x5b => 0.0,
            0x5c => 1.0,
            0x5d => f64::from(self.byte(DOUBLE)? as i8),
            0x5e => f64::from(i16::from_be_bytes(self.array(DOUBLE)?)),
            // Java's Hessian2Input computes exactly this; keep it bit-identical.
            0x5f => 0.001 * f64::from(i32::from_be_bytes(self.array(DOUBLE)?)),
            b'D' => f64::from_bits(u64::from_be_bytes(self.array(DOUBLE)?)),
            other => return Err(unexpected(DOUBLE, other)),
        })
    }

    fn date_from(&mut self, code: u8) -> Result<i64> {
        Ok(match code {
            0x4a => i64::from_be_bytes(self.array(DATE)?),
            0x4b => i64::from(i32::from_be_bytes(self.array(DATE)?)) * 60_000,
            other => return Err(unexpected(DATE, other)),
        })
    }

    /// A string: zero or more `R` chunks, then one final chunk (`S` or a compact form).
    fn string_from(&mut self, mut code: u8) -> Result<String> {
        let mut out = String::new();
        // A high surrogate waiting for its low half; pairs may straddle chunks.
        let mut high = None;
        loop {
            let (units, last) = match code {
                0x00..=0x1f => (usize::from(code), true),
                0x30..=0x33 => (
                    usize::from(code - 0x30) << 8 | usize::from(self.byte(STR)?),
                    true,
                ),
                b'S' | b'R' => (
                    usize::from(u16::from_be_bytes(self.array(STR)?)),
                    code == b'S',
                ),
                other => return Err(unexpected(STR, other)),
            };
            self.string_chunk(units, &mut out, &mut high)?;
            if last {
                break;
            }
            code = self.byte(STR)?;
        }
        if high.is_some() {
            return Err(Error::InvalidUtf8 { field: STR });
        }
        Ok(out)
    }

    /// `units` UTF-16 code units; every unit takes at least one byte.
    fn string_chunk(
        &mut self,
        units: usize,
        out: &mut String,
        high: &mut Option<u32>,
    ) -> Result<()> {
        let have = self.remaining();
        if units > have {
            return Err(Error::Truncated {
                field: STR,
                need: units as u64,
                have,
            });
        }
        let head = &self.buf[self.pos..self.pos + units];
        if high.is_none() && head.is_ascii() {
            // One byte per unit; the common case for names, paths and keys.
            out.push_str(std::str::from_utf8(head).map_err(|_| Error::InvalidUtf8 { field: STR })?);
            self.pos += units;
            return Ok(());
        }
        out.reserve(units);
        let mut left = units;
        while left > 0 {
            let (cp, n) = self.utf8_char(left)?;
            left -= n;
            push_code_point(cp, out, high)?;
        }
        Ok(())
    }

    /// One character of Java's UTF-8: 1-3 bytes per UTF-16 unit (surrogates included).
    /// A standard 4-byte sequence is accepted too, as the two units it stands for.
    fn utf8_char(&mut self, units_left: usize) -> Result<(u32, usize)> {
        let bad = Error::InvalidUtf8 { field: STR };
        let b0 = u32::from(self.byte(STR)?);
        let (extra, init, units) = match b0 {
            0x00..=0x7f => return Ok((b0, 1)),
            0xc0..=0xdf => (1, b0 & 0x1f, 1),
            0xe0..=0xef => (2, b0 & 0x0f, 1),
            0xf0..=0xf4 if units_left >= 2 => (3, b0 & 0x07, 2),
            _ => return Err(bad),
        };
        let mut cp = init;
        for _ in 0..extra {
            let b = self.byte(STR)?;
            if b & 0xc0 != 0x80 {
                return Err(bad);
            }
            cp = cp << 6 | u32::from(b & 0x3f);
        }
        if units == 2 && cp < 0x1_0000 {
            return Err(bad);
        }
        Ok((cp, units))
    }

    /// Binary: zero or more `A` chunks, then one final chunk (`B` or a compact form).
    fn bytes_from(&mut self, mut code: u8) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let (len, last) = match code {
                0x20..=0x2f => (usize::from(code - 0x20), true),
                0x34..=0x37 => (
                    usize::from(code - 0x34) << 8 | usize::from(self.byte(BIN)?),
                    true,
                ),
                b'B' | b'A' => (
                    usize::from(u16::from_be_bytes(self.array(BIN)?)),
                    code == b'B',
                ),
                other => return Err(unexpected(BIN, other)),
            };
            out.extend_from_slice(self.take(len, BIN)?);
            if last {
                return Ok(out);
            }
            code = self.byte(BIN)?;
        }
    }

    /// A declared element count: non-negative, and no more than the bytes left, since
    /// every element takes at least one byte.
    fn count(&mut self, field: &'static str) -> Result<usize> {
        let n = self.read_int().map_err(|e| rename(e, field))?;
        let n = usize::try_from(n).map_err(|_| Error::field(field, format_args!("count {n}")))?;
        let have = self.remaining();
        if n > have {
            return Err(Error::Truncated {
                field,
                need: n as u64,
                have,
            });
        }
        Ok(n)
    }

    /// A list or map type: a string (added to the type table) or an index into it.
    fn read_type(&mut self) -> Result<String> {
        let code = self.byte(TYPE)?;
        if is_string_code(code) {
            let name = self.string_from(code).map_err(|e| rename(e, TYPE))?;
            self.types.push(name.clone());
            return Ok(name);
        }
        let index = self.int_from(code).map_err(|e| rename(e, TYPE))?;
        usize::try_from(index)
            .ok()
            .and_then(|i| self.types.get(i))
            .cloned()
            .ok_or_else(|| Error::field(TYPE, format_args!("#{index} of {}", self.types.len())))
    }

    /// Runs `read` one nesting level deeper.
    fn nested<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.depth >= MAX_DEPTH {
            return Err(Error::field(DEPTH, format_args!("more than {MAX_DEPTH}")));
        }
        self.depth += 1;
        let out = read(self);
        self.depth -= 1;
        out
    }

    /// Whether the variable-length container being read ends here (`Z`, consumed).
    fn at_container_end(&mut self, field: &'static str) -> Result<bool> {
        let end = self.peek(field)? == b'Z';
        if end {
            self.pos += 1;
        }
        Ok(end)
    }

    /// Reserves the next back-reference number for a container being started: Java
    /// numbers lists, maps and objects in the order they begin.
    fn begin_ref(&mut self) -> usize {
        self.refs.push(None);
        self.refs.len() - 1
    }

    fn end_ref(&mut self, slot: usize, value: &Value) {
        let referable = self.last_ref_byte.is_some_and(|at| at >= self.pos);
        if referable {
            self.refs[slot] = Some(value.clone());
        }
    }

    fn list_from(&mut self, code: u8) -> Result<Value> {
        let typed = matches!(code, 0x55 | b'V' | 0x70..=0x77);
        let type_name = if typed { Some(self.read_type()?) } else { None };
        let len = match code {
            0x55 | 0x57 => None,
            b'V' | 0x58 => Some(self.count(LIST)?),
            0x70..=0x77 => Some(usize::from(code - 0x70)),
            _ => Some(usize::from(code - 0x78)),
        };
        let slot = self.begin_ref();
        let items = self.nested(|d| d.list_items(len))?;
        let value = Value::List { type_name, items };
        self.end_ref(slot, &value);
        Ok(value)
    }

    fn list_items(&mut self, len: Option<usize>) -> Result<Vec<Value>> {
        let mut items = Vec::with_capacity(len.unwrap_or(0).min(PREALLOC_MAX));
        match len {
            Some(n) => {
                for _ in 0..n {
                    items.push(self.read_value()?);
                }
            }
            None => {
                while !self.at_container_end(LIST)? {
                    items.push(self.read_value()?);
                }
            }
        }
        Ok(items)
    }

    fn map_from(&mut self, code: u8) -> Result<Value> {
        let type_name = if code == b'M' {
            Some(self.read_type()?)
        } else {
            None
        };
        let slot = self.begin_ref();
        let entries = self.nested(|d| {
            let mut entries = Vec::new();
            while !d.at_container_end(MAP)? {
                let key = d.read_value()?;
                entries.push((key, d.read_value()?));
            }
            Ok(entries)
        })?;
        let value = Value::Map { type_name, entries };
        self.end_ref(slot, &value);
        Ok(value)
    }

    /// `C name field-count field-name*`: a class definition for later objects.
    fn class_def(&mut self) -> Result<()> {
        let string = |d: &mut Self| match d.byte(CLASS)? {
            code if is_string_code(code) => d.string_from(code).map_err(|e| rename(e, CLASS)),
            other => Err(unexpected(CLASS, other)),
        };
        let name = string(self)?;
        let n = self.count(CLASS)?;
        let mut fields = Vec::with_capacity(n.min(PREALLOC_MAX));
        for _ in 0..n {
            fields.push(string(self)?);
        }
        self.classes.push(ClassDef { name, fields });
        Ok(())
    }

    fn object_from(&mut self, code: u8) -> Result<Value> {
        let declared = match code {
            b'O' => self.read_int().map_err(|e| rename(e, OBJECT))?,
            _ => i32::from(code - 0x60),
        };
        let index = usize::try_from(declared).unwrap_or(usize::MAX);
        let Some(def) = self.classes.get(index) else {
            return Err(Error::field(
                OBJECT,
                format_args!("class definition #{declared} of {}", self.classes.len()),
            ));
        };
        let class_name = def.name.clone();
        let n = def.fields.len();
        let slot = self.begin_ref();
        let fields = self.nested(|d| {
            let mut fields = Vec::with_capacity(n.min(PREALLOC_MAX));
            for i in 0..n {
                let name = d.classes[index].fields[i].clone();
                fields.push((name, d.read_value()?));
            }
            Ok(fields)
        })?;
        let value = Value::Object { class_name, fields };
        self.end_ref(slot, &value);
        Ok(value)
    }

    /// `0x51 int`: a copy of an earlier list, map or object. A reference to one still
    /// being decoded (a cycle) reads as `Null`: a `Value` tree cannot hold a cycle, and
    /// the cycle Java streams carry most often is a `Throwable` whose `cause` is itself,
    /// which Java reads back as "no cause" anyway.
    fn reference(&mut self) -> Result<Value> {
        let index = self.read_int().map_err(|e| rename(e, REF))?;
        let Some(slot) = usize::try_from(index).ok().and_then(|i| self.refs.get(i)) else {
            return Err(Error::field(
                REF,
                format_args!("#{index} of {}", self.refs.len()),
            ));
        };
        let Some(value) = slot else {
            return Ok(Value::Null);
        };
        let (height, weight) = measure(value);
        if self.depth + height > MAX_DEPTH {
            return Err(Error::field(DEPTH, format_args!("more than {MAX_DEPTH}")));
        }
        if weight > self.ref_budget {
            return Err(Error::field(REF, "copies exceed the decoder's size budget"));
        }
        self.ref_budget -= weight;
        Ok(value.clone())
    }
}

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

fn push_code_point(cp: u32, out: &mut String, high: &mut Option<u32>) -> Result<()> {
    let bad = Error::InvalidUtf8 { field: STR };
    let c = match cp {
        0xd800..=0xdbff => {
            return match high.replace(cp) {
                None => Ok(()),
                Some(_) => Err(bad),
            };
        }
        0xdc00..=0xdfff => {
            let h = high.take().ok_or(bad.clone())?;
            0x1_0000 + ((h - 0xd800) << 10) + (cp - 0xdc00)
        }
        _ if high.is_some() => return Err(bad),
        _ => cp,
    };
    out.push(char::from_u32(c).ok_or(bad)?);
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;
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
        // Lone or reversed surrogates and malformed UTF-8 are errors.
        for bad in [
            "01 ed a0 bd",
            "01 ed b8 80",
            "02 ed b8 80 ed a0 bd",
            "01 80",
            "01 c3 41",
            "01 f0 9f 98 80",
            "01 ff",
        ] {
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
