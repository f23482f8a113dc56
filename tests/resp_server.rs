//! Drives examples/resp_server.rs with redis-rs, a Redis client no one
//! here wrote: every command, pipelines, errors, many connections, the
//! connection cap and a graceful shutdown.

mod common;
#[path = "../examples/resp_server.rs"]
mod resp_server;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};
use resp_server::Limits;
use silt::Db;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct Server {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    db: Db,
}

async fn start(dir: &std::path::Path, limits: Limits) -> Server {
    let db = Db::open(dir).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(resp_server::serve_until(
        listener,
        db.clone(),
        limits,
        async {
            let _ = rx.await;
        },
    ));
    Server {
        addr,
        stop: Some(tx),
        task,
        db,
    }
}

impl Server {
    async fn connect(&self) -> MultiplexedConnection {
        let client = redis::Client::open(format!("redis://{}/", self.addr)).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        // redis-rs gives up on a reply after 500 ms by default; a loaded
        // 2-core CI machine's fdatasyncs can add up to more in a pipeline.
        con.set_response_timeout(std::time::Duration::from_secs(60));
        con
    }

    async fn stop(mut self) -> Db {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
        self.db
    }
}

async fn cmd<T: redis::FromRedisValue>(
    con: &mut MultiplexedConnection,
    args: &[&[u8]],
) -> RedisResult<T> {
    let mut c = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(con).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_through_redis_rs() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Limits::default()).await;
    let mut con = server.connect().await;

    assert_eq!(cmd::<String>(&mut con, &[b"PING"]).await.unwrap(), "PONG");
    assert_eq!(
        cmd::<String>(&mut con, &[b"ECHO", b"hi"]).await.unwrap(),
        "hi"
    );
    assert_eq!(
        cmd::<String>(&mut con, &[b"SET", b"a", b"1"])
            .await
            .unwrap(),
        "OK"
    );
    assert_eq!(
        cmd::<Option<String>>(&mut con, &[b"GET", b"a"])
            .await
            .unwrap()
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        cmd::<Option<String>>(&mut con, &[b"GET", b"nope"])
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        cmd::<String>(&mut con, &[b"MSET", b"b", b"2", b"c", b"3"])
            .await
            .unwrap(),
        "OK"
    );
    let got: Vec<Option<String>> = cmd(&mut con, &[b"MGET", b"a", b"b", b"x", b"c"])
        .await
        .unwrap();
    assert_eq!(
        got,
        [Some("1".into()), Some("2".into()), None, Some("3".into())]
    );
    assert_eq!(
        cmd::<i64>(&mut con, &[b"EXISTS", b"a", b"x", b"b"])
            .await
            .unwrap(),
        2
    );
    assert_eq!(cmd::<i64>(&mut con, &[b"DBSIZE"]).await.unwrap(), 3);
    assert_eq!(
        cmd::<i64>(&mut con, &[b"DEL", b"a", b"x", b"b"])
            .await
            .unwrap(),
        2
    );
    assert_eq!(cmd::<i64>(&mut con, &[b"DBSIZE"]).await.unwrap(), 1);
    let info: String = cmd(&mut con, &[b"INFO"]).await.unwrap();
    assert!(info.contains("keys:1"), "{info}");
    assert_eq!(
        cmd::<Vec<Value>>(&mut con, &[b"COMMAND", b"DOCS"])
            .await
            .unwrap(),
        Vec::<Value>::new()
    );
    let binary = vec![0u8, 13, 10, 255, 36, 42];
    redis::cmd("SET")
        .arg(&b"bin"[..])
        .arg(&binary)
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    let back: Vec<u8> = redis::cmd("GET")
        .arg(&b"bin"[..])
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(back, binary, "values are binary safe");

    // Errors are replies; the connection goes on.
    let err = cmd::<Value>(&mut con, &[b"FLY"]).await.unwrap_err();
    assert!(err.to_string().contains("unknown command 'fly'"), "{err}");
    let err = cmd::<Value>(&mut con, &[b"GET"]).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("wrong number of arguments for 'get'"),
        "{err}"
    );
    let err = cmd::<Value>(&mut con, &[b"SET", b"k", b"v", b"EX", b"10"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("syntax error"), "{err}");
    let big = vec![b'k'; silt::MAX_KEY_LEN + 1];
    let err = cmd::<Value>(&mut con, &[b"SET", &big, b"v"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
    let err = cmd::<Value>(&mut con, &[b"MSET", b"ok", b"v", &big, b"v"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
    assert_eq!(
        cmd::<Option<String>>(&mut con, &[b"GET", b"ok"])
            .await
            .unwrap(),
        None,
        "MSET is all or nothing"
    );
    assert_eq!(cmd::<String>(&mut con, &[b"PING"]).await.unwrap(), "PONG");

    let db = server.stop().await;
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Limits::default()).await;
    let mut con = server.connect().await;
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for i in 0..200 {
        pipe.cmd("SET").arg(format!("k{}", i % 7)).arg(i);
        pipe.cmd("GET").arg(format!("k{}", i % 7));
        if i % 50 == 0 {
            pipe.cmd("NOPE");
        }
    }
    let replies: Vec<Value> = pipe
        .query_async(&mut con)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut r = replies.into_iter();
    for i in 0..200 {
        assert_eq!(r.next(), Some(Value::Okay), "SET {i}");
        assert_eq!(
            r.next(),
            Some(Value::BulkString(i.to_string().into_bytes())),
            "GET after SET {i} sees it"
        );
        if i % 50 == 0 {
            assert!(
                matches!(r.next(), Some(Value::ServerError(_))),
                "NOPE after {i}"
            );
        }
    }
    assert!(r.next().is_none(), "no reply too many");
    server.stop().await.close().await.unwrap();
}

/// A pipeline's runs of plain SETs go to the store as one batch each; a
/// SET that cannot join one (a key over the limit, a large value,
/// options) is answered on its own, in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_sets_in_a_pipeline_keep_per_command_replies() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Limits::default()).await;
    let mut con = server.connect().await;
    let long_key = vec![b'k'; silt::MAX_KEY_LEN + 1];
    let large = vec![7u8; 200 << 10];
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for i in 0..300 {
        pipe.cmd("SET").arg(format!("r{}", i % 13)).arg(i);
        match i % 60 {
            10 => drop(pipe.cmd("SET").arg(&long_key).arg(i)),
            20 => drop(pipe.cmd("SET").arg("large").arg(&large)),
            30 => drop(pipe.cmd("SET").arg("x").arg(1).arg("NX")),
            _ => {}
        }
    }
    for k in 0..13 {
        pipe.cmd("GET").arg(format!("r{k}"));
    }
    pipe.cmd("GET").arg("large");
    let replies: Vec<Value> = pipe
        .query_async(&mut con)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut r = replies.into_iter();
    for i in 0..300 {
        assert_eq!(r.next(), Some(Value::Okay), "SET {i}");
        match i % 60 {
            10 | 30 => assert!(
                matches!(r.next(), Some(Value::ServerError(_))),
                "the refused SET after {i} gets an error in its place"
            ),
            20 => assert_eq!(r.next(), Some(Value::Okay), "large SET after {i}"),
            _ => {}
        }
    }
    for k in 0..13 {
        // The last SET of each key in the pipeline wins.
        let last = (0..300).filter(|i| i % 13 == k).max().unwrap();
        assert_eq!(
            r.next(),
            Some(Value::BulkString(last.to_string().into_bytes())),
            "r{k}"
        );
    }
    match r.next() {
        Some(Value::BulkString(v)) => assert!(v == large, "large value reads back whole"),
        other => panic!("GET large: {:?}", other.map(|_| "not a bulk string")),
    }
    assert!(r.next().is_none(), "no reply too many");
    let db = server.stop().await;
    assert_eq!(db.get(b"r12").await.unwrap().unwrap(), "298");
    assert!(db.get(b"x").await.unwrap().is_none());
    assert_eq!(db.stats().keys, 14, "r0..r12 and large, nothing else");
    db.close().await.unwrap();
}

/// A run of GETs that meets a damaged record answers each GET as it
/// would have been answered alone: only the damaged one gets an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_fails_only_its_get_in_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    db.put("a", "value-a").await.unwrap();
    db.put("b", "value-b-to-be-damaged").await.unwrap();
    db.put("c", "value-c").await.unwrap();
    db.flush().await.unwrap();
    db.close().await.unwrap();
    let segment = common::data_files(dir.path(), "silt").remove(0);
    let bytes = std::fs::read(&segment).unwrap();
    let at = bytes
        .windows(20)
        .position(|w| w == b"value-b-to-be-damage")
        .unwrap();
    let mut damaged = bytes;
    damaged[at + 3] ^= 0x40;
    std::fs::write(&segment, damaged).unwrap();

    let server = start(dir.path(), Limits::default()).await;
    let mut con = server.connect().await;
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for key in ["a", "b", "c", "missing"] {
        pipe.cmd("GET").arg(key);
    }
    let replies: Vec<Value> = pipe
        .query_async(&mut con)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(replies.len(), 4);
    assert_eq!(replies[0], Value::BulkString(b"value-a".to_vec()));
    assert!(
        matches!(&replies[1], Value::ServerError(e) if format!("{e:?}").contains("CRC")),
        "{:?}",
        replies[1]
    );
    assert_eq!(replies[2], Value::BulkString(b"value-c".to_vec()));
    assert_eq!(replies[3], Value::Nil);
    server.stop().await.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Limits::default()).await;
    let mut tasks = Vec::new();
    for c in 0..64 {
        let mut con = server.connect().await;
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let key = format!("c{c}-{i}");
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(i)
                    .query_async(&mut con)
                    .await
                    .unwrap();
                let v: i64 = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut con)
                    .await
                    .unwrap();
                assert_eq!(v, i);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut con = server.connect().await;
    assert_eq!(cmd::<i64>(&mut con, &[b"DBSIZE"]).await.unwrap(), 64 * 50);
    server.stop().await.close().await.unwrap();
}

