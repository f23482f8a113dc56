//! Helpers shared by the integration tests.
#![allow(dead_code)]

use silt::{Builder, Db};
use std::path::{Path, PathBuf};

/// A small-slab builder so rotation and flushing happen constantly.
pub fn small(path: &Path) -> Builder {
    Db::builder(path).slab_size(64 * 1024).max_sealed_slabs(2)
}

/// Runs `work` against a store on a private runtime, then "crashes": the
/// runtime is dropped (cancelling `work`'s tasks) and the store is stopped
/// where it is (`Db::simulate_crash`): nothing is sealed, flushed or
/// closed. What is left on disk is what a killed process leaves behind
/// (page cache included).
pub fn crash_after<F, Fut>(builder: Builder, work: F)
where
    F: FnOnce(Db) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    // Its own OS thread, so it works from inside a #[tokio::test] too.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let db = rt.block_on(async {
            let db = builder.open().await.unwrap();
            work(db.clone()).await;
            db
        });
        drop(rt);
        futures::executor::block_on(db.simulate_crash());
    })
    .join()
    .unwrap();
}

/// The files in `dir/data` with the given extension, sorted.
pub fn data_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// Opens after a simulated crash: the crashed store's flush threads release
/// the directory lock when they notice their channel closed, a moment after
/// the runtime is gone (a killed process releases it at once).
pub async fn open_after_crash(builder: Builder) -> Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match builder.clone().open().await {
            Err(silt::Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await
            }
            other => return other.unwrap(),
        }
    }
}

/// Waits until no store holds `dir`'s lock (a dead store's background
/// threads release it when they notice their channels closed).
pub fn wait_unlocked(dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("LOCK"))
        .unwrap();
    while lock.try_lock().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the store's lock was never released"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    lock.unlock().unwrap();
}

/// This test binary re-run as a child process that runs the one test
/// `test` (with `--ignored` where the child's test is ignored when run
/// alone), with `env` set. Its stdout is handed back to read; its stderr
/// is collected, so that a child that died on its own is reported with
/// what it printed instead of being taken for one the parent killed.
pub struct ChildTest {
    child: std::process::Child,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl ChildTest {
    pub fn spawn(
        test: &str,
        ignored: bool,
        env: &[(&str, String)],
    ) -> (ChildTest, std::process::ChildStdout) {
        use std::process::{Command, Stdio};
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", test, "--nocapture", "--test-threads", "1"]);
        if ignored {
            cmd.arg("--ignored");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        (
            ChildTest {
                child,
                stderr: Some(stderr),
            },
            stdout,
        )
    }

    /// Panics with the child's stderr if it is no longer running.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            let stderr = self.stderr.take().unwrap().join().unwrap();
            panic!("the child exited on its own ({status}) before the kill:\n{stderr}");
        }
    }

    /// SIGKILLs the child, which must still be running, and checks that
    /// the kill is what ended it.
    pub fn kill(mut self) {
        use std::os::unix::process::ExitStatusExt;
        self.assert_running();
        self.child.kill().unwrap(); // SIGKILL
        let status = self.child.wait().unwrap();
        let stderr = self.stderr.take().unwrap().join().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "the child ended by {status}, not the kill:\n{stderr}"
        );
    }
}
