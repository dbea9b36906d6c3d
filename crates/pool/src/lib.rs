//! Async connection pools (being written).

pub mod balance;