/// Sends `bytes` on a fresh connection and reads until `want` bytes of
/// replies came (or the server closed).
async fn raw(server: &Server, bytes: &[u8], want: usize) -> String {
    let mut c = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // All of it before reading any reply, as a client sending a pipeline
    // may: the server must go on reading while its replies wait.
    tokio::time::timeout(std::time::Duration::from_secs(30), c.write_all(bytes))
        .await
        .expect("the server stopped reading the requests")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want {
        let n = tokio::time::timeout(std::time::Duration::from_secs(20), c.read(&mut buf))
            .await
            .expect("no reply in 20 s")
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

/// A RESP2 request.
fn req(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// Issue 26, defect 7: every command of a pipeline sees the effects of
/// those before it. A DEL used to run beside the SET after it, so the SET
/// could be undone after its +OK (always, when the key's record was not in
/// memory), and a SET before a DEL could survive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_runs_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Limits::default()).await;
    server.db.put("k", "old").await.unwrap();
    server.db.flush().await.unwrap();
    server.db.drop_page_cache();
    let mut p = req(&["DEL", "k"]);
    p.extend(req(&["SET", "k", "new"]));
    p.extend(req(&["GET", "k"]));
    assert_eq!(raw(&server, &p, 17).await, ":1\r\n+OK\r\n$3\r\nnew\r\n");
    assert_eq!(server.db.get("k").await.unwrap().unwrap(), "new");
    let mut p = req(&["SET", "a", "1"]);
    p.extend(req(&["DEL", "a"]));
    p.extend(req(&["GET", "a"]));
    assert_eq!(raw(&server, &p, 14).await, "+OK\r\n:1\r\n$-1\r\n");
    assert_eq!(server.db.get("a").await.unwrap(), None);
    assert_eq!(
        raw(&server, &req(&["DEL", "k", "k", "k"]), 4).await,
        ":1\r\n"
    );
    let mut p = req(&["MSET", "x", "1", "y", "2"]);
    p.extend(req(&["DEL", "x", "y", "z"]));
    p.extend(req(&["EXISTS", "x", "y"]));
    assert_eq!(raw(&server, &p, 13).await, "+OK\r\n:2\r\n:0\r\n");
    server.stop().await.close().await.unwrap();
}

/// What Redis answers to SET, DEL, GET, EXISTS, MSET and MGET, as a map.
#[derive(Default)]
struct RedisModel(std::collections::HashMap<String, String>);

impl RedisModel {
    fn reply(&mut self, args: &[String]) -> String {
        let bulk = |v: Option<&String>| match v {
            Some(v) => format!("${}\r\n{v}\r\n", v.len()),
            None => "$-1\r\n".to_string(),
        };
        match args[0].as_str() {
            "SET" => {
                self.0.insert(args[1].clone(), args[2].clone());
                "+OK\r\n".into()
            }
            "MSET" => {
                for kv in args[1..].chunks(2) {
                    self.0.insert(kv[0].clone(), kv[1].clone());
                }
                "+OK\r\n".into()
            }
            "DEL" => {
                let n = args[1..]
                    .iter()
                    .filter(|k| self.0.remove(*k).is_some())
                    .count();
                format!(":{n}\r\n")
            }
            "EXISTS" => {
                let n = args[1..].iter().filter(|k| self.0.contains_key(*k)).count();
                format!(":{n}\r\n")
            }
            "GET" => bulk(self.0.get(&args[1])),
            "MGET" => {
                let mut out = format!("*{}\r\n", args.len() - 1);
                for k in &args[1..] {
                    out.push_str(&bulk(self.0.get(k)));
                }
                out
            }
            other => panic!("{other}"),
        }
    }
}

/// Issue 26, defect 7: a random pipeline of 10,000 commands over 40 keys
/// (the reviewer saw 120 replies differ from redis-server's) answers
/// exactly what Redis would, reply by reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_pipeline_answers_as_redis_does() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Limits::default()).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(26);
    let mut model = RedisModel::default();
    let (mut sent, mut want) = (Vec::new(), String::new());
    for step in 0..10_000 {
        let key = |rng: &mut rand::rngs::StdRng| format!("key{}", rng.gen_range(0..40));
        let args: Vec<String> = match rng.gen_range(0..10) {
            0..=2 => vec!["SET".into(), key(&mut rng), format!("v{step}")],
            3..=4 => (0..rng.gen_range(1..4)).map(|_| key(&mut rng)).fold(
                vec!["DEL".into()],
                |mut a, k| {
                    a.push(k);
                    a
                },
            ),
            5..=6 => vec!["GET".into(), key(&mut rng)],
            7 => vec!["EXISTS".into(), key(&mut rng), key(&mut rng)],
            8 => vec![
                "MSET".into(),
                key(&mut rng),
                format!("m{step}"),
                key(&mut rng),
                format!("n{step}"),
            ],
            _ => vec!["MGET".into(), key(&mut rng), key(&mut rng)],
        };
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        sent.extend(req(&refs));
        want.push_str(&model.reply(&args));
    }
    let got = raw(&server, &sent, want.len()).await;
    let (got_lines, want_lines): (Vec<&str>, Vec<&str>) =
        (got.split("\r\n").collect(), want.split("\r\n").collect());
    let differ = got_lines.iter().zip(&want_lines).position(|(a, b)| a != b);
    assert_eq!(differ, None, "first differing reply line");
    assert_eq!(got.len(), want.len());
    server.stop().await.close().await.unwrap();
}

/// Issue 26, defect 7, the protocol details: an inline command ended by
/// LF alone is answered; an empty line and `*0` are answered with nothing
/// (as Redis does, so `redis-cli --pipe` counts no error); a length line
/// with no CRLF is refused once it passes 64 KiB instead of being buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_lines_empty_requests_and_long_length_lines_as_redis() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Limits::default()).await;
    assert_eq!(raw(&server, b"PING\n", 7).await, "+PONG\r\n");
    assert_eq!(raw(&server, b"\r\n*0\r\n\nPING\r\n", 7).await, "+PONG\r\n");
    let mut long = b"*1\r\n$".to_vec();
    long.extend(std::iter::repeat_n(b'1', 100 << 10));
    let reply = raw(&server, &long, 1).await;
    assert!(reply.starts_with("-ERR Protocol error"), "{reply}");
    let reply = raw(&server, &vec![b'x'; 100 << 10], 1).await;
    assert!(reply.starts_with("-ERR Protocol error"), "{reply}");
    server.stop().await.close().await.unwrap();
}

