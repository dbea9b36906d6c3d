//! One server process: how to launch it, and how to signal, kill and reap it with its whole tree.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::{Instant, sleep};

use super::ServerError;

/// How long `kill` waits for a SIGKILLed tree to be gone. SIGKILL cannot be caught, so this is
/// only reached when the kernel itself is stuck.
const EXIT_DEADLINE: Duration = Duration::from_secs(10);
/// How often exit and readiness conditions are polled.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// The most of a server's log quoted in an error.
const LOG_TAIL: usize = 4000;

/// An unprivileged user to run a server as.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// Everything needed to start a server process again and again.
#[derive(Debug)]
pub(crate) struct Launch {
    pub(crate) server: &'static str,
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) cwd: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) run_as: Option<RunAs>,
}

/// A server process started as a child of this process, with its output appended to a log file.
///
/// Dropping it kills the process and its descendants and reaps the process.
#[derive(Debug)]
pub(crate) struct Supervised {
    launch: Launch,
    child: Option<Child>,
    /// Where the log stood when the current process was started, so errors quote only its output.
    log_offset: u64,
}

impl Supervised {
    pub(crate) fn new(launch: Launch) -> Self {
        Self {
            launch,
            child: None,
            log_offset: 0,
        }
    }

    pub(crate) fn server(&self) -> &'static str {
        self.launch.server
    }

    /// Starts the process. The caller makes sure no earlier process is still running.
    pub(crate) fn spawn(&mut self) -> Result<(), ServerError> {
        let server = self.launch.server;
        let setup = |what: &str, source| ServerError::Setup {
            server,
            what: what.to_owned(),
            source,
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.launch.log)
            .map_err(|e| setup("could not open the log file", e))?;
        self.log_offset = log
            .metadata()
            .map_err(|e| setup("could not read the log file", e))?
            .len();
        let stdout = log
            .try_clone()
            .map_err(|e| setup("could not duplicate the log file", e))?;
        let mut command = Command::new(&self.launch.program);
        command
            .args(&self.launch.args)
            .current_dir(&self.launch.cwd)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log);
        if let Some(user) = self.launch.run_as {
            command.uid(user.uid).gid(user.gid);
        }
        let child = command.spawn().map_err(|e| {
            setup(
                &format!("could not start {}", self.launch.program.display()),
                e,
            )
        })?;
        self.child = Some(child);
        Ok(())
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Returns the exit status if the process has exited (reaping it), `None` while it runs or when
    /// no process was started.
    pub(crate) fn try_exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            // An error here means the child is gone in a way we cannot observe; treat it as running
            // and let the readiness deadline report it.
            Ok(None) | Err(_) => None,
        }
    }

    /// The log written since the current (or last) process was started, at most its last few
    /// thousand characters.
    pub(crate) fn log_since_start(&self) -> String {
        read_log_from(&self.launch.log, self.log_offset)
    }

    /// Sends `signal` to the process and to every process descending from it.
    ///
    /// The root is stopped first, so it cannot fork while its descendants are listed (PostgreSQL's
    /// backends start their own sessions, so a process group would not reach them).
    fn signal_tree(&self, signal: Signal) -> Result<Vec<u32>, ServerError> {
        let Some(root) = self.pid() else {
            return Err(ServerError::NotRunning {
                server: self.launch.server,
            });
        };
        let send = |pid: u32, signal: Signal| -> Result<(), ServerError> {
            match kill(as_pid(pid), signal) {
                // Exited in the meantime: nothing left to signal.
                Ok(()) | Err(Errno::ESRCH) => Ok(()),
                Err(source) => Err(ServerError::Signal {
                    server: self.launch.server,
                    signal: signal.as_str(),
                    pid,
                    source,
                }),
            }
        };
        if signal != Signal::SIGCONT {
            send(root, Signal::SIGSTOP)?;
        }
        let descendants = descendants(root);
        for &pid in &descendants {
            send(pid, signal)?;
        }
        send(root, signal)?;
        Ok(descendants)
    }

    /// Freezes the process and its descendants (SIGSTOP).
    pub(crate) fn pause(&self) -> Result<(), ServerError> {
        self.signal_tree(Signal::SIGSTOP).map(drop)
    }

    /// Thaws the process and its descendants (SIGCONT).
    pub(crate) fn resume(&self) -> Result<(), ServerError> {
        self.signal_tree(Signal::SIGCONT).map(drop)
    }

    /// SIGKILLs the process and its descendants, then waits until the process is reaped and every
    /// descendant has exited. Does nothing when no process is running.
    pub(crate) async fn kill(&mut self) -> Result<(), ServerError> {
        if self.try_exited().is_some() || self.child.is_none() {
            return Ok(());
        }
        let descendants = self.signal_tree(Signal::SIGKILL)?;
        let deadline = Instant::now() + EXIT_DEADLINE;
        loop {
            let root_gone = self.try_exited().is_some() || self.child.is_none();
            if root_gone && descendants.iter().all(|&pid| !is_alive(pid)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ServerError::StillRunning {
                    server: self.launch.server,
                    waited: EXIT_DEADLINE,
                });
            }
            sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        // Errors cannot be reported from drop; SIGKILL of our own child does not fail in practice.
        let _ = self.signal_tree(Signal::SIGKILL);
        if let Some(mut child) = self.child.take() {
            // Blocks only until the kernel has torn the killed process down.
            let _ = child.wait();
        }
    }
}

fn as_pid(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

/// Whether `pid` names a process that has not exited yet (a zombie has exited: only its parent's
/// `wait` is missing, and for an orphan that parent is init, which we do not control).
pub(crate) fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => parse_stat(&stat).is_some_and(|(state, _)| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Parses the state and parent pid out of a `/proc/PID/stat` line. The command name in
/// parentheses may itself contain spaces and parentheses, so fields are read after the last `)`.
fn parse_stat(stat: &str) -> Option<(char, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Every process descending from `root`, found by walking `/proc`.
fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                && let Some((_, ppid)) = parse_stat(&stat)
            {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        if let Some(kids) = children.get(&pid) {
            found.extend_from_slice(kids);
            queue.extend_from_slice(kids);
        }
    }
    found
}

fn read_log_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    let Ok(mut file) = File::open(path) else {
        return text;
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return text;
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return text;
    }
    text = String::from_utf8_lossy(&bytes).into_owned();
    if text.len() > LOG_TAIL {
        let mut cut = text.len() - LOG_TAIL;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text = format!("[...]{}", &text[cut..]);
    }
    text
}

/// Finds `name` on `PATH` or in the usual system directories (`/usr/sbin` is often not on a normal
/// user's `PATH`, and Debian puts `mosquitto` there).
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .iter()
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_read_after_the_last_parenthesis() {
        let stat = "4242 (postgres: a) b) S 17 4242 4242 0 -1";
        assert_eq!(parse_stat(stat), Some(('S', 17)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_free_pid_is_not() {
        assert!(is_alive(std::process::id()));
        assert!(!is_alive(u32::MAX - 1));
    }

    #[test]
    fn children_of_this_process_are_found() {
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        assert!(descendants(std::process::id()).contains(&child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
