//! Asserted invariants of the coordinator state machines (issue 11).
//!
//! Each state machine ([`super::group::Groups`], [`super::consumer_group::ConsumerGroups`],
//! [`super::offsets::Offsets`], [`super::txn::Transactions`], [`super::metadata::ClusterMetadata`])
//! has a `check_invariants(&self) -> Result<(), Violation>` that states as code the properties
//! its module essay states in prose. It is called:
//!
//! - at the end of every public mutating method in debug builds (so every unit test, every
//!   integration test against a debug broker and the simulator run it after each transition),
//!   through [`debug_check`], which panics with the violation: a broken invariant is a
//!   programmer error;
//! - by the proptests beside each state machine, after every step of a random sequence of
//!   operations;
//! - by the simulator, which calls `check_invariants` directly and reports the violation with
//!   its seed.
//!
//! Release builds do not run them: some are linear in the state's size (every member of every
//! group on a tick) and run on the coordinator shard.
//!
//! State restored from disk (`restore`, `load`) is not checked on the way in: a snapshot is
//! input from a disk; the first transition after it is.

use std::fmt;

/// A broken invariant: which state machine, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

/// `Err(Violation)` with a formatted message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::coordinator::invariants::Violation(format!($($arg)+)));
        }
    };
}
pub(crate) use ensure;

/// Runs `check` in debug builds and panics if it finds a violation (a programmer error); does
/// nothing in release builds.
#[inline]
#[track_caller]
pub fn debug_check(check: impl FnOnce() -> Result<(), Violation>) {
    if cfg!(debug_assertions) {
        if let Err(v) = check() {
            panic!("coordinator invariant violated: {v}");
        }
    }
}
