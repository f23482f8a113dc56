//! Criterion micro benchmarks of the hot paths: record encode/decode, index
//! lookup, slab append, get from a slab, get from a segment.
//!
//! `cargo bench --features bench-internals --bench micro`

// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use silt::internals;

fn record(c: &mut Criterion) {
    let (k, v) = (b"0000000000001234".as_slice(), vec![7u8; 100]);
    let mut buf = vec![0u8; internals::record_len(k.len(), v.len())];
    c.bench_function("record encode 16 B / 100 B", |b| {
        b.iter(|| internals::encode_record(black_box(&mut buf), k, &v))
    });
    internals::encode_record(&mut buf, k, &v);
    c.bench_function("record decode + CRC 16 B / 100 B", |b| {
        b.iter(|| internals::decode_record(black_box(&buf)))
    });
}

fn index(c: &mut Criterion) {
    let idx = internals::Index::default();
    let hashes: Vec<u64> = (0..1_000_000u64)
        .map(|i| internals::key_hash(&i.to_le_bytes()))
        .collect();
    for (i, h) in hashes.iter().enumerate() {
        idx.insert(*h, 1, i as u32);
    }
    let mut i = 0usize;
    c.bench_function("index lookup, 1M keys", |b| {
        b.iter(|| {
            i = (i + 7919) % hashes.len();
            idx.get(black_box(hashes[i]))
        })
    });
}

fn slab(c: &mut Criterion) {
    let v = vec![1u8; 100];
    c.bench_function("slab append + publish 16 B / 100 B", |b| {
        b.iter_batched_ref(
            || internals::Slab::new(64 << 20),
            |s| {
                for _ in 0..1000 {
                    s.append(b"0000000000001234", &v);
                }
            },
            BatchSize::LargeInput,
        )
    });
}

fn gets(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = rt
        .block_on(
            silt::Db::builder(dir.path())
                .durability(silt::Durability::None)
                .open(),
        )
        .unwrap();
    rt.block_on(async {
        for i in 0..100_000u64 {
            db.put(format!("{i:016}"), vec![3u8; 100]).await.unwrap();
        }
    });
    let mut i = 0u64;
    let mut bench = |name: &str, c: &mut Criterion| {
        c.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 7919) % 100_000;
                rt.block_on(db.get(format!("{i:016}").as_bytes())).unwrap()
            })
        });
    };
    bench("get from slab (100k keys)", c);
    rt.block_on(db.flush()).unwrap();
    bench("get from segment mmap (100k keys)", c);
    rt.block_on(db.clone().close()).unwrap();
}

criterion_group!(benches, record, index, slab, gets);
criterion_main!(benches);
