//! Moved: the record batch v2 format is [`freshet_protocol::batch`] (the protocol crate, no
//! I/O). This re-export keeps the old path for this round; it goes once every branch imports
//! the new one. Its errors are [`freshet_protocol::BatchError`]s, which become
//! [`super::StorageError`]s through `From` (in `crate::error`).

pub use freshet_protocol::batch::*;
