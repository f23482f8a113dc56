//! How much memory this process may use: the smallest memory limit of its
//! cgroup and the cgroups above it (v1 `memory.limit_in_bytes`, v2
//! `memory.max`), else the machine's. `ColdReads::Auto` compares the
//! store's segment bytes with it.

use std::path::{Path, PathBuf};

/// The limit in bytes (the machine's memory if no cgroup limits it; `None`
/// if even that cannot be read).
pub(crate) fn memory_limit() -> Option<u64> {
    let machine = machine_memory();
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|s| cgroup_limit(&s, Path::new("/sys/fs/cgroup")));
    match (machine, cgroup) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (m, c) => m.or(c),
    }
}

fn machine_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The smallest limit on the path from the process's memory cgroup up to
/// the root, as `/proc/self/cgroup` (`cgroups`) names it under `root`.
fn cgroup_limit(cgroups: &str, root: &Path) -> Option<u64> {
    let mut best: Option<u64> = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (base, file): (PathBuf, &str) = if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else if controllers.is_empty() {
            (root.to_path_buf(), "memory.max")
        } else {
            continue;
        };
        let mut dir = base.join(path.trim_start_matches('/'));
        loop {
            let limit = std::fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            if let Some(l) = limit {
                best = Some(best.map_or(l, |b| b.min(l)));
            }
            if dir == base || !dir.pop() {
                break;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_limit_up_the_tree_wins() {
        let root = tempfile::tempdir().unwrap();
        let v1 = root.path().join("memory/a/b");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(
            root.path().join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        std::fs::write(
            root.path().join("memory/a/memory.limit_in_bytes"),
            "1073741824\n",
        )
        .unwrap();
        std::fs::write(v1.join("memory.limit_in_bytes"), "4294967296\n").unwrap();
        let got = cgroup_limit("4:memory:/a/b\n3:cpu:/\n", root.path());
        assert_eq!(got, Some(1 << 30));
        // v2: "max" means no limit there.
        let v2 = root.path().join("s");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit("0::/s\n", root.path()), None);
        std::fs::write(v2.join("memory.max"), "536870912\n").unwrap();
        assert_eq!(cgroup_limit("0::/s\n", root.path()), Some(512 << 20));
        assert!(memory_limit().is_some_and(|m| m > 0));
    }
}
