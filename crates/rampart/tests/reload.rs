//! `rampart serve` reloads its configuration when the file changes and on SIGHUP: a broken file
//! is refused with its problems logged while the running targets go on; a valid one is applied.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const DEADLINE: Duration = Duration::from_secs(20);

/// Kills the daemon if the test fails before it stops.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running daemon: its process, its log lines, its address.
struct Daemon {
    child: KillOnDrop,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    addr: SocketAddr,
}

impl Daemon {
    fn start(config: &Path, extra: &[&str]) -> Self {
        let mut child = KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_rampart"))
                .args(["serve", "--config"])
                .arg(config)
                .args(extra)
                .env("RUST_LOG", "info")
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stderr = child.0.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut daemon = Daemon {
            child,
            lines,
            seen: Vec::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let listening = daemon.wait_for("listening");
        daemon.addr = listening
            .split("addr=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        daemon
    }

    /// The next log line containing `needle`, within the deadline.
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|_| panic!("no {needle:?} in the log:\n{}", self.seen.join("\n")));
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// The names of the targets `GET /api/targets` shows.
    fn targets(&self) -> Vec<String> {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        write!(
            stream,
            "GET /api/targets HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let body: serde_json::Value =
            serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
        body["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Polls the API until it shows exactly `names`, within the deadline.
    fn until_targets(&self, names: &[&str]) {
        let until = Instant::now() + DEADLINE;
        loop {
            let shown = self.targets();
            if shown == names {
                return;
            }
            assert!(Instant::now() < until, "still {shown:?}, not {names:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.0.id()).unwrap());
        kill(pid, signal).unwrap();
    }

    fn is_running(&mut self) -> bool {
        self.child.0.try_wait().unwrap().is_none()
    }

    /// SIGTERM, then exit code 0.
    fn stop(mut self) {
        self.signal(Signal::SIGTERM);
        let status = self.child.0.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{}", self.seen.join("\n"));
    }
}

/// A configuration with the daemon's sections and one tcp target per name.
fn config(dir: &Path, listen: &str, up: SocketAddr, names: &[&str]) -> String {
    let mut text = format!(
        "[server]\nlisten = \"{listen}\"\n[store]\npath = {:?}\n",
        dir.join("history.db")
    );
    for name in names {
        text.push_str(&format!(
            "[[target]]\nname = \"{name}\"\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
             [target.tcp]\naddress = \"{up}\"\n"
        ));
    }
    text
}

/// Replaces `path` the way editors do: a new file renamed over the old one.
fn replace(path: &PathBuf, text: &str) {
    let new = path.with_extension("new");
    std::fs::write(&new, text).unwrap();
    std::fs::rename(&new, path).unwrap();
}

#[test]
fn a_changed_file_is_reloaded_and_a_broken_one_refused_while_the_old_targets_run() {
    let dir = tempfile::tempdir().unwrap();
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = up.local_addr().unwrap();
    let path = dir.path().join("monitor.toml");
    std::fs::write(&path, config(dir.path(), "127.0.0.1:0", up, &["one"])).unwrap();
    let mut daemon = Daemon::start(&path, &[]);
    daemon.wait_for("state changed");
    assert_eq!(daemon.targets(), ["one"]);

    // Broken: two problems, each logged with its path; the process and its targets go on.
    replace(
        &path,
        "[[target]]\nname = \"one\"\nkind = \"tcp\"\ninterval = \"0s\"\n\
         [target.tcp]\nadress = \"h:1\"\n",
    );
    daemon.wait_for("reloading the configuration");
    let first = daemon.wait_for("configuration problem");
    let rejected = daemon.wait_for("reload rejected");
    let problems: Vec<&String> = daemon
        .seen
        .iter()
        .filter(|l| l.contains("configuration problem"))
        .collect();
    assert!(problems.len() >= 2, "{problems:?}");
    assert!(first.contains("target[0]"), "{first}");
    assert!(
        rejected.contains("keeping the running configuration"),
        "{rejected}"
    );
    assert!(daemon.is_running());
    assert_eq!(daemon.targets(), ["one"]);

    // Valid, written in place this time, with a target added and [server] changed: the target
    // appears, the listener stays.
    std::fs::write(
        &path,
        config(dir.path(), "127.0.0.1:1", up, &["one", "two"]),
    )
    .unwrap();
    daemon.wait_for("[server] changed: needs a restart");
    let reloaded = daemon.wait_for("configuration reloaded");
    assert!(reloaded.contains("added=[\"two\"]"), "{reloaded}");
    daemon.until_targets(&["one", "two"]);
    daemon.stop();
}

#[test]
fn sighup_reloads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = up.local_addr().unwrap();
    let path = dir.path().join("monitor.toml");
    std::fs::write(
        &path,
        config(dir.path(), "127.0.0.1:0", up, &["one", "two"]),
    )
    .unwrap();
    let mut daemon = Daemon::start(&path, &["--no-watch"]);
    daemon.wait_for("state changed");
    assert_eq!(daemon.targets(), ["one", "two"]);

    // Written in place (no watching): applied on SIGHUP.
    std::fs::write(
        &path,
        config(dir.path(), "127.0.0.1:0", up, &["two", "three"]),
    )
    .unwrap();
    daemon.signal(Signal::SIGHUP);
    let line = daemon.wait_for("reloading the configuration");
    assert!(line.contains("SIGHUP"), "{line}");
    let reloaded = daemon.wait_for("configuration reloaded");
    assert!(reloaded.contains("removed=[\"one\"]"), "{reloaded}");
    daemon.until_targets(&["two", "three"]);
    assert!(daemon.is_running());
    daemon.stop();
}

#[test]
fn a_swapped_symlink_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = up.local_addr().unwrap();
    for (version, names) in [("v1", &["one"][..]), ("v2", &["one", "two"][..])] {
        std::fs::create_dir(dir.path().join(version)).unwrap();
        let text = config(dir.path(), "127.0.0.1:0", up, names);
        std::fs::write(dir.path().join(version).join("monitor.toml"), text).unwrap();
    }
    // As configuration managers do: the file is a symlink, swapped by renaming a new one over it.
    let path = dir.path().join("monitor.toml");
    std::os::unix::fs::symlink("v1/monitor.toml", &path).unwrap();
    let mut daemon = Daemon::start(&path, &[]);
    assert_eq!(daemon.targets(), ["one"]);
    let new = dir.path().join("monitor.toml.new");
    std::os::unix::fs::symlink("v2/monitor.toml", &new).unwrap();
    std::fs::rename(&new, &path).unwrap();
    daemon.wait_for("configuration reloaded");
    daemon.until_targets(&["one", "two"]);
    daemon.stop();
}
