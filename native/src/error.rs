//! Internal error type. Converted to a Python exception once, by `From<Error> for PyErr`
//! (in `lib.rs`), wherever a pyo3 function returns it with `?`.

use std::fmt;

/// Every failure the native layer can report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A field of a frame holds a value the protocol does not allow
    /// (unknown protocol byte, wrong magic, negative length, ...).
    InvalidField { field: &'static str, value: String },
    /// The declared frame size is larger than the configured limit.
    FrameTooLarge {
        protocol: &'static str,
        size: u64,
        max: usize,
    },
    /// A complete frame was expected but the bytes end early (or run past the end).
    Truncated {
        field: &'static str,
        need: u64,
        have: usize,
    },
    /// A text field is not valid UTF-8.
    InvalidUtf8 { field: &'static str },
    /// A splitter that failed before was fed again.
    Poisoned(Box<Error>),
    /// A bad argument from the caller (not a malformed frame).
    InvalidArgument { name: &'static str, message: String },
}

impl Error {
    pub(crate) fn field(field: &'static str, value: impl fmt::Display) -> Self {
        Error::InvalidField {
            field,
            value: value.to_string(),
        }
    }

    /// Whether this is a caller-argument error (plain `ValueError`) rather than a
    /// frame error (`FrameError`).
    pub fn is_argument_error(&self) -> bool {
        matches!(self, Error::InvalidArgument { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidField { field, value } => write!(f, "invalid {field}: {value}"),
            Error::FrameTooLarge {
                protocol,
                size,
                max,
            } => write!(
                f,
                "{protocol} frame size {size} exceeds max_frame_size {max}"
            ),
            Error::Truncated { field, need, have } => {
                write!(f, "truncated {field}: need {need} bytes, have {have}")
            }
            Error::InvalidUtf8 { field } => write!(f, "invalid {field}: not valid UTF-8"),
            Error::Poisoned(first) => write!(f, "splitter already failed: {first}"),
            Error::InvalidArgument { name, message } => write!(f, "invalid {name}: {message}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
