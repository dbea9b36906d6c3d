//! Re-running the current test binary as a child process that a test can `kill -9`: the crash
//! tests start one test of their own binary in "child" mode (told by an environment variable),
//! read what it prints, and kill it mid-way.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Kills the child if the test fails before it does, so no process outlives the test.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the test `test_name` of this binary alone, with `env` set to `path`, its standard output
/// piped to the caller.
pub(crate) fn spawn_self(test_name: &str, env: &str, path: &Path) -> KillOnDrop {
    KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
            .env(env, path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}
