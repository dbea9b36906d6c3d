//! The `rampart` command, run as a user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn rampart(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .unwrap()
}

#[test]
fn help_and_version_describe_the_tool() {
    let out = rampart(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("check"), "{text}");
    let out = rampart(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("rampart {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_accepts_the_example_configuration_and_lists_what_it_defines() {
    let out = rampart(&["check", "examples/rampart.toml"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("examples/rampart.toml: ok"), "{stdout}");
    assert!(
        stdout.contains("breaker: legacy-ledger, payments"),
        "{stdout}"
    );
    assert!(stdout.contains("pipeline: checkout"), "{stdout}");
}

#[test]
fn check_reports_every_problem_and_exits_2() {
    let dir = std::env::temp_dir().join(format!("rampart-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[breaker.a]\nfailure_rate = 7.0\n\n[retry.b]\nmax_attempts = 0\njiter = \"full\"\n",
    )
    .unwrap();
    let out = rampart(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("bad.toml: 3 problems"), "{stderr}");
    assert!(stderr.contains("breaker.a.failure_rate"), "{stderr}");
    assert!(stderr.contains("retry.b.max_attempts"), "{stderr}");
    assert!(stderr.contains("retry.b.jiter"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_accepts_the_example_monitor_configuration_and_lists_its_groups() {
    let out = rampart(&["check", "examples/monitor.toml"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("examples/monitor.toml: ok (monitor, 8 targets)"),
        "{stdout}"
    );
    assert!(stdout.contains("data: postgres, cache, broker"), "{stdout}");
    assert!(stdout.contains("models: classifier"), "{stdout}");
    assert!(
        stdout.contains("web: api, homepage, edge-cert, mail-routing"),
        "{stdout}"
    );
}

#[test]
fn check_lists_every_problem_of_a_broken_monitor_configuration() {
    let dir = std::env::temp_dir().join(format!("rampart-cli-monitor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("monitor.toml");
    std::fs::write(
        &file,
        r#"
[[target]]
name = "api"
kind = "http"
interval = "5s"
timeout = "10s"
depends_on = ["ghost"]
[target.http]
url = "localhost/health"

[[target]]
name = "api"
kind = "smtp"
"#,
    )
    .unwrap();
    let out = rampart(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("monitor.toml: 5 problems"), "{stderr}");
    assert!(
        stderr.contains("target[0].http.url: not an absolute http(s) URL"),
        "{stderr}"
    );
    assert!(
        stderr.contains("target[0].timeout: must not exceed the interval"),
        "{stderr}"
    );
    assert!(
        stderr.contains("target[1].kind: unknown kind \"smtp\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("target[1].name: duplicate name \"api\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("target[0].depends_on[0]: no target is named \"ghost\""),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
