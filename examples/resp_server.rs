//! A Redis-protocol (RESP2) server over one `silt::Db`, for the tools
//! Redis users already have (`redis-cli`, `redis-benchmark`, any client).
//!
//! `cargo run --release --example resp_server -- [--dir DIR] [--addr ADDR]
//! [--durability sync|buffered|none] [--threads N]` (defaults: a
//! temporary directory, 127.0.0.1:6380, `sync`, one thread). Ctrl-C stops
//! accepting, answers what was read, and closes the store.
//!
//! Commands: PING, ECHO, GET, SET key value, DEL, EXISTS, MGET, MSET (one
//! atomic `WriteBatch`), DBSIZE, INFO, COMMAND, CONFIG GET, CLIENT,
//! SELECT 0, QUIT. Pipelined requests run in order, each seeing the
//! effects of those before it, and are answered in order; a run of plain
//! writes (SET, DEL, MSET) goes to the writer as one batch (one fdatasync
//! under `sync`) and a run of plain GETs is one `get_many`. The replies
//! match redis-server's byte for byte on random pipelines (checked by hand
//! against Redis 7; `tests/resp_server.rs` checks them against a model).
//! Unknown commands, wrong
//! arity and oversize keys get a RESP error and the connection goes on.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use silt::{Db, Durability, WriteBatch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Server limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; one more is told so and closed.
    pub max_connections: usize,
    /// The largest request (all its arguments) in bytes.
    pub max_request: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_request: 64 << 20,
        }
    }
}

/// One parsed request: its arguments.
type Args = Vec<Bytes>;

/// Why the connection must end after its error reply.
#[derive(Debug)]
struct ProtocolError(String);

/// The longest line (an inline command, or a `*`/`$` length line) read
/// before its end, as Redis's `PROTO_INLINE_MAX_SIZE`.
const MAX_LINE: usize = 64 << 10;

/// Parses one request from the front of `buf`; `Ok(None)` if it is not
/// all there yet. An empty request (an empty line, `*0`) is consumed and
/// gives an empty `Args`, which is answered with nothing, as Redis does.
fn parse(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Args>, ProtocolError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        // An inline command, as typed into telnet: ends at LF (a CR
        // before it is dropped).
        let Some(end) = buf.iter().position(|&b| b == b'\n') else {
            return if buf.len() > MAX_LINE {
                Err(ProtocolError("too big inline request".into()))
            } else {
                Ok(None)
            };
        };
        let line = buf.split_to(end + 1);
        let args = line[..end]
            .split(|b| b.is_ascii_whitespace())
            .filter(|a| !a.is_empty())
            .map(Bytes::copy_from_slice)
            .collect();
        return Ok(Some(args));
    }
    let Some(line_end) = find_crlf(buf, 0)? else {
        return Ok(None);
    };
    let count = signed(&buf[1..line_end])?;
    if count <= 0 {
        bytes::Buf::advance(buf, line_end + 2);
        return Ok(Some(Vec::new()));
    }
    let count = count as usize;
    if count > limits.max_request / 4 {
        return Err(ProtocolError(format!(
            "a request of {count} arguments is over the limit"
        )));
    }
    let mut at = line_end + 2;
    let mut spans = Vec::with_capacity(count);
    for _ in 0..count {
        let Some(end) = find_crlf(buf, at)? else {
            return Ok(None);
        };
        if buf[at] != b'$' {
            return Err(ProtocolError("expected '$', got something else".into()));
        }
        let len = number(&buf[at + 1..end])?;
        if len > limits.max_request {
            return Err(ProtocolError(format!(
                "an argument of {len} bytes is over the {} byte limit",
                limits.max_request
            )));
        }
        let start = end + 2;
        if buf.len() < start + len + 2 {
            return Ok(None);
        }
        spans.push((start, len));
        at = start + len + 2;
    }
    let frame = buf.split_to(at).freeze();
    Ok(Some(
        spans
            .into_iter()
            .map(|(s, l)| frame.slice(s..s + l))
            .collect(),
    ))
}

