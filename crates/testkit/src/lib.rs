//! Test kit for Rampart: real servers on free ports, and a chaos TCP proxy.
//!
//! For tests only. Servers are started as child processes in temporary directories and stopped
//! when their handle is dropped; a handle can kill (SIGKILL), pause (SIGSTOP), resume (SIGCONT) and
//! restart its server on the same port and data. The chaos proxy sits between a client and a
//! server and injects faults switched at run time.

pub mod proxy;
pub mod server;
