//! `rampart`: keep services and their connections healthy.
//!
//! A thin `main` over [`run`]: it parses the command line, runs the command, and turns an error into
//! a message on standard error and an exit code (1 for a failure, 2 for bad input).

mod backup;
mod demo;
mod serve;
mod silence;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rampart_monitor::config::MonitorConfig;
use rampart_resilience::registry::ResilienceConfig;

/// Keep services and their connections healthy.
#[derive(Debug, Parser)]
#[command(name = "rampart", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file and report every problem in it at once.
    Check {
        /// The TOML file: a resilience configuration (`[breaker.NAME]`, `[retry.NAME]`, ...) or a
        /// monitor configuration (`[[target]]`, `[defaults]`).
        file: PathBuf,
    },
    /// Load-test a target: open model (`--rate`) or closed (`--vus`), with thresholds.
    Load(Box<rampart_load::cli::LoadArgs>),
    /// Silences through a running daemon's API: add, list, expire.
    Silence(silence::SilenceArgs),
    /// Run the monitor daemon on a built-in configuration with demo services (no setup needed).
    Demo(demo::DemoArgs),
    /// Run the monitor daemon: probes, history store, HTTP API; stops cleanly on SIGTERM,
    /// reloads its configuration on SIGHUP and when the file changes.
    Serve(serve::ServeArgs),
    /// Copy the monitor's history store consistently, even while the daemon writes to it.
    Backup(backup::BackupArgs),
}

/// How a command ended badly.
enum Failure {
    /// The input was wrong (exit code 2).
    Input(anyhow::Error),
    /// The command reported its own outcome and chose this exit code.
    Exit(u8),
    /// Something failed while running (exit code 1).
    Runtime(anyhow::Error),
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Load(args) => match rampart_load::cli::run(*args) {
            0 => Ok(()),
            code => Err(Failure::Exit(code)),
        },
        Command::Serve(args) => serve::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Silence(args) => silence::run(args),
        Command::Backup(args) => backup::run(args),
        Command::Check { file } => {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            if MonitorConfig::looks_like(&text) {
                return check_monitor(&file);
            }
            let config = ResilienceConfig::from_file(&file)
                .map_err(|e| Failure::Input(anyhow::Error::new(e)))?;
            println!("{}: ok", file.display());
            for (kind, names) in config.names() {
                if !names.is_empty() {
                    println!("  {kind}: {}", names.join(", "));
                }
            }
            Ok(())
        }
    }
}

/// `rampart check` for a monitor configuration: every problem, or the targets by group.
fn check_monitor(file: &std::path::Path) -> Result<(), Failure> {
    let config =
        MonitorConfig::from_file(file).map_err(|e| Failure::Input(anyhow::Error::new(e)))?;
    println!(
        "{}: ok (monitor, {} targets)",
        file.display(),
        config.targets.len()
    );
    for (group, names) in config.groups() {
        println!("  {group}: {}", names.join(", "));
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(e)) => {
            eprintln!("rampart: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Exit(code)) => ExitCode::from(code),
        Err(Failure::Runtime(e)) => {
            eprintln!("rampart: {e:#}");
            ExitCode::from(1)
        }
    }
}
