//! Drives examples/raft_kv.rs end to end: its tour, and a cluster under a
//! stream of concurrent writes while a follower and then the leader are
//! killed and restarted. Every write a client saw acknowledged must be on
//! every node afterwards.

#[path = "../examples/raft_kv.rs"]
mod raft_kv;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_kv::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_tour_runs() {
    let dir = tempfile::tempdir().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    raft_kv::tour(dir.path(), move |line| sink.lock().unwrap().push(line))
        .await
        .expect("the tour");
    let text = lines.lock().unwrap().join("\n");
    assert!(text.contains(r#"key7 reads Some("value7")"#), "{text}");
    assert!(text.contains(r#"key1400 = Some("value1400")"#), "{text}");
    assert!(
        text.contains(r#"after = Some("the leader change")"#),
        "{text}"
    );
    assert!(
        text.contains(r#"node 4 joined as a learner from the leader's snapshot Some("#)
            && text.contains(r#"key7 = Some("value7")"#),
        "{text}"
    );
}

const WRITERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_is_lost_across_kills_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), &[1, 2, 3]).await.unwrap();
    let leader = cluster.leader(Duration::from_secs(10)).await.unwrap();
    let follower = if leader == 1 { 2 } else { 1 };

    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, acked, stop) = (cluster.client(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (key, value) = (format!("w{w}-{i}"), format!("v{w}-{i}"));
                // A write that fails (no leader within 20 s) is not
                // acknowledged, so it is not checked.
                if client.set(&key, &value).await.is_ok() {
                    acked.lock().unwrap().push((key, value));
                }
                i += 1;
            }
        }));
    }
    let count = || acked.lock().unwrap().len();
    let progress = |what: &str, before: usize| {
        let now = count();
        assert!(now > before, "no write was acknowledged {what}");
        now
    };

    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = progress("at the start", 0);
    cluster.kill(follower).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = progress("with a follower down", n);
    let recovered = cluster.start_node(follower).await.unwrap();
    assert!(
        recovered.last_log.is_some(),
        "the follower reopened its log: {recovered:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = progress("after the follower restarted", n);
    cluster.kill(leader).await.unwrap();
    let new_leader = cluster.leader(Duration::from_secs(10)).await.unwrap();
    assert_ne!(new_leader, leader);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = progress("after the leader change", n);
    cluster.start_node(leader).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    progress("after the old leader restarted", n);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        if tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .is_err()
        {
            for (id, n) in &cluster.nodes {
                eprintln!("STUCK node {id}: {:?}", n.raft.metrics().borrow().clone());
            }
            panic!("a writer is stuck");
        }
    }
    let acked = acked.lock().unwrap().clone();
    for id in [1, 2, 3] {
        cluster.catch_up(id).await.unwrap();
        let reader = &cluster.nodes[&id].reader;
        for (key, value) in &acked {
            let got = reader.get(key).await.unwrap();
            assert!(
                got.as_deref() == Some(value.as_bytes()),
                "node {id}: acknowledged {key} = {value}, reads {got:?}"
            );
        }
    }
    cluster.shutdown().await.unwrap();

    // And once more from the files alone, after a clean close.
    let cluster = Cluster::start(dir.path(), &[1, 2, 3]).await.unwrap();
    assert_eq!(cluster.get("w0-0").await.unwrap().as_deref(), Some("v0-0"));
    for id in [1, 2, 3] {
        cluster.catch_up(id).await.unwrap();
        for (key, value) in &acked {
            let got = cluster.nodes[&id].reader.get(key).await.unwrap();
            assert!(
                got.as_deref() == Some(value.as_bytes()),
                "node {id} after a clean restart: {key}"
            );
        }
    }
    eprintln!("{} acknowledged writes checked on three nodes", acked.len());
    cluster.shutdown().await.unwrap();
}
