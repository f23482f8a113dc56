//! `silt`: look inside a store, and measure one on your own disk.
//!
//! ```text
//! silt bench [--path DIR] [--keys N]   the standard workloads, a results table
//! silt stats PATH                      counters of a store
//! silt verify PATH                     check every record's CRC
//! silt dump PATH [--keys-only]         every live pair
//! silt get PATH KEY | silt put PATH KEY VALUE
//! silt compact PATH                    reclaim the space of dead records
//! ```
//!
//! `get` and `dump` open the store as a read-only follower (no lock, no file
//! changed), so they work beside a running writer; `stats`, `put` and
//! `compact` open it as its writer (they take the directory lock); `verify`
//! only reads files.

#[path = "../../benches/workloads/mod.rs"]
mod workloads;

use clap::{Parser, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use silt::Db;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "silt",
    version,
    about = "An async embedded key-value store: inspect and benchmark"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the standard workloads and print a results table.
    Bench {
        /// Directory to create the test stores in (default: a temporary
        /// directory, removed afterwards).
        #[arg(long)]
        path: Option<PathBuf>,
        /// Keys per workload (16 B keys, 100 B values).
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
    },
    /// Print a store's counters.
    Stats {
        path: PathBuf,
        /// Also list every data file with its live ratio.
        #[arg(long)]
        files: bool,
    },
    /// Rewrite the live records of every file holding dead ones and delete
    /// the old files; print what it did.
    Compact { path: PathBuf },
    /// Read every record of every file and check its CRC.
    Verify { path: PathBuf },
    /// Print every live pair (keys and values as escaped text).
    Dump {
        path: PathBuf,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
    },
    /// Print the value of KEY.
    Get { path: PathBuf, key: String },
    /// Set KEY to VALUE (durably).
    Put {
        path: PathBuf,
        key: String,
        value: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the Tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.cmd)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn escape(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// Opens an existing store: inspection must not create one by accident,
/// nor start rewriting files (background GC off; `compact` is explicit).
async fn open_existing(path: &std::path::Path) -> silt::Result<Db> {
    check_store(path)?;
    Db::builder(path).gc_threshold(0.0).open().await
}

/// Opens an existing store read-only, beside its writer if one runs.
async fn open_reader(path: &std::path::Path) -> silt::Result<Db> {
    check_store(path)?;
    Db::open_read_only(path).await
}

fn check_store(path: &std::path::Path) -> silt::Result<()> {
    if !path.join("data").is_dir() {
        return Err(silt::Error::InvalidArgument(format!(
            "no silt store at {}",
            path.display()
        )));
    }
    Ok(())
}

async fn run(cmd: Cmd) -> silt::Result<ExitCode> {
    match cmd {
        Cmd::Bench { path, keys } => bench(path, keys).await,
        Cmd::Stats { path, files } => {
            let db = open_existing(&path).await?;
            println!("{:#?}", db.stats());
            if files {
                println!(
                    "{:>10} {:>14} {:>14} {:>6}",
                    "file", "records B", "live B", "live"
                );
                for f in db.file_space() {
                    println!(
                        "{:>10} {:>14} {:>14} {:>5.1}%",
                        f.file_id,
                        f.record_bytes,
                        f.live_bytes,
                        f.live_ratio() * 100.0
                    );
                }
            }
            db.close().await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Compact { path } => {
            let db = open_existing(&path).await?;
            let spinner = ProgressBar::new_spinner();
            spinner.set_message("compacting");
            spinner.enable_steady_tick(Duration::from_millis(100));
            let report = db.compact().await;
            spinner.finish_and_clear();
            let report = report?;
            db.close().await?;
            println!(
                "{} files rewritten ({} kept), {} records and {} tombstones moved, {} tombstones dropped, {} bytes reclaimed in {:.3} s",
                report.files_rewritten,
                report.files_kept,
                report.records_moved,
                report.tombstones_kept,
                report.tombstones_dropped,
                report.bytes_reclaimed,
                report.duration.as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Verify { path } => verify(path),
        Cmd::Dump { path, keys_only } => {
            let db = open_reader(&path).await?;
            let mut pairs = Box::pin(db.scan());
            while let Some(pair) = pairs.next().await {
                let (k, v) = pair?;
                if keys_only {
                    println!("{}", escape(&k));
                } else {
                    println!("{}\t{}", escape(&k), escape(&v));
                }
            }
            db.close().await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Get { path, key } => {
            let db = open_reader(&path).await?;
            let v = db.get(key.as_bytes()).await?;
            db.close().await?;
            match v {
                Some(v) => {
                    println!("{}", escape(&v));
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("not found: {key}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Cmd::Put { path, key, value } => {
            let db = Db::open(&path).await?;
            db.put(key, value).await?;
            db.close().await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn verify(path: PathBuf) -> silt::Result<ExitCode> {
    if !path.join("data").is_dir() {
        return Err(silt::Error::InvalidArgument(format!(
            "no silt store at {}",
            path.display()
        )));
    }
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("verifying");
    let report = silt::verify(&path, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    println!(
        "{} files, {} records, {} bytes checked; {} torn-tail bytes in unsealed files",
        report.files, report.records, report.bytes, report.torn_tail_bytes
    );
    for p in &report.to_set_aside {
        println!(
            "SET ASIDE AT OPEN {}: an unsealed file written before it lost records it follows",
            p.display()
        );
    }
    for p in &report.problems {
        println!(
            "CORRUPT {} at offset {}: {}",
            p.path.display(),
            p.offset,
            p.what
        );
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// A progress bar per workload: fills count acknowledged keys
/// (`stats().keys`), reads spin.
struct Bars {
    current: Mutex<Option<(ProgressBar, tokio::task::JoinHandle<()>)>>,
}

impl workloads::Progress for Bars {
    fn start(&self, name: &str, db: &Db, total: Option<u64>) {
        let bar = match total {
            Some(t) => ProgressBar::new(t).with_style(
                ProgressStyle::with_template("{msg:44} [{bar:30}] {pos}/{len} {per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner(),
        };
        bar.set_message(name.to_string());
        let (b, db) = (bar.clone(), db.clone());
        let ticker = tokio::spawn(async move {
            loop {
                b.set_position(db.stats().keys);
                b.tick();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        if let Ok(mut cur) = self.current.lock() {
            *cur = Some((bar, ticker));
        }
    }

    fn finish(&self, row: &workloads::Row) {
        if let Some((bar, ticker)) = self.current.lock().ok().and_then(|mut c| c.take()) {
            ticker.abort();
            bar.finish_and_clear();
        }
        eprintln!(
            "done: {} ({:.0} ops/s) {}",
            row.name,
            row.ops_per_sec(),
            row.note
        );
    }
}

async fn bench(path: Option<PathBuf>, keys: u64) -> silt::Result<ExitCode> {
    let (dir, remove) = match path {
        Some(p) => (p, false),
        None => (
            std::env::temp_dir().join(format!("silt-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| silt::Error::InvalidArgument(format!("{}: {e}", dir.display())))?;
    eprintln!("silt bench: {keys} keys per workload in {}", dir.display());
    let bars = Bars {
        current: Mutex::new(None),
    };
    let rows = workloads::standard_suite(&dir, keys, &bars).await;
    if remove {
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!("\nsilt bench: {keys} keys of 16 B with 100 B values\n");
    workloads::print_table(&rows);
    Ok(ExitCode::SUCCESS)
}
