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
