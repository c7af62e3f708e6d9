//! driftless background workers, each a loop with one unit of work and a
//! shutdown signal (see [`worker`]): the outbox relay that publishes every
//! committed journal entry, the notifier that wakes long-polls, the chunk
//! verifier that re-hashes every newly committed chunk from object storage,
//! and the sweeper that aborts expired upload sessions.
//!
//! Workers never serve HTTP; the API process starts them next to its router,
//! and the same library runs them on their own.

pub mod cli;
pub mod durable;
pub mod notifier;
pub mod reconcile;
pub mod relay;
pub mod run;
pub mod sessions;
pub mod verify;
pub mod worker;

pub use durable::{Durable, Handler, Source};
pub use notifier::{Notifier, Waiter, Wake};
pub use relay::Relay;
pub use sessions::SessionSweeper;
pub use verify::{PackCheck, PackReport, Verifier, VerifyEvents};
pub use worker::{Step, Worker, spawn};
