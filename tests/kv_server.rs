//! Drives examples/kv_server.rs over loopback: many clients at once, one Db.

#[path = "../examples/kv_server.rs"]
#[allow(dead_code)]
mod kv_server;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

async fn request(conn: &mut BufReader<TcpStream>, line: &str) -> String {
    conn.get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    conn.read_line(&mut reply).await.unwrap();
    reply.trim_end().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_share_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = silt::Db::open(dir.path()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(kv_server::serve(listener, db.clone()));
    let mut clients = Vec::new();
    for c in 0..16 {
        clients.push(tokio::spawn(async move {
            let mut conn = BufReader::new(TcpStream::connect(addr).await.unwrap());
            for i in 0..50 {
                let k = format!("c{c}-k{i}");
                assert_eq!(
                    request(&mut conn, &format!("PUT {k} value {c} {i}")).await,
                    "OK"
                );
                assert_eq!(
                    request(&mut conn, &format!("GET {k}")).await,
                    format!("VALUE value {c} {i}")
                );
            }
            for i in (0..50).step_by(2) {
                assert_eq!(request(&mut conn, &format!("DEL c{c}-k{i}")).await, "OK");
                assert_eq!(
                    request(&mut conn, &format!("GET c{c}-k{i}")).await,
                    "NOT_FOUND"
                );
            }
            assert!(request(&mut conn, "FROB x").await.starts_with("ERR usage"));
            assert!(request(&mut conn, "GET ")
                .await
                .starts_with("ERR invalid argument"));
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    server.abort();
    // Every client's surviving keys are in the store the server used.
    assert_eq!(db.stats().keys, 16 * 25);
    assert_eq!(db.get(b"c3-k7").await.unwrap().unwrap(), "value 3 7");
    db.close().await.unwrap();
}
