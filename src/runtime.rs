//! Each store's own runtime: one OS thread running a `current_thread`
//! Tokio runtime for the writer task, background GC and
//! `compact()`, with its own blocking pool (open's recovery, XL files).
//!
//! Why not the opener's runtime (issue 17): a store must outlive the
//! runtime that opened it, answer a caller on any other runtime (or none),
//! and not stall when the opener's `current_thread` runtime does
//! synchronous work. Every call from a handle is a channel message or a
//! wait on a tokio sync primitive, which work from any executor.
//!
//! The thread ends when the store has stopped (closed, every handle
//! dropped, or a simulated crash): it then drops its runtime (waiting for
//! blocking tasks), runs the store's last blocking steps (joining the
//! store's threads, releasing the lock) and reports "stopped".

use crate::error::{Error, Result};
use crate::shared::Shared;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The store's main future: the writer's life; `true` if it was halted.
pub(crate) type Main = Pin<Box<dyn Future<Output = bool> + Send>>;

/// A started store thread, waiting for its main future.
pub(crate) struct Launch {
    main: oneshot::Sender<(Main, Arc<Shared>)>,
    thread: std::thread::JoinHandle<()>,
}

impl Launch {
    /// Runs `main` on the store's runtime, then stops the store. Dropping
    /// a `Launch` instead (open failed) ends the thread.
    pub fn run(self, main: Main, shared: Arc<Shared>) {
        *crate::sync::lock(&shared.store_thread) = Some(self.thread);
        // The thread only ends early if it could not build its runtime,
        // which `start` already reported.
        let _ = self.main.send((main, shared));
    }
}

/// Starts a store's thread and runtime; returns the runtime's handle.
pub(crate) fn start() -> Result<(Handle, Launch)> {
    let (handle_tx, handle_rx) = std::sync::mpsc::sync_channel(1);
    let (main_tx, main_rx) = oneshot::channel::<(Main, Arc<Shared>)>();
    let spawned = std::thread::Builder::new()
        .name("silt-store".into())
        .spawn(move || {
            // No I/O or time driver: nothing of the store needs one, and
            // without them the idle thread parks on a futex, which wakes
            // faster than an epoll wait.
            let rt = tokio::runtime::Builder::new_current_thread()
                .thread_name("silt-blocking")
                .build();
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = handle_tx.send(Err(e));
                    return;
                }
            };
            let _ = handle_tx.send(Ok(rt.handle().clone()));
            let ran = rt.block_on(async {
                let (main, shared) = main_rx.await.ok()?;
                Some((main.await, shared))
            });
            // Cancels what is left (a background compaction) and waits for
            // blocking tasks.
            drop(rt);
            if let Some((halted, shared)) = ran {
                stop(&shared, halted);
            }
        });
    let start_err = |e| Error::io("start the store's thread", "", e);
    let thread = spawned.map_err(start_err)?;
    let handle = handle_rx
        .recv()
        .map_err(|_| Error::Closed)?
        .map_err(start_err)?;
    Ok((
        handle,
        Launch {
            main: main_tx,
            thread,
        },
    ))
}

/// Where a store's writer runs, decided at open.
pub(crate) enum Placement {
    /// The runtime that opened it.
    Caller(Handle),
    /// Its own thread and runtime.
    Dedicated(Handle, Launch),
}

impl Placement {
    pub fn handle(&self) -> &Handle {
        match self {
            Placement::Caller(h) | Placement::Dedicated(h, _) => h,
        }
    }

    /// Runs the store's life (see [`store_life`]) where it was placed, and
    /// stops the store after it, however it ends.
    pub fn run(self, main: Main, shared: Arc<Shared>) {
        match self {
            Placement::Dedicated(_, launch) => launch.run(main, shared),
            Placement::Caller(h) => {
                h.spawn(async move {
                    // If the caller's runtime shuts down under the writer,
                    // this is dropped with the task: the store stops all
                    // the same (its lock released), and handles on other
                    // runtimes get `Closed`.
                    let mut guard = StopOnDrop(Some(shared));
                    let halted = main.await;
                    if let Some(shared) = guard.0.take() {
                        // Joins threads: on the blocking pool, not here.
                        let stopping = shared.clone();
                        let spawned = tokio::task::spawn_blocking(move || stop(&stopping, halted));
                        if spawned.await.is_err() {
                            // The runtime is shutting down under it.
                            stop_off_runtime(shared, halted);
                        }
                    }
                });
            }
        }
    }
}

struct StopOnDrop(Option<Arc<Shared>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            stop_off_runtime(shared, false);
        }
    }
}