/// Where the CRLF ending the line that starts at `from` is; `None` if it
/// is not there yet; an error once the line is longer than [`MAX_LINE`].
fn find_crlf(buf: &[u8], from: usize) -> Result<Option<usize>, ProtocolError> {
    let rest = buf.get(from..).unwrap_or_default();
    let window = &rest[..rest.len().min(MAX_LINE + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(p) => Ok(Some(from + p)),
        None if rest.len() <= MAX_LINE + 1 => Ok(None),
        None => Err(ProtocolError("too big count string".into())),
    }
}

fn signed(digits: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ProtocolError("invalid multibulk length".into()))
}

fn number(digits: &[u8]) -> Result<usize, ProtocolError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            ProtocolError(format!(
                "invalid length {:?}",
                String::from_utf8_lossy(digits)
            ))
        })
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Simple(&'static str),
    Error(String),
    Int(i64),
    Bulk(Option<Bytes>),
    Array(Vec<Reply>),
}

impl Reply {
    fn write(&self, out: &mut Vec<u8>) {
        // `write!` into the Vec formats in place: no String per reply.
        use std::io::Write;
        let _ = match self {
            Reply::Simple(s) => write!(out, "+{s}\r\n"),
            Reply::Error(e) => write!(out, "-{}\r\n", e.replace(['\r', '\n'], " ")),
            Reply::Int(n) => write!(out, ":{n}\r\n"),
            Reply::Bulk(None) => Write::write_all(out, b"$-1\r\n"),
            Reply::Bulk(Some(b)) => {
                let _ = write!(out, "${}\r\n", b.len());
                out.extend_from_slice(b);
                Write::write_all(out, b"\r\n")
            }
            Reply::Array(items) => {
                let _ = write!(out, "*{}\r\n", items.len());
                items.iter().for_each(|i| i.write(out));
                Ok(())
            }
        };
    }
}

fn from_result(r: silt::Result<Reply>) -> Reply {
    r.unwrap_or_else(|e| Reply::Error(format!("ERR {e}")))
}