/// Issue 26, defect 7: a client that sends a whole pipeline before it
/// reads a reply (redis-py's pipelines do) is not deadlocked once the
/// replies fill the socket buffers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_only_after_sending_everything_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Limits::default()).await;
    // Requests and replies both far larger than the sockets' buffers.
    let key = "k".repeat(200);
    server.db.put(&key, vec![b'v'; 200]).await.unwrap();
    let n = 300_000;
    let mut p = Vec::new();
    for _ in 0..n {
        p.extend(req(&["GET", &key]));
    }
    let want = n * "$200\r\n\r\n".len() + n * 200;
    let got = raw(&server, &p, want).await;
    assert_eq!(got.len(), want);
    server.stop().await.close().await.unwrap();
}

/// `--help` prints the usage and succeeds; a wrong option is an error.
#[test]
fn help_and_bad_options() {
    assert!(resp_server::run(["--help".to_string()]).is_ok());
    let err = resp_server::run(["--bogus".to_string(), "1".to_string()]).unwrap_err();
    assert!(err.to_string().contains("--bogus"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caps_answer_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        Limits {
            max_connections: 2,
            max_request: 1024,
        },
    )
    .await;
    let mut a = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut c = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "-ERR max number of clients reached\r\n");

    a.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5000\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    a.read_to_string(&mut reply).await.unwrap();
    assert!(
        reply.starts_with("-ERR Protocol error") && reply.contains("limit"),
        "{reply}"
    );
    server.stop().await.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_what_was_read_and_the_store_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Limits::default()).await;
    let mut con = server.connect().await;
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    let addr = server.addr;
    server.stop().await.close().await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
    let db = Db::open(dir.path()).await.unwrap();
    for i in 0..100 {
        assert_eq!(
            db.get(format!("k{i}")).await.unwrap().as_deref(),
            Some(i.to_string().as_bytes())
        );
    }
    db.close().await.unwrap();
}

