//! Replicated writes through openraft: three nodes in one process (the
//! in-process router), each on silt-raft, on openraft's in-memory store
//! layout, and (feature `rocksdb`) on a RocksDB log, in one run.
//!
//! `cargo bench -p silt-raft --bench raft` (add `--features rocksdb` for
//! RocksDB). SILT_RAFT_BENCH_N = writes per workload (default 20,000);
//! SILT_BENCH_DIR = a directory on the disk to measure (default: temp).
//!
//! Each write is a `Set` of a 16-byte key and a 100-byte value through
//! `Raft::client_write` on the leader: acknowledged once a majority has
//! the entry durably in its log and the leader has applied it.

mod peers {
    pub mod mem;
    #[cfg(feature = "rocksdb")]
    pub mod rocks;
}

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{BasicNode, Config, Raft, ServerState};
use silt_raft::router::Router;
use silt_raft::{Request, TypeConfig};

struct Row {
    store: &'static str,
    clients: usize,
    writes_per_s: f64,
    p50: Duration,
    p99: Duration,
}

fn config() -> Arc<Config> {
    let config = Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        ..Config::default()
    };
    Arc::new(config.validate().expect("a valid config"))
}

/// Starts three nodes on `stores` and waits for node 1 to lead.
async fn start<LS, SM>(stores: Vec<(LS, SM)>) -> (Router, Vec<Raft<TypeConfig>>)
where
    LS: RaftLogStorage<TypeConfig>,
    SM: RaftStateMachine<TypeConfig>,
{
    let router = Router::default();
    let mut nodes = Vec::new();
    for (i, (log, sm)) in stores.into_iter().enumerate() {
        let id = i as u64 + 1;
        let raft = Raft::new(id, config(), router.clone(), log, sm)
            .await
            .expect("start a node");
        router.add(id, raft.clone());
        nodes.push(raft);
    }
    let members = (1..=nodes.len() as u64).map(|id| (id, BasicNode::default()));
    nodes[0]
        .initialize(members.collect::<std::collections::BTreeMap<_, _>>())
        .await
        .expect("initialize");
    nodes[0]
        .wait(Some(Duration::from_secs(10)))
        .state(ServerState::Leader, "node 1 leads")
        .await
        .expect("a leader");
    (router, nodes)
}

/// `n` writes from `clients` tasks; rate over the whole run, and each
/// write's latency.
async fn workload(
    leader: &Raft<TypeConfig>,
    n: usize,
    clients: usize,
    round: usize,
) -> (f64, Duration, Duration) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let leader = leader.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(n / clients);
            for i in 0..n / clients {
                let key = format!("{round:02}-{c:03}-{i:09}").into_bytes();
                let request = Request::Set {
                    key,
                    value: vec![b'v'; 100],
                };
                let t = Instant::now();
                leader
                    .client_write(request)
                    .await
                    .expect("a replicated write");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    for t in tasks {
        latencies.extend(t.await.expect("a client task"));
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    (latencies.len() as f64 / secs, pct(0.50), pct(0.99))
}

async fn measure<LS, SM>(store: &'static str, stores: Vec<(LS, SM)>, n: usize, rows: &mut Vec<Row>)
where
    LS: RaftLogStorage<TypeConfig>,
    SM: RaftStateMachine<TypeConfig>,
{
    let (_router, nodes) = start(stores).await;
    for (round, clients) in [1, 16, 64].into_iter().enumerate() {
        let n = if clients == 1 { n / 4 } else { n };
        let (writes_per_s, p50, p99) = workload(&nodes[0], n, clients, round).await;
        eprintln!("{store}: {clients} clients, {writes_per_s:.0} writes/s");
        rows.push(Row {
            store,
            clients,
            writes_per_s,
            p50,
            p99,
        });
    }
    for node in nodes {
        node.shutdown().await.expect("shutdown");
    }
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var("SILT_BENCH_DIR") {
        Ok(dir) => tempfile::tempdir_in(dir).expect("a temp dir under SILT_BENCH_DIR"),
        Err(_) => tempfile::tempdir().expect("a temp dir"),
    }
}

async fn run(n: usize, dir: &Path) -> Vec<Row> {
    let mut rows = Vec::new();

    let mut stores = Vec::new();
    for id in 1..=3 {
        stores.push(
            silt_raft::open(dir.join(format!("silt{id}")))
                .await
                .expect("silt-raft stores"),
        );
    }
    measure("silt-raft", stores, n, &mut rows).await;

    let stores = (0..3)
        .map(|_| (peers::mem::MemLog::default(), peers::mem::MemSm::default()))
        .collect();
    measure("in-memory (no disk)", stores, n, &mut rows).await;

    #[cfg(feature = "rocksdb")]
    for (name, off_runtime) in [
        ("RocksDB log", false),
        ("RocksDB log, writes on a blocking thread", true),
    ] {
        let stores = (1..=3)
            .map(|id| {
                let path = dir.join(format!("rocks{id}-{off_runtime}"));
                (
                    peers::rocks::RocksLog::open(&path, off_runtime),
                    peers::mem::MemSm::default(),
                )
            })
            .collect();
        measure(name, stores, n, &mut rows).await;
    }
    rows
}

fn main() {
    let n: usize = std::env::var("SILT_RAFT_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let dir = bench_dir();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let rows = rt.block_on(run(n, dir.path()));
    println!("\nreplicated writes, 3 nodes in one process, 16 B keys, 100 B values ({n} writes; 1 client: {})\n", n / 4);
    println!("| store | clients | writes/s | p50 | p99 |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.2} ms | {:.2} ms |",
            r.store,
            r.clients,
            r.writes_per_s,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3
        );
    }
}
