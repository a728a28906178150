//! Moved: record walks and bounded streaming decompression are [`freshet_protocol::records`]
//! (the protocol crate, no I/O). This re-export keeps the old path for this round; it goes
//! once every branch imports the new one.

pub use freshet_protocol::records::*;