const CHILD_DIR: &str = "SILT_RESP_CHILD_DIR";

/// Child mode (under `sigkill_loses_no_set_that_got_ok`): serves a `Sync`
/// store on a free port, prints `PORT <n>`, and runs until killed.
#[test]
fn resp_child_server() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = Db::builder(&dir)
            .durability(silt::Durability::Sync)
            .open()
            .await
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("PORT {}", listener.local_addr().unwrap().port());
        resp_server::serve_until(listener, db, Limits::default(), std::future::pending())
            .await
            .unwrap();
    });
}

#[test]
fn sigkill_loses_no_set_that_got_ok() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut total = 0;
    for round in 0..3 {
        let (child, stdout) = common::ChildTest::spawn(
            "resp_child_server",
            false,
            &[(CHILD_DIR, dir.path().display().to_string())],
        );
        let mut lines = BufReader::new(stdout).lines();
        let port: u16 = loop {
            let line = lines.next().expect("the child printed its port").unwrap();
            if let Some(p) = line.split("PORT ").nth(1) {
                break p.trim().parse().unwrap();
            }
        };
        // Four connections stream SETs; each records the SETs that got +OK.
        let acked = rt.block_on(async {
            let mut tasks = Vec::new();
            for c in 0..4 {
                tasks.push(tokio::spawn(async move {
                    let mut acked = Vec::new();
                    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    else {
                        return acked;
                    };
                    let mut reply = [0u8; 5];
                    for i in 0.. {
                        let (k, v) = (format!("r{round}-c{c}-{i}"), format!("v{i}"));
                        let req = format!(
                            "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                            k.len(),
                            v.len()
                        );
                        if s.write_all(req.as_bytes()).await.is_err()
                            || s.read_exact(&mut reply).await.is_err()
                        {
                            return acked;
                        }
                        assert_eq!(&reply, b"+OK\r\n");
                        acked.push((k, v));
                    }
                    acked
                }));
            }
            tokio::time::sleep(std::time::Duration::from_millis(300 + 100 * round)).await;
            child.kill();
            let mut acked = Vec::new();
            for t in tasks {
                acked.extend(t.await.unwrap());
            }
            acked
        });
        assert!(
            !acked.is_empty(),
            "round {round}: no SET was acknowledged before the kill"
        );
        rt.block_on(async {
            let db = common::open_after_crash(Db::builder(dir.path())).await;
            for (k, v) in &acked {
                assert_eq!(
                    db.get(k).await.unwrap().as_deref(),
                    Some(v.as_bytes()),
                    "round {round}: {k} got +OK"
                );
            }
            db.close().await.unwrap();
        });
        total += acked.len();
    }
    eprintln!("{total} acknowledged SETs checked after 3 SIGKILLs");
}

