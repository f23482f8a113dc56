//! A simulation case: the store's configuration and the operations to run,
//! made from a seed, and written as text so a shrunk case replays with one
//! command (`SILT_SIM_CASE='...'`).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use silt::{Durability, PowerCut};
use std::fmt;

/// Keys `0..PLAIN_KEYS` are plain; the ones above are pairs whose index
/// slots collide (see `keys::KeySpace`).
pub const PLAIN_KEYS: u8 = 24;
/// Keys in all: the plain ones and two colliding pairs.
pub const KEYS: u8 = PLAIN_KEYS + 4;

/// How the store is opened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub durability: Durability,
    /// Cache mode: a capacity of a few slabs, so eviction runs.
    pub cache: bool,
    /// Background GC's threshold (0: off).
    pub gc: f64,
}

/// One step of a case.
#[derive(Debug, Clone, PartialEq)]
pub enum SimOp {
    /// A put of `len` bytes (over the 64 KiB slab: a file of its own).
    Put(u8, u32),
    Delete(u8),
    /// An atomic batch: a put of `Some(len)` bytes or a delete.
    Batch(Vec<(u8, Option<u32>)>),
    /// One batch deleting every key (then GC can empty whole files).
    Clear,
    /// Segment pages out of the page cache: later overwrites, deletes,
    /// reads and GC meet records that are on disk only.
    DropCache,
    Flush,
    Sync,
    Compact,
    /// `close`, then open again.
    Reopen,
    /// The process dies where it is (its page cache survives).
    Crash,
    /// The machine loses power: unsynced bytes are lost as the cut says.
    PowerCut(PowerCut),
    /// The follower (opened first if there is none) refreshes.
    Refresh,
    /// The `n`th cold read of the next step (and its checks) fails with
    /// EIO, once.
    FaultRead(u8),
    /// The `n`th file write from now fails with EIO, once.
    FaultWrite(u8),
    /// The `n`th fdatasync from now fails with EIO, once.
    FaultSync(u8),
}

/// A whole case.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub config: Config,
    pub ops: Vec<SimOp>,
}

fn len(rng: &mut StdRng) -> u32 {
    match rng.gen_range(0..20) {
        0..=7 => rng.gen_range(0..64),
        8..=18 => rng.gen_range(64..6000),
        // Larger than the 64 KiB slab: a file of its own.
        _ => rng.gen_range(65_000..150_000),
    }
}

fn key(rng: &mut StdRng) -> u8 {
    rng.gen_range(0..KEYS)
}

impl Case {
    /// The case of `seed`, `n` operations long.
    pub fn generate(seed: u64, n: usize) -> Case {
        let mut rng = StdRng::seed_from_u64(seed);
        let durability = match rng.gen_range(0..4) {
            0 => Durability::Sync,
            1 => Durability::None,
            _ => Durability::Buffered,
        };
        let config = Config {
            durability,
            cache: rng.gen_range(0..5) == 0,
            gc: [0.0, 0.5, 0.95][rng.gen_range(0..3)],
        };
        // Swarm testing (Groce et al., ISSTA 2012): each case weighs the
        // kinds of operation its own way, some not at all, so that one
        // case is mostly deletes and compactions, another mostly crashes;
        // what a uniform mix makes rare, some cases make common.
        let base = [30, 12, 11, 1, 8, 5, 3, 5, 4, 3, 3, 6, 4, 3, 2];
        let weights: Vec<u32> = base
            .iter()
            .map(|&w| w * [0, 1, 1, 3, 6][rng.gen_range(0..5)])
            .collect();
        let total: u32 = weights.iter().sum::<u32>().max(1);
        let ops = (0..n)
            .map(|_| {
                let mut pick = rng.gen_range(0..total);
                let kind = weights
                    .iter()
                    .position(|&w| {
                        if pick < w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                    .unwrap_or(0);
                match kind {
                    0 => SimOp::Put(key(&mut rng), len(&mut rng)),
                    1 => SimOp::Delete(key(&mut rng)),
                    2 => {
                        let n = rng.gen_range(1..6);
                        // Half the batches touch a few keys only, so a key
                        // is often deleted and written again in one batch.
                        let few = rng.gen_bool(0.5).then(|| rng.gen_range(0..KEYS - 2));
                        SimOp::Batch(
                            (0..n)
                                .map(|_| {
                                    let k = match few {
                                        Some(base) => base + rng.gen_range(0..3),
                                        None => key(&mut rng),
                                    };
                                    let v = rng.gen_bool(0.6).then(|| len(&mut rng) % 6000);
                                    (k, v)
                                })
                                .collect(),
                        )
                    }
                    3 => SimOp::Clear,
                    4 => SimOp::DropCache,
                    5 => SimOp::Flush,
                    6 => SimOp::Sync,
                    7 => SimOp::Compact,
                    8 => SimOp::Reopen,
                    9 => SimOp::Crash,
                    10 => SimOp::PowerCut(
                        [PowerCut::Clean, PowerCut::TornTail, PowerCut::AnyPages]
                            [rng.gen_range(0..3)],
                    ),
                    11 => SimOp::Refresh,
                    12 => SimOp::FaultRead(rng.gen_range(1..8)),
                    13 => SimOp::FaultWrite(rng.gen_range(1..12)),
                    _ => SimOp::FaultSync(rng.gen_range(1..6)),
                }
            })
            .collect();
        Case { config, ops }
    }
}

impl fmt::Display for SimOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimOp::Put(k, l) => write!(f, "put {k} {l}"),
            SimOp::Delete(k) => write!(f, "del {k}"),
            SimOp::Batch(items) => {
                write!(f, "batch")?;
                for (k, v) in items {
                    match v {
                        Some(l) => write!(f, " {k}={l}")?,
                        None => write!(f, " {k}=del")?,
                    }
                }
                Ok(())
            }
            SimOp::Clear => write!(f, "clear"),
            SimOp::DropCache => write!(f, "dropcache"),
            SimOp::Flush => write!(f, "flush"),
            SimOp::Sync => write!(f, "sync"),
            SimOp::Compact => write!(f, "compact"),
            SimOp::Reopen => write!(f, "reopen"),
            SimOp::Crash => write!(f, "crash"),
            SimOp::PowerCut(c) => write!(f, "power {c:?}"),
            SimOp::Refresh => write!(f, "refresh"),
            SimOp::FaultRead(n) => write!(f, "faultread {n}"),
            SimOp::FaultWrite(n) => write!(f, "faultwrite {n}"),
            SimOp::FaultSync(n) => write!(f, "faultsync {n}"),
        }
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        write!(
            f,
            "durability={:?} cache={} gc={}",
            c.durability, c.cache, c.gc
        )?;
        for op in &self.ops {
            write!(f, "; {op}")?;
        }
        Ok(())
    }
}

