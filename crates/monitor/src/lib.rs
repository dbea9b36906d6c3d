//! Rampart's monitor: probe configured targets and keep a health model of them.
pub mod config;
pub mod health;
pub mod probe;
