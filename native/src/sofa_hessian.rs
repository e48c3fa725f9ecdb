//! SOFA's Hessian dialect, read only far enough to name an error.
//!
//! SOFARPC and SOFA Bolt serialize with sofa-hessian, which writes the draft Hessian 2
//! grammar rather than the final one [`crate::hessian`] decodes: a class definition is
//! `O` + length-prefixed name, an instance `o`, lists `V` carry `t`/`n` prefixes and end in
//! `z`, references are `R`/`J`/`K`, doubles `0x67..0x6b`, dates `d`, string chunks `s`.
//! Both agree on `S` and compact strings, ints and compact longs. SOFARPC answers a
//! provider's exception, and its own failures, with such a value: a `SofaResponse` whose
//! `errorMsg` or `appResponse` (a Throwable) holds the message, or the Throwable itself.
//! [`error_message`] finds that message.
//!
//! Nothing here is on a forwarding path: it runs once per error answer. Input is treated
//! as hostile: lengths are checked against the bytes left, nesting is bounded, and every
//! failure is `None`, never a panic.

/// Deepest nesting of lists, maps and objects accepted (a SofaResponse holding a Throwable
/// and its stack trace is four levels deep; a chain of causes adds one per cause).
const MAX_DEPTH: usize = 64;
/// Upper bound on capacity reserved from a declared count: nested objects would each
/// reserve up to the bytes left before reading a field.
const PREALLOC_MAX: usize = 1024;

/// What the reader keeps of a value: text and objects; the rest is only skipped.
#[derive(Debug)]
enum Skimmed {
    Text(String),
    Object { class: usize, fields: Vec<Skimmed> },
    Other,
}