fn num<T: std::str::FromStr>(s: Option<&str>, what: &str) -> Result<T, String> {
    s.ok_or_else(|| format!("{what}: missing number"))?
        .parse()
        .map_err(|_| format!("{what}: not a number"))
}

impl std::str::FromStr for SimOp {
    type Err = String;

    fn from_str(s: &str) -> Result<SimOp, String> {
        let mut w = s.split_whitespace();
        let op = w.next().ok_or("empty op")?;
        Ok(match op {
            "put" => SimOp::Put(num(w.next(), s)?, num(w.next(), s)?),
            "del" => SimOp::Delete(num(w.next(), s)?),
            "batch" => SimOp::Batch(
                w.map(|item| {
                    let (k, v) = item.split_once('=').ok_or(format!("{s}: k=v"))?;
                    let k = num(Some(k), s)?;
                    let v = if v == "del" {
                        None
                    } else {
                        Some(num(Some(v), s)?)
                    };
                    Ok((k, v))
                })
                .collect::<Result<_, String>>()?,
            ),
            "clear" => SimOp::Clear,
            "dropcache" => SimOp::DropCache,
            "flush" => SimOp::Flush,
            "sync" => SimOp::Sync,
            "compact" => SimOp::Compact,
            "reopen" => SimOp::Reopen,
            "crash" => SimOp::Crash,
            "power" => SimOp::PowerCut(match w.next() {
                Some("Clean") => PowerCut::Clean,
                Some("TornTail") => PowerCut::TornTail,
                Some("AnyPages") => PowerCut::AnyPages,
                other => return Err(format!("power {other:?}")),
            }),
            "refresh" => SimOp::Refresh,
            "faultread" => SimOp::FaultRead(num(w.next(), s)?),
            "faultwrite" => SimOp::FaultWrite(num(w.next(), s)?),
            "faultsync" => SimOp::FaultSync(num(w.next(), s)?),
            other => return Err(format!("unknown op {other:?}")),
        })
    }
}

impl std::str::FromStr for Case {
    type Err = String;

    fn from_str(s: &str) -> Result<Case, String> {
        let mut parts = s.split(';').map(str::trim).filter(|p| !p.is_empty());
        let head = parts.next().ok_or("empty case")?;
        let mut config = Config {
            durability: Durability::Buffered,
            cache: false,
            gc: 0.0,
        };
        for kv in head.split_whitespace() {
            match kv.split_once('=') {
                Some(("durability", "Sync")) => config.durability = Durability::Sync,
                Some(("durability", "Buffered")) => config.durability = Durability::Buffered,
                Some(("durability", "None")) => config.durability = Durability::None,
                Some(("cache", v)) => config.cache = v == "true",
                Some(("gc", v)) => config.gc = num(Some(v), kv)?,
                _ => return Err(format!("unknown setting {kv:?}")),
            }
        }
        let ops = parts.map(str::parse).collect::<Result<_, _>>()?;
        Ok(Case { config, ops })
    }
}

#[test]
fn a_case_reads_back_from_its_text() {
    for seed in 0..50 {
        let case = Case::generate(seed, 200);
        let text = case.to_string();
        assert_eq!(text.parse::<Case>(), Ok(case), "{text}");
    }
}
