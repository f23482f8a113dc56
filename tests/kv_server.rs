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

/// Graceful shutdown (issue 17): clients keep writing while the server is
/// told to stop; it stops accepting, answers what it already read, returns
/// once every connection is done, and after `close` and a reopen every
/// `PUT` that got `OK` is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_in_flight_and_loses_no_acknowledged_put() {
    let dir = tempfile::tempdir().unwrap();
    let db = silt::Db::open(dir.path()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kv_server::serve_until(listener, db.clone(), async {
        let _ = stop_rx.await;
    }));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for c in 0..8 {
        let acked = acked.clone();
        clients.push(tokio::spawn(async move {
            let mut conn = BufReader::new(TcpStream::connect(addr).await.unwrap());
            for i in 0.. {
                let k = format!("c{c}-k{i}");
                let line = format!("PUT {k} v{i}\n");
                if conn.get_mut().write_all(line.as_bytes()).await.is_err() {
                    return;
                }
                let mut reply = String::new();
                match conn.read_line(&mut reply).await {
                    Ok(n) if n > 0 => {
                        assert_eq!(reply.trim_end(), "OK");
                        acked.lock().unwrap().push(k);
                    }
                    // Closed by the shutdown: this request was not answered.
                    _ => return,
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < 500 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    stop_tx.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), server)
        .await
        .expect("the server drained its connections")
        .unwrap()
        .unwrap();
    for c in clients {
        c.await.unwrap();
    }
    // New connections are refused once it stopped.
    assert!(TcpStream::connect(addr).await.is_err());
    db.close().await.unwrap();
    let db = silt::Db::open(dir.path()).await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 500);
    for k in &acked {
        assert!(
            db.contains_key(k).await.unwrap(),
            "acknowledged {k} is missing"
        );
    }
    db.close().await.unwrap();
}

/// The metrics endpoint (issue 17): after some traffic, a scrape over HTTP
/// returns silt's metrics in Prometheus' text format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_serves_silts_metrics() {
    let metrics = kv_server::prometheus();
    let dir = tempfile::tempdir().unwrap();
    let db = silt::Db::builder(dir.path())
        .slab_size(64 * 1024)
        .open()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics_listener.local_addr().unwrap();
    let server = tokio::spawn(kv_server::serve(listener, db.clone()));
    let scraper = tokio::spawn(kv_server::serve_metrics(metrics_listener, metrics));
    let mut conn = BufReader::new(TcpStream::connect(addr).await.unwrap());
    for i in 0..300 {
        assert_eq!(
            request(&mut conn, &format!("PUT k{i} {}", "v".repeat(500))).await,
            "OK"
        );
    }
    assert!(request(&mut conn, "GET k7").await.starts_with("VALUE"));
    db.flush().await.unwrap();
    let mut http = TcpStream::connect(metrics_addr).await.unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut page = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut http, &mut page)
        .await
        .unwrap();
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    for name in [
        "silt_write_seconds",
        "silt_get_seconds",
        "silt_written_bytes_total",
        "silt_read_bytes_total",
        "silt_group_size",
        "silt_wal_write_seconds",
        "silt_queue_depth",
        "silt_flush_seconds",
        "silt_backpressure_wait_seconds",
    ] {
        assert!(page.contains(name), "{name} missing from:\n{page}");
    }
    server.abort();
    scraper.abort();
    db.close().await.unwrap();
}