struct ClassDef {
    name: String,
    fields: Vec<String>,
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    classes: Vec<ClassDef>,
    /// Types named by `t` so far: `T`/`u` refer back to them by index.
    types: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.at).copied()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let bytes = self.buf.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }

    fn u16(&mut self) -> Option<usize> {
        let b = self.take(2)?;
        Some(usize::from(b[0]) << 8 | usize::from(b[1]))
    }

    fn i32(&mut self) -> Option<i32> {
        let b = self.take(4)?;
        Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An int in any of its encodings (class and type references, counts, lengths).
    fn int(&mut self) -> Option<i64> {
        let tag = self.byte()?;
        Some(match tag {
            0x80..=0xbf => i64::from(tag) - 0x90,
            0xc0..=0xcf => ((i64::from(tag) - 0xc8) << 8) + i64::from(self.byte()?),
            0xd0..=0xd7 => ((i64::from(tag) - 0xd4) << 16) + self.u16()? as i64,
            b'I' => i64::from(self.i32()?),
            _ => return None,
        })
    }

    fn count(&mut self) -> Option<usize> {
        usize::try_from(self.int()?).ok()
    }

    /// `n` characters of Java's UTF-8 (one to three bytes each).
    fn chars(&mut self, n: usize, out: &mut Vec<u8>) -> Option<()> {
        if n > self.buf.len() - self.at {
            return None; // every character takes at least a byte
        }
        for _ in 0..n {
            let lead = self.byte()?;
            let extra = match lead {
                0x00..=0x7f => 0,
                0xc0..=0xdf => 1,
                0xe0..=0xef => 2,
                _ => return None,
            };
            out.push(lead);
            out.extend_from_slice(self.take(extra)?);
        }
        Some(())
    }

    /// The rest of a string whose tag was `tag` (`S`, `s` or a compact length), chunks included.
    fn string(&mut self, mut tag: u8) -> Option<String> {
        let mut bytes = Vec::new();
        loop {
            let (len, last) = match tag {
                0x00..=0x1f => (usize::from(tag), true),
                b'S' | b'X' => (self.u16()?, true),
                b's' | b'x' => (self.u16()?, false),
                _ => return None,
            };
            self.chars(len, &mut bytes)?;
            if last {
                // Java writes a supplementary character as two 3-byte surrogates: shown as U+FFFD
                return Some(String::from_utf8_lossy(&bytes).into_owned());
            }
            tag = self.byte()?;
        }
    }

    fn skip_binary(&mut self, mut tag: u8) -> Option<()> {
        loop {
            let (len, last) = match tag {
                0x20..=0x2f => (usize::from(tag - 0x20), true),
                b'B' => (self.u16()?, true),
                b'b' => (self.u16()?, false),
                _ => return None,
            };
            self.take(len)?;
            if last {
                return Some(());
            }
            tag = self.byte()?;
        }
    }

    /// The optional type of a list or map: `t` + name, or `T`/`u` + reference.
    fn skip_type(&mut self) -> Option<()> {
        match self.peek() {
            Some(b't') => {
                self.at += 1;
                let len = self.u16()?;
                self.chars(len, &mut Vec::new())?;
                self.types += 1;
            }
            Some(b'T') | Some(0x75) => {
                self.at += 1;
                let index = self.count()?;
                if index >= self.types {
                    return None;
                }
            }
            _ => {}
        }
        Some(())
    }

    /// The optional length of a `V` list (`n` + byte, `l` + int); the list still ends in `z`.
    fn skip_length(&mut self) -> Option<()> {
        match self.peek() {
            Some(b'n') => self.take(2).map(drop),
            Some(b'l') => self.take(5).map(drop),
            _ => Some(()),
        }
    }

    fn skip_until_end(&mut self, depth: usize, per_item: usize) -> Option<()> {
        while self.peek()? != b'z' {
            for _ in 0..per_item {
                self.value(depth + 1)?;
            }
        }
        self.at += 1;
        Some(())
    }

    fn define_class(&mut self) -> Option<()> {
        let len = self.count()?;
        let mut name = Vec::new();
        self.chars(len, &mut name)?;
        let count = self.count()?;
        if count > self.buf.len() - self.at {
            return None;
        }
        let mut fields = Vec::with_capacity(count.min(PREALLOC_MAX));
        for _ in 0..count {
            let tag = self.byte()?;
            fields.push(self.string(tag)?);
        }
        self.classes.push(ClassDef {
            name: String::from_utf8_lossy(&name).into_owned(),
            fields,
        });
        Some(())
    }

    fn value(&mut self, depth: usize) -> Option<Skimmed> {
        if depth > MAX_DEPTH {
            return None;
        }
        let mut tag = self.byte()?;
        while tag == b'O' {
            // a class definition precedes the value that first uses it, at the same depth
            self.define_class()?;
            tag = self.byte()?;
        }
        let skip = |n: usize, reader: &mut Self| reader.take(n).map(|_| Skimmed::Other);
        match tag {
            b'N' | b'T' | b'F' | 0x80..=0xbf | 0xd8..=0xef | 0x67 | 0x68 => Some(Skimmed::Other),
            0xc0..=0xcf | 0xf0..=0xff | 0x69 | b'J' => skip(1, self),
            0xd0..=0xd7 | 0x38..=0x3f | 0x6a | b'K' => skip(2, self),
            b'I' | 0x77 | 0x6b | b'R' => skip(4, self),
            b'L' | b'D' | b'd' => skip(8, self),
            0x00..=0x1f | b'S' | b's' => self.string(tag).map(Skimmed::Text),
            b'X' | b'x' => self.string(tag).map(|_| Skimmed::Other),
            0x20..=0x2f | b'B' | b'b' => self.skip_binary(tag).map(|_| Skimmed::Other),
            b'V' => {
                self.skip_type()?;
                self.skip_length()?;
                self.skip_until_end(depth, 1).map(|_| Skimmed::Other)
            }
            b'v' => {
                let _type = self.count()?;
                let len = self.count()?;
                if len > self.buf.len() - self.at {
                    return None;
                }
                for _ in 0..len {
                    self.value(depth + 1)?;
                }
                Some(Skimmed::Other)
            }
            b'M' => {
                self.skip_type()?;
                self.skip_until_end(depth, 2).map(|_| Skimmed::Other)
            }
            b'o' => {
                let class = self.count()?;
                let count = self.classes.get(class)?.fields.len();
                let mut fields = Vec::with_capacity(count.min(PREALLOC_MAX));
                for _ in 0..count {
                    fields.push(self.value(depth + 1)?);
                }
                Some(Skimmed::Object { class, fields })
            }
            b'r' => {
                self.skip_type()?;
                let tag = self.byte()?;
                self.string(tag).map(|_| Skimmed::Other)
            }
            _ => None,
        }
    }

    /// The message `value` carries: a string; a SofaResponse's `errorMsg`, else the
    /// Throwable in its `appResponse`; a Throwable as "class: detailMessage".
    fn message(&self, value: &Skimmed) -> Option<String> {
        match value {
            Skimmed::Text(text) if !text.is_empty() => Some(text.clone()),
            Skimmed::Object { class, fields } => {
                let class = &self.classes[*class];
                let field = |name: &str| {
                    let at = class.fields.iter().position(|f| f == name)?;
                    fields.get(at)
                };
                if let Some(Skimmed::Text(text)) = field("errorMsg") {
                    if !text.is_empty() {
                        return Some(text.clone());
                    }
                }
                if let Some(inner @ Skimmed::Object { .. }) = field("appResponse") {
                    return self.message(inner);
                }
                match field("detailMessage")? {
                    Skimmed::Text(text) => Some(format!("{}: {text}", class.name)),
                    _ => Some(class.name.clone()),
                }
            }
            _ => None,
        }
    }
}