/// [`stop`] on a thread of its own: it joins threads and waits for
/// blocking work, which a runtime worker must not.
fn stop_off_runtime(shared: Arc<Shared>, halted: bool) {
    let spawned = std::thread::Builder::new().name("silt-stop".into()).spawn({
        let shared = shared.clone();
        move || stop(&shared, halted)
    });
    if spawned.is_err() {
        // No thread to wait on: at least say stopped; the lock goes with
        // the last handle.
        shared.stopped.send_replace(true);
    }
}

/// The store's last steps once its writer is gone: its threads joined and
/// its blocking work done (no file of it changes after this), its lock
/// released, "stopped" reported. After a halt (a simulated crash) only
/// the report: a killed process runs nothing, and the lock goes with the
/// last handle.
fn stop(shared: &Shared, halted: bool) {
    if !halted {
        // The writer dropped the threads' channels: they are exiting.
        let mut threads = std::mem::take(&mut *crate::sync::lock(&shared.threads));
        threads.extend(shared.reader.shutdown());
        for t in threads {
            let _ = t.join();
        }
        shared.blocking_work.wait_idle();
        drop(crate::sync::lock(&shared.lock_file).take());
    }
    shared.stopped.send_replace(true);
}

/// Runs `f` on a new thread of its own and waits for it without blocking
/// the caller's executor (whatever it is): blocking work of handles that
/// have no store runtime (followers) or must not need one.
pub(crate) async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let (tx, rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("silt-blocking".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| Error::io("start a blocking thread", "", e))?;
    // The thread dropped its sender without sending: `f` panicked.
    let out = rx.await.map_err(|_| Error::Closed);
    join_exiting(thread);
    out
}

/// Joins a thread whose last act (a send) was already seen: it is exiting,
/// so this returns at once, and nothing of the store runs on after the
/// call that waited for it (a leak checker sees no thread left).
pub(crate) fn join_exiting(thread: std::thread::JoinHandle<()>) {
    let _ = thread.join();
}

/// Aborts a task of the store's runtime when dropped: a caller's future
/// that is dropped stops the work it started there.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The store's life on its runtime: the writer until it stops (closed, or
/// every handle gone), then background GC stopped and any compaction
/// waited for. A halt (a simulated crash) drops the writer where it is and
/// skips the rest, as a killed process would. Returns whether it halted.
pub(crate) fn store_life(
    writer: crate::writer::Writer,
    shared: Arc<Shared>,
    halt: oneshot::Receiver<()>,
) -> Main {
    Box::pin(async move {
        use futures::FutureExt as _;
        // A panic in the writer stops the store like any other end, and
        // callers learn it as `Stopped` with the panic's message.
        let run = std::panic::AssertUnwindSafe(writer.run()).catch_unwind();
        let halted = tokio::select! {
            biased;
            Ok(()) = halt => true,
            ran = run => {
                if let Err(panic) = ran {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a non-text panic".into());
                    shared.stopped_because(crate::error::StopCause::WriterPanicked(msg));
                }
                false
            }
        };
        if !halted {
            // Aborting GC at an await point is safe: a compaction deletes a
            // file only after its moves are durable, in one step.
            if let Some(gc) = crate::sync::lock(&shared.gc_task).take() {
                gc.abort();
            }
            drop(shared.compacting.lock().await);
        }
        halted
    })
}

/// Blocking-pool work of the store still running (an XL file, a
/// compaction's unlink, a `Buffered` sync): a runtime that shuts down
/// cannot stop it, so the store's last step waits for it before it
/// releases the lock.
#[derive(Debug, Default)]
pub(crate) struct BlockingWork {
    running: std::sync::Mutex<usize>,
    idle: std::sync::Condvar,
}

impl BlockingWork {
    fn wait_idle(&self) {
        let mut n = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            n = self.idle.wait(n).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// One unit of [`BlockingWork`]: made before the work is handed to the
/// blocking pool and moved into it, so it ends when the work does or
/// when a shutting-down runtime drops the work unrun.
#[derive(Debug)]
pub(crate) struct Busy(Arc<Shared>);

impl Busy {
    pub fn new(shared: &Arc<Shared>) -> Busy {
        *shared
            .blocking_work
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner()) += 1;
        Busy(shared.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let work = &self.0.blocking_work;
        let mut n = work.running.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        if *n == 0 {
            work.idle.notify_all();
        }
    }
}

/// `spawn_blocking` for the store's own work, counted in [`BlockingWork`].
pub(crate) fn spawn_blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    let busy = Busy::new(shared);
    tokio::task::spawn_blocking(move || {
        let _busy = busy;
        f()
    })
}
