//! Errors as the task service reports them: a ttrpc status code containerd maps to its
//! errdefs (NotFound, FailedPrecondition, ...) and a message for the user.

use std::fmt;
use ttrpc::Code;

#[derive(Debug)]
pub struct Error {
    pub code: Code,
    pub msg: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(code: Code, msg: impl Into<String>) -> Error {
        Error {
            code,
            msg: msg.into(),
        }
    }
    pub fn not_found(msg: impl Into<String>) -> Error {
        Error::new(Code::NOT_FOUND, msg)
    }
    pub fn precondition(msg: impl Into<String>) -> Error {
        Error::new(Code::FAILED_PRECONDITION, msg)
    }
    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::new(Code::INVALID_ARGUMENT, msg)
    }
    pub fn exists(msg: impl Into<String>) -> Error {
        Error::new(Code::ALREADY_EXISTS, msg)
    }
    pub fn internal(msg: impl Into<String>) -> Error {
        Error::new(Code::INTERNAL, msg)
    }
    pub fn unimplemented(msg: impl Into<String>) -> Error {
        Error::new(Code::UNIMPLEMENTED, msg)
    }
    /// Adds what was being done to an I/O failure.
    pub fn io(what: impl fmt::Display, e: std::io::Error) -> Error {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => Code::NOT_FOUND,
            _ => Code::INTERNAL,
        };
        Error::new(code, format!("{what}: {e}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code, e.msg))
    }
}
