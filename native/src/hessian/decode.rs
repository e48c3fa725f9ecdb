//! Reading Hessian values from one stream; how hostile input is bounded is told in
//! `hessian/mod.rs`.

use super::{rename, Value, MAX_DEPTH};
use crate::error::{Error, Result};

/// Bytes (weights, as `NODE` tells) that copies may take in one stream, plus
/// [`COPY_BUDGET_PER_BYTE`] per input byte. A copy is what the output holds that the input
/// spells only once: a back-reference's target, a class's name and field names in each of
/// its objects, a type name used by index. A few input bytes could otherwise make
/// gigabytes (references to references, objects of a class with a long name); legitimate
/// sharing and naming stay far below it. Containers kept for references to come have a
/// budget of the same size of their own: a `0x51` byte in a later string or number makes
/// every container before it referable, and keeping them must not use up what the names
/// of a large, valid body need.
const COPY_BUDGET_BASE: usize = 32 << 20;
const COPY_BUDGET_PER_BYTE: usize = 32;

/// Upper bound on capacity reserved from a declared count. The count is already checked
/// against the bytes left; this keeps nested containers from each reserving that much.
const PREALLOC_MAX: usize = 1024;

// What each read is called in errors.
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

/// Roughly the bytes of memory a value costs: a `Value` per node, plus the text and bytes
/// it holds. A value's weight, and its height (nesting levels of lists, maps and objects;
/// 0 for a scalar), are summed up as it is decoded: measuring each container afterwards
/// walked its whole subtree once per level around it.
const NODE: usize = std::mem::size_of::<Value>();

fn is_string_code(code: u8) -> bool {
    matches!(code, 0x00..=0x1f | 0x30..=0x33 | b'S' | b'R')
}

fn unexpected(field: &'static str, code: u8) -> Error {
    Error::field(field, format_args!("unexpected code 0x{code:02x}"))
}

struct ClassDef {
    name: String,
    fields: Vec<String>,
    /// What an object of this class copies: its class name and field names.
    names_len: usize,
}

/// A list, map or object in the back-reference table.
enum Slot {
    /// Still being decoded: a reference to it is a cycle.
    Open,
    Kept(Box<Kept>),
    /// Not kept: no reference byte follows it, or the copy budget was spent.
    Dropped,
}

