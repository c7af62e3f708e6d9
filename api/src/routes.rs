//! The HTTP routes, one module each, merged by [`crate::app`].

pub mod downloads;
pub mod history;
pub mod namespaces;
pub mod uploads;
