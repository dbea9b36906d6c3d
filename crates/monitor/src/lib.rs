//! Rampart's monitor: probe configured targets and keep a health model of them.
pub mod config;
pub mod health;
mod monitor;
pub mod probe;
pub mod scheduler;

pub use monitor::Monitor;