/// The error message in `content`, a value SOFARPC or SOFA Bolt wrote in SOFA's Hessian
/// dialect; `None` when it holds none or cannot be read.
pub fn error_message(content: &[u8]) -> Option<String> {
    let mut reader = Reader {
        buf: content,
        at: 0,
        classes: Vec::new(),
        types: 0,
    };
    let root = reader.value(0)?;
    reader.message(&root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bolt::decode_response;
    use crate::testdata::golden;

    fn content_of(vector: &str) -> Vec<u8> {
        decode_response(&golden(vector)).unwrap().content.to_vec()
    }

    #[test]
    fn a_provider_exception_is_named_with_its_message() {
        let content = content_of("bolt_response_sofarpc_fail");
        assert_eq!(
            error_message(&content).as_deref(),
            Some("java.lang.IllegalStateException: echo-0")
        );
    }

    #[test]
    fn an_answer_that_is_no_error_has_no_message() {
        // SofaResponse {isError false, errorMsg null, appResponse "echo-0"}: not an object's message
        assert_eq!(error_message(&content_of("bolt_response_sofarpc")), None);
    }

    #[test]
    fn error_msg_comes_first_and_a_bare_string_is_the_message() {
        // O "R" [errorMsg, appResponse] o0 "bad" N
        let mut value = vec![b'O', 0x91, b'R', 0x92, 0x08];
        value.extend_from_slice(b"errorMsg");
        value.push(0x0b);
        value.extend_from_slice(b"appResponse");
        value.extend_from_slice(&[b'o', 0x90, 0x03, b'b', b'a', b'd', b'N']);
        assert_eq!(error_message(&value).as_deref(), Some("bad"));
        assert_eq!(error_message(b"S\x00\x02hi").as_deref(), Some("hi"));
        // chunked: "ab" then "c"
        assert_eq!(
            error_message(b"s\x00\x02abS\x00\x01c").as_deref(),
            Some("abc")
        );
    }

    #[test]
    fn a_throwable_without_message_is_named_by_its_class() {
        // O "E" [detailMessage] o0 N
        let mut value = vec![b'O', 0x91, b'E', 0x91, 0x0d];
        value.extend_from_slice(b"detailMessage");
        value.extend_from_slice(&[b'o', 0x90, b'N']);
        assert_eq!(error_message(&value).as_deref(), Some("E"));
    }

    #[test]
    fn every_prefix_of_a_real_answer_is_refused_without_panic() {
        let content = content_of("bolt_response_sofarpc_fail");
        for end in 0..content.len() {
            let _ = error_message(&content[..end]);
        }
        // the message sits early: once the exception's detailMessage is read, a cut stack trace still fails
        assert_eq!(error_message(&content[..content.len() - 1]), None);
    }

    /// O "R" [nested, errorMsg] o0 <`depth` nested lists> "m"
    fn message_after_lists(depth: usize) -> Vec<u8> {
        let mut value = vec![b'O', 0x91, b'R', 0x92, 0x06];
        value.extend_from_slice(b"nested");
        value.push(0x08);
        value.extend_from_slice(b"errorMsg");
        value.extend_from_slice(&[b'o', 0x90]);
        value.extend(std::iter::repeat_n(b'V', depth));
        value.extend(std::iter::repeat_n(b'z', depth));
        value.extend_from_slice(&[0x01, b'm']);
        value
    }

    #[test]
    fn nesting_is_read_up_to_the_limit_and_refused_past_it() {
        assert_eq!(
            error_message(&message_after_lists(MAX_DEPTH)).as_deref(),
            Some("m")
        );
        assert_eq!(error_message(&message_after_lists(MAX_DEPTH + 1)), None);
        // class definitions take no depth: many in a row before one value are read
        let mut defined = Vec::new();
        for _ in 0..1000 {
            defined.extend_from_slice(&[b'O', 0x91, b'E', 0x90]);
        }
        defined.extend_from_slice(b"S\x00\x02ok");
        assert_eq!(error_message(&defined).as_deref(), Some("ok"));
    }

    #[test]
    fn hostile_input_is_refused() {
        // nesting past the limit, and a run of class definitions that never ends in a value
        assert_eq!(error_message(&vec![b'V'; 10_000]), None);
        assert_eq!(error_message(&b"O\x91E\x90".repeat(100_000)), None);
        // an instance of a class never defined; a string longer than the input; a bad UTF-8 lead
        assert_eq!(error_message(b"o\x90"), None);
        assert_eq!(error_message(b"S\xff\xffab"), None);
        assert_eq!(error_message(b"\x01\xff"), None);
        // a type reference to a type never named
        assert_eq!(error_message(b"VT\x95z"), None);
    }
}
