//! Drives examples/resp_server.rs with redis-rs, a Redis client no one
//! here wrote: every command, pipelines, errors, many connections, the
//! connection cap and a graceful shutdown.

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
