//! Rampart's monitor: probe configured targets and keep a health model of them.
pub mod config;
