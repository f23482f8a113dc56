//! The durable core's standard workloads, one results table.
//!
//! `cargo bench --bench core` (SILT_BENCH_N=keys, default 1,000,000;
//! SILT_BENCH_DIR=a directory on the disk to measure, default a temp dir).
//! The same suite runs as `silt bench` (feature `cli`).

mod bench_env;
mod workloads;

fn main() {
    let n: u64 = std::env::var("SILT_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let (tmp, rt) = bench_env::bench_env();
    let rows = rt.block_on(workloads::standard_suite(tmp.path(), n, &workloads::Quiet));
    println!("\nsilt core bench: {n} keys of 16 B with 100 B values, 2 worker threads\n");
    workloads::print_table(&rows);
}
