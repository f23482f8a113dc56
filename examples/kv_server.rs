//! A small Tokio TCP key-value service: many connections, one cloneable
//! `silt::Db`, a line protocol.
//!
//! ```text
//! GET key          -> VALUE value | NOT_FOUND
//! PUT key value    -> OK            (value: the rest of the line)
//! DEL key          -> OK
//! anything else    -> ERR message
//! ```
//!
//! `cargo run --release --example kv_server -- [DIR] [ADDR] [METRICS_ADDR]`
//! (default a temp dir, 127.0.0.1:7878 and 127.0.0.1:9187), then e.g.
//! `printf 'PUT a 1\nGET a\n' | nc 127.0.0.1 7878`, and
//! `curl 127.0.0.1:9187/metrics` for silt's metrics in Prometheus' text
//! format (silt's `metrics` feature, through `metrics-exporter-prometheus`).
//! Ctrl-C shuts it down gracefully: no new connections, every request in
//! flight answered, then the store closed.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use silt::Db;
use std::future::Future;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The process's Prometheus recorder, installed on first use: every
/// metric silt records from then on is in its text.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// Answers every HTTP request on `listener` with the current metrics (a
/// Prometheus scrape endpoint; the path is not looked at).
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: PrometheusHandle,
) -> std::io::Result<()> {
    loop {
        let (mut socket, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            // The request head: read, not parsed.
            let mut head = [0u8; 4096];
            let _ = socket.read(&mut head).await;
            let body = metrics.render();
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
        });
    }
}

/// Accepts connections forever, each served by its own task.
pub async fn serve(listener: TcpListener, db: Db) -> std::io::Result<()> {
    serve_until(listener, db, std::future::pending()).await
}

/// Serves until `shutdown` resolves; then stops accepting, lets each
/// connection finish the request it is working on (one waiting for its
/// next request is closed), and returns once every connection is done.
/// The caller then closes the store: every `OK` sent is in it.
pub async fn serve_until(
    listener: TcpListener,
    db: Db,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (socket, _) = accepted?;
                connections.spawn(connection(socket, db.clone(), stop_rx.clone()));
            }
            Some(done) = connections.join_next(), if !connections.is_empty() => report(done),
        }
    }
    drop(listener);
    stop_tx.send_replace(true);
    while let Some(done) = connections.join_next().await {
        report(done);
    }
    Ok(())
}

fn report(done: Result<std::io::Result<()>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("connection error: {e}"),
        Err(e) => eprintln!("connection task failed: {e}"),
    }
}

async fn connection(
    socket: TcpStream,
    db: Db,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    loop {
        // `next_line` is cancel safe: a shutdown between requests loses no
        // part of a line. A request already read is answered in full.
        let line = tokio::select! {
            line = lines.next_line() => line?,
            _ = stop.wait_for(|stop| *stop) => None,
        };
        let Some(line) = line else { return Ok(()) };
        let mut reply = respond(&db, &line).await;
        reply.push('\n');
        write.write_all(reply.as_bytes()).await?;
    }
}

/// The reply to one request line.
pub async fn respond(db: &Db, line: &str) -> String {
    let mut parts = line.splitn(3, ' ');
    let result = match (parts.next(), parts.next(), parts.next()) {
        (Some("GET"), Some(k), None) => db.get(k).await.map(|v| match v {
            Some(v) => format!("VALUE {}", String::from_utf8_lossy(&v)),
            None => "NOT_FOUND".to_string(),
        }),
        (Some("PUT"), Some(k), Some(v)) => db.put(k, v.to_owned()).await.map(|()| "OK".into()),
        (Some("DEL"), Some(k), None) => db.delete(k).await.map(|()| "OK".into()),
        _ => Ok("ERR usage: GET key | PUT key value | DEL key".into()),
    };
    result.unwrap_or_else(|e| format!("ERR {e}"))
}

#[allow(dead_code)] // unused when the tests include this file
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(Into::into)
        .unwrap_or_else(|| tmp.path().join("kv"));
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7878".into());
    let metrics_addr = args.next().unwrap_or_else(|| "127.0.0.1:9187".into());
    let metrics = prometheus();
    let db = Db::open(&dir).await?;
    let listener = TcpListener::bind(&addr).await?;
    let metrics_listener = TcpListener::bind(&metrics_addr).await?;
    println!(
        "serving {} on {}, metrics on http://{}/metrics",
        dir.display(),
        listener.local_addr()?,
        metrics_listener.local_addr()?
    );
    tokio::spawn(serve_metrics(metrics_listener, metrics));
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
        println!("shutting down: finishing requests in flight");
    };
    serve_until(listener, db.clone(), ctrl_c).await?;
    db.close().await?;
    println!("closed");
    Ok(())
}
