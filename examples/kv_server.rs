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
//! `cargo run --release --example kv_server -- [DIR] [ADDR]` (default a
//! temp dir and 127.0.0.1:7878), then e.g. `printf 'PUT a 1\nGET a\n' | nc 127.0.0.1 7878`.
//! Ctrl-C closes the store cleanly.

use silt::Db;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Accepts connections forever, each served by its own task.
pub async fn serve(listener: TcpListener, db: Db) -> std::io::Result<()> {
    loop {
        let (socket, _) = listener.accept().await?;
        let db = db.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(socket, db).await {
                eprintln!("connection error: {e}");
            }
        });
    }
}

async fn connection(socket: TcpStream, db: Db) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let mut reply = respond(&db, &line).await;
        reply.push('\n');
        write.write_all(reply.as_bytes()).await?;
    }
    Ok(())
}

/// The reply to one request line.
pub async fn respond(db: &Db, line: &str) -> String {
    let mut parts = line.splitn(3, ' ');
    let result = match (parts.next(), parts.next(), parts.next()) {
        (Some("GET"), Some(k), None) => db.get(k.as_bytes()).await.map(|v| match v {
            Some(v) => format!("VALUE {}", String::from_utf8_lossy(&v)),
            None => "NOT_FOUND".to_string(),
        }),
        (Some("PUT"), Some(k), Some(v)) => db
            .put(k.to_owned(), v.to_owned())
            .await
            .map(|()| "OK".into()),
        (Some("DEL"), Some(k), None) => db.delete(k.to_owned()).await.map(|()| "OK".into()),
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
    let db = Db::open(&dir).await?;
    let listener = TcpListener::bind(&addr).await?;
    println!("serving {} on {}", dir.display(), listener.local_addr()?);
    tokio::select! {
        res = serve(listener, db.clone()) => res?,
        _ = tokio::signal::ctrl_c() => println!("closing"),
    }
    db.close().await?;
    Ok(())
}