struct Kept {
    value: Value,
    height: usize,
    weight: usize,
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
    /// Every list, map and object in stream order, for `0x51` references.
    refs: Vec<Slot>,
    /// Offset of the last `0x51` byte in the input: a container that ends after it
    /// cannot be referenced, so it is not copied into `refs`. Most bodies have no
    /// references at all and pay nothing for them.
    last_ref_byte: Option<usize>,
    copy_budget: usize,
    keep_budget: usize,
    /// Weight of every value decoded so far: a container's is what this grew by while it
    /// was read.
    made: usize,
    /// The deepest level a value read in the innermost open container reached (its depth
    /// plus its height).
    bottom: usize,
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
            copy_budget: budget(buf.len()),
            keep_budget: budget(buf.len()),
            made: 0,
            bottom: 0,
        }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Containers kept for references to come.
    #[cfg(test)]
    pub fn kept_refs(&self) -> usize {
        self.refs
            .iter()
            .filter(|slot| matches!(slot, Slot::Kept(_)))
            .count()
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
        let scalar = match code {
            b'N' => Value::Null,
            b'T' => Value::Bool(true),
            b'F' => Value::Bool(false),
            0x80..=0xd7 | b'I' => Value::Int(self.int_from(code)?),
            0xd8..=0xff | 0x38..=0x3f | 0x59 | b'L' => Value::Long(self.long_from(code)?),
            0x5b..=0x5f | b'D' => Value::Double(self.double_from(code)?),
            0x4a | 0x4b => Value::Date(self.date_from(code)?),
            c if is_string_code(c) => Value::String(self.string_from(code)?),
            0x20..=0x2f | 0x34..=0x37 | b'B' | b'A' => Value::Bytes(self.bytes_from(code)?),
            0x55 | b'V' | 0x57 | 0x58 | 0x70..=0x7f => return self.list_from(code),
            b'M' | b'H' => return self.map_from(code),
            b'O' | 0x60..=0x6f => return self.object_from(code),
            0x51 => return self.reference(),
            other => return Err(unexpected(VALUE, other)),
        };
        let weight = NODE
            + match &scalar {
                Value::String(s) => s.len(),
                Value::Bytes(b) => b.len(),
                _ => 0,
            };
        self.made_one(0, weight);
        Ok(scalar)
    }

    /// Counts a value just read at this depth.
    fn made_one(&mut self, height: usize, weight: usize) {
        self.made = self.made.saturating_add(weight);
        self.bottom = self.bottom.max(self.depth + height);
    }

    /// Reads a list, map or object's contents with `read`, then numbers and keeps it for
    /// references: what it is made of, `own` is the weight of its names.
    fn container(
        &mut self,
        own: usize,
        read: impl FnOnce(&mut Self) -> Result<Value>,
    ) -> Result<Value> {
        let slot = self.begin_ref();
        let (made_before, outer_bottom) = (self.made, self.bottom);
        self.bottom = self.depth + 1; // an empty container is still one level
        let value = self.nested(read)?;
        let height = self.bottom - self.depth;
        self.bottom = outer_bottom;
        let weight = (self.made - made_before).saturating_add(NODE + own);
        self.made = made_before;
        self.made_one(height, weight);
        self.end_ref(slot, &value, height, weight);
        Ok(value)
    }

    /// Skips one value. A later reference may point into it, so then it is decoded and
    /// dropped, the tables kept exactly as when reading. With no reference byte left in
    /// the input, nothing can: it is only parsed, class definitions and types still going
    /// into their tables, and no value is built (a body of a million empty lists built
    /// them all, to drop them).
    pub fn skip_value(&mut self) -> Result<()> {
        if self.last_ref_byte.is_some_and(|at| at >= self.pos) {
            return self.read_value().map(drop);
        }
        self.pass()
    }

    /// Parses one value without building it; see `skip_value`.
    fn pass(&mut self) -> Result<()> {
        let code = self.code(VALUE)?;
        match code {
            b'N' | b'T' | b'F' => {}
            0x80..=0xd7 | b'I' => _ = self.int_from(code)?,
            0xd8..=0xff | 0x38..=0x3f | 0x59 | b'L' => _ = self.long_from(code)?,
            0x5b..=0x5f | b'D' => _ = self.double_from(code)?,
            0x4a | 0x4b => _ = self.date_from(code)?,
            c if is_string_code(c) => _ = self.string_from(code)?,
            0x20..=0x2f | 0x34..=0x37 | b'B' | b'A' => _ = self.bytes_from(code)?,
            0x55 | b'V' | 0x57 | 0x58 | 0x70..=0x7f => {
                let (_, len) = self.list_head(code)?;
                self.nested(|d| match len {
                    Some(n) => (0..n).try_for_each(|_| d.pass()),
                    None => {
                        while !d.at_container_end(LIST)? {
                            d.pass()?;
                        }
                        Ok(())
                    }
                })?;
            }
            b'M' | b'H' => {
                if code == b'M' {
                    self.read_type()?;
                }
                self.nested(|d| {
                    while !d.at_container_end(MAP)? {
                        d.pass()?;
                        d.pass()?;
                    }
                    Ok(())
                })?;
            }
            b'O' | 0x60..=0x6f => {
                let index = self.object_class(code)?;
                let n = self.classes[index].fields.len();
                self.nested(|d| (0..n).try_for_each(|_| d.pass()))?;
            }
            0x51 => _ = self.reference()?, // never: no reference byte is left
            other => return Err(unexpected(VALUE, other)),
        }
        Ok(())
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
            out.push(char::REPLACEMENT_CHARACTER); // a high surrogate ended the string alone
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

    /// Takes `bytes` of copying from the budget, or fails naming `field`.
    fn charge(&mut self, bytes: usize, field: &'static str) -> Result<()> {
        self.copy_budget = self
            .copy_budget
            .checked_sub(bytes)
            .ok_or_else(|| Error::field(field, "copies exceed the decoder's size budget"))?;
        Ok(())
    }

    /// A list or map type: a string (added to the type table) or an index into it.
    fn read_type(&mut self) -> Result<String> {
        let code = self.byte(TYPE)?;
        if is_string_code(code) {
            let name = self.string_from(code).map_err(|e| rename(e, TYPE))?;
            self.charge(name.len(), TYPE)?; // the table's copy
            self.types.push(name.clone());
            return Ok(name);
        }
        let index = self.int_from(code).map_err(|e| rename(e, TYPE))?;
        let Some(len) = usize::try_from(index)
            .ok()
            .and_then(|i| self.types.get(i))
            .map(String::len)
        else {
            let known = self.types.len();
            return Err(Error::field(TYPE, format_args!("#{index} of {known}")));
        };
        self.charge(len, TYPE)?;
        Ok(self.types[index as usize].clone())
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
        self.refs.push(Slot::Open);
        self.refs.len() - 1
    }

    /// Keeps a copy of a finished container for references to come, while the budget
    /// lasts. Running out fails only a reference to it: a `0x51` byte inside a string or
    /// a number makes every container before it referable, and most are never referenced.
    fn end_ref(&mut self, slot: usize, value: &Value, height: usize, weight: usize) {
        let referable = self.last_ref_byte.is_some_and(|at| at >= self.pos);
        self.refs[slot] = Slot::Dropped;
        if !referable {
            return;
        }
        if let Some(left) = self.keep_budget.checked_sub(weight) {
            self.keep_budget = left;
            let value = value.clone();
            self.refs[slot] = Slot::Kept(Box::new(Kept {
                value,
                height,
                weight,
            }));
        }
    }

    /// A list's type name, when it is typed, and its length, when it is fixed.
    fn list_head(&mut self, code: u8) -> Result<(Option<String>, Option<usize>)> {
        let typed = matches!(code, 0x55 | b'V' | 0x70..=0x77);
        let type_name = if typed { Some(self.read_type()?) } else { None };
        let len = match code {
            0x55 | 0x57 => None,
            b'V' | 0x58 => Some(self.count(LIST)?),
            0x70..=0x77 => Some(usize::from(code - 0x70)),
            _ => Some(usize::from(code - 0x78)),
        };
        Ok((type_name, len))
    }

    fn list_from(&mut self, code: u8) -> Result<Value> {
        let (type_name, len) = self.list_head(code)?;
        let own = type_name.as_ref().map_or(0, String::len);
        self.container(own, |d| {
            let items = d.list_items(len)?;
            Ok(Value::List { type_name, items })
        })
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
        let own = type_name.as_ref().map_or(0, String::len);
        self.container(own, |d| {
            let mut entries = Vec::new();
            while !d.at_container_end(MAP)? {
                let key = d.read_value()?;
                entries.push((key, d.read_value()?));
            }
            Ok(Value::Map { type_name, entries })
        })
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
        let names_len = name.len() + fields.iter().map(String::len).sum::<usize>();
        self.classes.push(ClassDef {
            name,
            fields,
            names_len,
        });
        Ok(())
    }

    /// The index of an object's class definition.
    fn object_class(&mut self, code: u8) -> Result<usize> {
        let declared = match code {
            b'O' => self.read_int().map_err(|e| rename(e, OBJECT))?,
            _ => i32::from(code - 0x60),
        };
        let index = usize::try_from(declared).unwrap_or(usize::MAX);
        if index >= self.classes.len() {
            return Err(Error::field(
                OBJECT,
                format_args!("class definition #{declared} of {}", self.classes.len()),
            ));
        }
        Ok(index)
    }

    fn object_from(&mut self, code: u8) -> Result<Value> {
        let index = self.object_class(code)?;
        let def = &self.classes[index];
        let (n, names_len) = (def.fields.len(), def.names_len);
        self.charge(names_len, OBJECT)?;
        let class_name = self.classes[index].name.clone();
        self.container(names_len, |d| {
            let mut fields = Vec::with_capacity(n.min(PREALLOC_MAX));
            for i in 0..n {
                let name = d.classes[index].fields[i].clone();
                fields.push((name, d.read_value()?));
            }
            Ok(Value::Object { class_name, fields })
        })
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
        let (height, weight) = match slot {
            Slot::Open => {
                self.made_one(0, NODE);
                return Ok(Value::Null);
            }
            Slot::Dropped => {
                return Err(Error::field(REF, "copies exceed the decoder's size budget"))
            }
            Slot::Kept(kept) => (kept.height, kept.weight),
        };
        if self.depth + height > MAX_DEPTH {
            return Err(Error::field(DEPTH, format_args!("more than {MAX_DEPTH}")));
        }
        self.charge(weight, REF)?;
        let value = match self.refs.get(index as usize) {
            Some(Slot::Kept(kept)) => kept.value.clone(),
            _ => return Err(Error::field(REF, format_args!("#{index} was not kept"))), // never: kept stays kept
        };
        self.made_one(height, weight);
        Ok(value)
    }
}

fn budget(input_len: usize) -> usize {
    COPY_BUDGET_BASE.saturating_add(input_len.saturating_mul(COPY_BUDGET_PER_BYTE))
}

/// Adds one UTF-16 unit's code point. A surrogate without its other half (a Java string
/// cut inside an emoji, which Java writes and reads back as it is) becomes U+FFFD: a Rust
/// string cannot hold it, and refusing it would refuse the whole frame.
fn push_code_point(cp: u32, out: &mut String, high: &mut Option<u32>) -> Result<()> {
    match cp {
        0xd800..=0xdbff => {
            if high.replace(cp).is_some() {
                out.push(char::REPLACEMENT_CHARACTER);
            }
        }
        0xdc00..=0xdfff => match high.take() {
            Some(h) => out.push(
                char::from_u32(0x1_0000 + ((h - 0xd800) << 10) + (cp - 0xdc00))
                    .expect("a surrogate pair is a character"),
            ),
            None => out.push(char::REPLACEMENT_CHARACTER),
        },
        _ => {
            if high.take().is_some() {
                out.push(char::REPLACEMENT_CHARACTER);
            }
            out.push(char::from_u32(cp).ok_or(Error::InvalidUtf8 { field: STR })?);
        }
    }
    Ok(())
}
