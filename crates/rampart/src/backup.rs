//! `rampart backup OUT [--config FILE | --store PATH]`: a consistent copy of the history store,
//! taken with SQLite's online backup API while the daemon runs.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rampart_monitor::config::StoreConfig;

use crate::Failure;

/// Arguments of `rampart backup`.
#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    /// The copy to write (must not exist).
    out: PathBuf,
    /// The daemon's configuration: the store is its `[store]` `path` (only that section is
    /// read). Without it or `--store`, the default `rampart.db`.
    #[arg(long, short, conflicts_with = "store")]
    config: Option<PathBuf>,
    /// The store file itself.
    #[arg(long)]
    store: Option<PathBuf>,
}

/// Copies the store; a bad configuration is an input failure (exit 2), a failed copy a runtime
/// failure (exit 1).
pub(crate) fn run(args: BackupArgs) -> Result<(), Failure> {
    let source = match (&args.store, &args.config) {
        (Some(store), _) => store.clone(),
        (None, Some(file)) => store_path(file).map_err(Failure::Input)?,
        (None, None) => StoreConfig::default().path,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.into()))?;
    let report = runtime
        .block_on(rampart_monitor::store::backup(&source, &args.out))
        .map_err(|e| Failure::Runtime(e.into()))?;
    println!(
        "{}: backed up to {} ({} bytes, schema version {}, integrity ok)",
        source.display(),
        report.path.display(),
        report.bytes,
        report.schema_version
    );
    Ok(())
}

/// The `[store]` `path` of the configuration `file`.
fn store_path(file: &std::path::Path) -> anyhow::Result<PathBuf> {
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {shown}"))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{shown} is not TOML"))?;
    Ok(StoreConfig::from_table(&table, Some(&shown))?.path)
}