/// redis-cli, end to end. `.ci/run` installs it; on a machine without it
/// the test says so and passes, unless SILT_REQUIRE_REDIS_CLI is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_end_to_end() {
    if std::process::Command::new("redis-cli")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("SILT_REQUIRE_REDIS_CLI").is_none(),
            "redis-cli is required but not installed"
        );
        eprintln!("skipped: redis-cli is not installed (apt-get install redis-tools)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Limits::default()).await;
    let port = server.addr.port().to_string();
    let cli = |args: &[&str]| {
        let port = port.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &port])
                .args(&args)
                .output()
                .unwrap();
            assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        })
    };
    assert_eq!(cli(&["PING"]).await.unwrap(), "PONG");
    assert_eq!(
        cli(&["SET", "greeting", "hello world"]).await.unwrap(),
        "OK"
    );
    assert_eq!(cli(&["GET", "greeting"]).await.unwrap(), "hello world");
    assert_eq!(cli(&["MSET", "a", "1", "b", "2"]).await.unwrap(), "OK");
    assert_eq!(
        cli(&["MGET", "a", "b", "c"]).await.unwrap(),
        "1\n2",
        "c is nil: an empty last line"
    );
    assert_eq!(cli(&["DEL", "a", "c"]).await.unwrap(), "1");
    assert_eq!(cli(&["DBSIZE"]).await.unwrap(), "2");
    assert!(cli(&["FLY"]).await.unwrap().contains("unknown command"));
    server.stop().await.close().await.unwrap();
}