fn arity(name: &str) -> Reply {
    Reply::Error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// A pipeline's next step: one command, a run of plain writes (SET, DEL,
/// MSET) written as one `WriteBatch`, or a run of plain `GET key`s read
/// with one `get_many`: one trip to the writer (or one future) instead of
/// one each. Steps run one after another, so every command sees the
/// effects of those before it.
enum Step {
    One(Args),
    Writes(Vec<Args>),
    Gets(Vec<Bytes>),
}

impl Step {
    /// The step at the front of `requests`, and how many requests it took.
    fn take(requests: &mut [Args]) -> (Step, usize) {
        let writes = run_len(requests, plain_write, |a| a.iter().map(Bytes::len).sum());
        if writes >= 2 {
            let run = requests[..writes].iter_mut().map(std::mem::take).collect();
            return (Step::Writes(run), writes);
        }
        let gets = run_len(requests, plain_get, |a| a[1].len());
        if gets >= 2 {
            let keys = requests[..gets]
                .iter_mut()
                .map(|args| std::mem::take(args).pop().unwrap_or_default())
                .collect();
            return (Step::Gets(keys), gets);
        }
        (Step::One(std::mem::take(&mut requests[0])), 1)
    }

    /// Its replies, in order, each as its command alone would have had
    /// it: a run of writes that fails fails each of its commands (as each
    /// alone would have failed), and a run of GETs that meets an error is
    /// read again one by one, so only the GET that failed says so.
    async fn run(self, db: &Db) -> Vec<Option<Reply>> {
        match self {
            Step::One(args) => vec![execute(db, args).await],
            Step::Writes(run) => {
                let n = run.len();
                match write_run(db, run).await {
                    Ok(replies) => replies.into_iter().map(Some).collect(),
                    Err(e) => (0..n)
                        .map(|_| Some(Reply::Error(format!("ERR {e}"))))
                        .collect(),
                }
            }
            Step::Gets(keys) => match db.get_many(&keys).await {
                Ok(values) => values.into_iter().map(|v| Some(Reply::Bulk(v))).collect(),
                Err(_) => {
                    let mut replies = Vec::with_capacity(keys.len());
                    for key in keys {
                        replies.push(Some(from_result(db.get(&key).await.map(Reply::Bulk))));
                    }
                    replies
                }
            },
        }
    }
}

/// A run of plain writes as one atomic batch. A DEL's count is what Redis
/// would answer at its place in the run: keys written earlier in the run
/// are known from the run itself, the others were read before it.
async fn write_run(db: &Db, run: Vec<Args>) -> silt::Result<Vec<Reply>> {
    let deleted: Vec<&Bytes> = run
        .iter()
        .filter(|a| a[0].eq_ignore_ascii_case(b"DEL"))
        .flat_map(|a| &a[1..])
        .collect();
    let existed = db.get_many(&deleted).await?;
    let mut exists: HashMap<&Bytes, bool> = deleted
        .iter()
        .zip(&existed)
        .map(|(k, v)| (*k, v.is_some()))
        .collect();
    let mut batch = WriteBatch::new();
    let mut replies = Vec::with_capacity(run.len());
    for args in &run {
        if args[0].eq_ignore_ascii_case(b"DEL") {
            let mut n = 0;
            for key in &args[1..] {
                if exists.insert(key, false) == Some(true) {
                    batch.delete(key);
                    n += 1;
                }
            }
            replies.push(Reply::Int(n));
        } else {
            // SET key value, MSET key value ...
            for pair in args[1..].chunks(2) {
                batch.put(&pair[0], pair[1].clone());
                exists.insert(&pair[0], true);
            }
            replies.push(Reply::Simple("OK"));
        }
    }
    if !batch.is_empty() {
        db.write(batch).await?;
    }
    Ok(replies)
}

/// Values up to this size join a pipeline's batch of writes.
const RUN_VALUE_MAX: usize = 64 << 10;
/// A run stops growing at this many bytes (a batch must fit in one slab
/// with room to spare).
const RUN_BYTES_MAX: usize = 1 << 20;

/// A key the store takes as it is (Redis also allows an empty key, which
/// silt refuses: such a command runs alone and fails alone).
fn storable(key: &Bytes) -> bool {
    !key.is_empty() && key.len() <= silt::MAX_KEY_LEN
}

/// A `SET key value` without options, a `DEL key ...` or an
/// `MSET key value ...`, with storable keys and no large value.
fn plain_write(args: &Args) -> bool {
    let Some(name) = args.first() else {
        return false;
    };
    let pairs_ok = |rest: &[Bytes]| {
        rest.chunks(2)
            .all(|p| p.len() == 2 && storable(&p[0]) && p[1].len() <= RUN_VALUE_MAX)
    };
    if name.eq_ignore_ascii_case(b"SET") {
        args.len() == 3 && pairs_ok(&args[1..])
    } else if name.eq_ignore_ascii_case(b"MSET") {
        args.len() >= 3 && args.len() % 2 == 1 && pairs_ok(&args[1..])
    } else if name.eq_ignore_ascii_case(b"DEL") {
        args.len() >= 2 && args[1..].iter().all(storable)
    } else {
        false
    }
}

/// A `GET key` with a storable key.
fn plain_get(args: &Args) -> bool {
    args.len() == 2 && args[0].eq_ignore_ascii_case(b"GET") && storable(&args[1])
}

/// How many requests at the front of `requests` pass `plain`, up to
/// `RUN_BYTES_MAX` bytes as counted by `bytes`.
fn run_len(requests: &[Args], plain: fn(&Args) -> bool, bytes: fn(&Args) -> usize) -> usize {
    let (mut n, mut total) = (0, 0);
    while n < requests.len() && total < RUN_BYTES_MAX && plain(&requests[n]) {
        total += bytes(&requests[n]);
        n += 1;
    }
    n
}

/// Runs one command. `None` means QUIT: reply `+OK`, then close.
async fn execute(db: &Db, args: Args) -> Option<Reply> {
    let Some(name) = args.first() else {
        return Some(Reply::Error("ERR empty command".into()));
    };
    // Lower-cased on the stack: every known name fits in 8 bytes, and a
    // longer one is unknown ("").
    let mut buf = [0u8; 8];
    let lower = match buf.get_mut(..name.len()) {
        Some(b) => {
            b.copy_from_slice(name);
            b.make_ascii_lowercase();
            std::str::from_utf8(b).unwrap_or("")
        }
        None => "",
    };
    let rest = &args[1..];
    let reply = match (lower, rest.len()) {
        ("ping", 0) => Reply::Simple("PONG"),
        ("ping", 1) | ("echo", 1) => Reply::Bulk(Some(rest[0].clone())),
        ("get", 1) => from_result(db.get(&rest[0]).await.map(Reply::Bulk)),
        ("set", 2) => from_result(
            db.put(&rest[0], rest[1].clone())
                .await
                .map(|()| Reply::Simple("OK")),
        ),
        ("set", n) if n > 2 => {
            Reply::Error("ERR syntax error (SET options are not supported)".into())
        }
        ("del", n) if n > 0 => from_result(
            write_run(db, vec![args.clone()])
                .await
                .map(|mut r| r.pop().unwrap_or(Reply::Int(0))),
        ),
        ("exists", n) if n > 0 => from_result(
            db.get_many(rest)
                .await
                .map(|v| Reply::Int(v.iter().filter(|v| v.is_some()).count() as i64)),
        ),
        ("mget", n) if n > 0 => from_result(
            db.get_many(rest)
                .await
                .map(|v| Reply::Array(v.into_iter().map(Reply::Bulk).collect())),
        ),
        ("mset", n) if n > 0 && n % 2 == 0 => {
            let mut batch = WriteBatch::new();
            for pair in rest.chunks(2) {
                if pair[0].len() > silt::MAX_KEY_LEN {
                    return Some(Reply::Error(format!(
                        "ERR key is {} bytes; the limit is {}",
                        pair[0].len(),
                        silt::MAX_KEY_LEN
                    )));
                }
                batch.put(&pair[0], pair[1].clone());
            }
            from_result(db.write(batch).await.map(|()| Reply::Simple("OK")))
        }
        ("dbsize", 0) => Reply::Int(db.stats().keys as i64),
        ("info", _) => {
            let s = db.stats();
            let text = format!(
                "# Server\r\nsilt_version:{}\r\ndurability:{:?}\r\nio_backend:{:?}\r\n\
                 # Keyspace\r\nkeys:{}\r\nsegments:{}\r\nslabs_in_memory:{}\r\n\
                 # Commits\r\ncommit_groups:{}\r\navg_group_size:{:.2}\r\nwal_syncs:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                s.durability,
                s.io_backend,
                s.keys,
                s.segments,
                s.slabs_in_memory,
                s.commit_groups,
                s.avg_group_size,
                s.wal_syncs,
            );
            Reply::Bulk(Some(Bytes::from(text)))
        }
        // Enough for redis-cli's and redis-benchmark's handshakes.
        ("command", _) | ("config", _) => Reply::Array(Vec::new()),
        ("client", _) => Reply::Simple("OK"),
        ("select", 1) if &rest[0][..] == b"0" => Reply::Simple("OK"),
        ("select", 1) => Reply::Error("ERR DB index is out of range".into()),
        ("quit", _) => return None,
        (
            "ping" | "echo" | "get" | "set" | "del" | "exists" | "mget" | "mset" | "dbsize"
            | "select",
            _,
        ) => arity(lower),
        _ => Reply::Error(format!(
            "ERR unknown command '{}'",
            String::from_utf8_lossy(name).to_ascii_lowercase()
        )),
    };
    Some(reply)
}

/// Serves one connection until the client leaves, QUIT, a protocol
/// error, or `stop` (after answering what it read). While replies wait to
/// be sent it goes on reading requests, so a client that sends a whole
/// pipeline before it reads (redis-py does) is never deadlocked against
/// it; replies queue without a limit meanwhile, as Redis's do for normal
/// clients.
async fn connection(
    mut stream: TcpStream,
    db: Db,
    limits: Limits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (mut rd, mut wr) = stream.split();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    // Bytes at the front of `out` already sent.
    let mut sent = 0;
    let mut eof = false;
    loop {
        // Every complete request read so far, answered in order.
        let mut requests = Vec::new();
        let mut fatal = None;
        loop {
            match parse(&mut buf, &limits) {
                Ok(Some(args)) if args.is_empty() => {}
                Ok(Some(args)) => requests.push(args),
                Ok(None) => break,
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        let mut quit = false;
        let mut i = 0;
        while i < requests.len() && !quit {
            let (step, taken) = Step::take(&mut requests[i..]);
            i += taken;
            for reply in step.run(&db).await {
                match reply {
                    Some(r) => r.write(&mut out),
                    None => {
                        Reply::Simple("OK").write(&mut out);
                        quit = true;
                    }
                }
            }
        }
        if let Some(ProtocolError(e)) = &fatal {
            Reply::Error(format!("ERR Protocol error: {e}")).write(&mut out);
        }
        // On shutdown a request not yet read whole is not answered (and
        // so not acknowledged).
        if quit || fatal.is_some() || eof || *stop.borrow() {
            wr.write_all(&out[sent..]).await?;
            return Ok(());
        }
        let pending = sent < out.len();
        tokio::select! {
            n = wr.write(&out[sent..]), if pending => {
                sent += n?;
                if sent == out.len() {
                    out.clear();
                    sent = 0;
                }
            }
            n = rd.read_buf(&mut buf) => eof = n? == 0,
            _ = stop.changed() => {}
        }
    }
}

/// Accepts connections on `listener` until `shutdown` completes, then
/// waits for every connection to answer what it had read.
pub async fn serve_until(
    listener: TcpListener,
    db: Db,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (mut stream, _) = accepted?;
                let _ = stream.set_nodelay(true);
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
                    continue;
                };
                let (db, stop) = (db.clone(), stop_rx.clone());
                tasks.spawn(async move {
                    let _slot = slot;
                    let _ = connection(stream, db, limits, stop).await;
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

fn durability(s: &str) -> Result<Durability, String> {
    match s {
        "sync" => Ok(Durability::Sync),
        "buffered" => Ok(Durability::Buffered),
        "none" => Ok(Durability::None),
        other => Err(format!(
            "--durability {other}: expected sync, buffered or none"
        )),
    }
}

const USAGE: &str = "\
A Redis-protocol (RESP2) server over one silt store.

usage: resp_server [--dir DIR] [--addr ADDR] [--durability sync|buffered|none] [--threads N]

  --dir DIR          the store's directory (default: a temporary one, removed at exit)
  --addr ADDR        where to listen (default: 127.0.0.1:6380)
  --durability MODE  sync (default), buffered or none
  --threads N        runtime threads (default: 1, the writer on the same thread)

Ctrl-C stops accepting, answers what was read, and closes the store.";

#[allow(dead_code)] // unused when the tests include this file
fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(std::env::args().skip(1))
}

/// The server, as `main` runs it with the command line's arguments.
pub fn run(args: impl IntoIterator<Item = String>) -> Result<(), Box<dyn std::error::Error>> {
    let mut dir = None;
    let mut addr = "127.0.0.1:6380".to_string();
    let mut mode = Durability::Sync;
    let mut threads = 1;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            return Ok(());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dir" => dir = Some(std::path::PathBuf::from(value)),
            "--addr" => addr = value,
            "--durability" => mode = durability(&value)?,
            "--threads" => threads = value.parse().map_err(|e| format!("--threads: {e}"))?,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    // One thread by default, as redis-server: measured on 2 cores with
    // redis-benchmark on the same machine, one thread serves unpipelined
    // requests faster (fewer wake-ups across threads), a multi-thread
    // runtime pipelined ones (docs/decisions.md, issue 19).
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(dir, addr, mode))
}

#[allow(dead_code)] // unused when the tests include this file
async fn serve(
    dir: Option<std::path::PathBuf>,
    addr: String,
    mode: Durability,
) -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    // The writer task on this runtime too, even a current-thread one
    // (`Auto` would give it a thread of its own): with one thread, a SET
    // crosses no thread between the socket and the WAL's log thread.
    let db = Db::builder(&dir)
        .durability(mode)
        .runtime(silt::StoreRuntime::Caller)
        .open()
        .await?;
    let listener = TcpListener::bind(&addr).await?;
    println!("serving {} on {addr} ({mode:?})", dir.display());
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve_until(listener, db.clone(), Limits::default(), ctrl_c).await?;
    db.close().await?;
    Ok(())
}
