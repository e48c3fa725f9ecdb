//! The native gRPC front: HTTP/2 (h2) driven from the event loop's thread.

pub mod authority;
pub mod budget;
pub mod connection;
pub mod io;
pub mod keepalive;
pub mod status;
pub mod wake;
