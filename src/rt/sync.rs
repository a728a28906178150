//! Semaphores and read-write locks for tasks of one thread.
//!
//! glommio's own types: they are plain data structures over wakers (no reactor), so they work
//! unchanged under simulation. Semaphore waiters are served in arrival order; RwLock writers
//! too, but a reader joins readers holding the lock ahead of a waiting writer (both
//! pinned down by tests under `rt::sim`).

pub use super::glommio_backend::{
    Permit, RwLock, RwLockReadGuard, RwLockWriteGuard, Semaphore, StaticPermit,
};
