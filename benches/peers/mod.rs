//! The peers silt is compared with, behind one blocking trait, shared by
//! the `compare` and `space` benches.
#![allow(dead_code)]

use redb::ReadableDatabase;
use std::path::Path;
use std::sync::Arc;

/// A peer's blocking API.
pub trait Peer: Send + Sync + 'static {
    fn put(&self, k: &[u8], v: &[u8], sync: bool);
    fn get(&self, k: &[u8]) -> Option<usize>;
    fn delete(&self, k: &[u8]);
    /// Make everything written durable.
    fn sync(&self);
    /// Reclaim the space of overwritten and deleted data now, if the store
    /// can; `false` if it has no such call.
    fn compact(&self) -> bool;
}

struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Peer for Fjall {
    fn put(&self, k: &[u8], v: &[u8], sync: bool) {
        self.ks.insert(k, v).expect("fjall insert");
        if sync {
            self.db
                .persist(fjall::PersistMode::SyncData)
                .expect("fjall persist");
        }
    }
    fn get(&self, k: &[u8]) -> Option<usize> {
        self.ks.get(k).expect("fjall get").map(|v| v.len())
    }
    fn delete(&self, k: &[u8]) {
        self.ks.remove(k).expect("fjall remove");
    }
    fn compact(&self) -> bool {
        self.ks.rotate_memtable_and_wait().expect("fjall flush");
        self.ks.major_compact().expect("fjall major_compact");
        true
    }
    fn sync(&self) {
        self.db
            .persist(fjall::PersistMode::SyncAll)
            .expect("fjall persist");
    }
}

const REDB_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv");

struct Redb {
    db: std::sync::RwLock<redb::Database>,
}

impl Peer for Redb {
    fn put(&self, k: &[u8], v: &[u8], sync: bool) {
        let db = self.db.read().expect("redb lock");
        let mut txn = db.begin_write().expect("redb begin");
        let d = if sync {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        txn.set_durability(d).expect("redb durability");
        {
            let mut t = txn.open_table(REDB_TABLE).expect("redb table");
            t.insert(k, v).expect("redb insert");
        }
        txn.commit().expect("redb commit");
    }
    fn get(&self, k: &[u8]) -> Option<usize> {
        let db = self.db.read().expect("redb lock");
        let txn = db.begin_read().expect("redb read");
        let t = txn.open_table(REDB_TABLE).ok()?;
        t.get(k).expect("redb get").map(|g| g.value().len())
    }
    fn delete(&self, k: &[u8]) {
        let db = self.db.read().expect("redb lock");
        let mut txn = db.begin_write().expect("redb begin");
        txn.set_durability(redb::Durability::None)
            .expect("redb durability");
        {
            let mut t = txn.open_table(REDB_TABLE).expect("redb table");
            t.remove(k).expect("redb remove");
        }
        txn.commit().expect("redb commit");
    }
    fn compact(&self) -> bool {
        self.sync();
        let mut db = self.db.write().expect("redb lock");
        while db.compact().expect("redb compact") {}
        true
    }
    fn sync(&self) {
        let db = self.db.read().expect("redb lock");
        let mut txn = db.begin_write().expect("redb begin");
        txn.set_durability(redb::Durability::Immediate)
            .expect("redb durability");
        txn.commit().expect("redb commit");
    }
}

struct Sled {
    db: sled::Db,
}

impl Peer for Sled {
    fn put(&self, k: &[u8], v: &[u8], sync: bool) {
        self.db.insert(k, v).expect("sled insert");
        if sync {
            self.db.flush().expect("sled flush");
        }
    }
    fn get(&self, k: &[u8]) -> Option<usize> {
        self.db.get(k).expect("sled get").map(|v| v.len())
    }
    fn delete(&self, k: &[u8]) {
        self.db.remove(k).expect("sled remove");
    }
    fn compact(&self) -> bool {
        false
    }
    fn sync(&self) {
        self.db.flush().expect("sled flush");
    }
}

#[cfg(feature = "rocksdb")]
struct Rocks {
    db: rocksdb::DB,
}

#[cfg(feature = "rocksdb")]
impl Peer for Rocks {
    fn put(&self, k: &[u8], v: &[u8], sync: bool) {
        let mut o = rocksdb::WriteOptions::default();
        o.set_sync(sync);
        self.db.put_opt(k, v, &o).expect("rocksdb put");
    }
    fn get(&self, k: &[u8]) -> Option<usize> {
        self.db.get_pinned(k).expect("rocksdb get").map(|v| v.len())
    }
    fn delete(&self, k: &[u8]) {
        self.db.delete(k).expect("rocksdb delete");
    }
    fn compact(&self) -> bool {
        self.db.flush().expect("rocksdb flush");
        self.db.compact_range::<&[u8], &[u8]>(None, None);
        true
    }
    fn sync(&self) {
        self.db.flush_wal(true).expect("rocksdb flush_wal");
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Silt,
    Fjall,
    Redb,
    Sled,
    #[cfg(feature = "rocksdb")]
    Rocks,
}

/// Opens (creating) a peer store at `path`. Blocking.
pub fn open_peer(kind: Kind, path: &Path) -> Arc<dyn Peer> {
    std::fs::create_dir_all(path).expect("mkdir");
    match kind {
        Kind::Fjall => {
            let db = fjall::Database::builder(path).open().expect("fjall open");
            let ks = db
                .keyspace("kv", fjall::KeyspaceCreateOptions::default)
                .expect("fjall keyspace");
            Arc::new(Fjall { db, ks })
        }
        Kind::Redb => Arc::new(Redb {
            db: std::sync::RwLock::new(
                redb::Database::create(path.join("db.redb")).expect("redb open"),
            ),
        }),
        Kind::Sled => Arc::new(Sled {
            db: sled::open(path).expect("sled open"),
        }),
        #[cfg(feature = "rocksdb")]
        Kind::Rocks => {
            let mut o = rocksdb::Options::default();
            o.create_if_missing(true);
            Arc::new(Rocks {
                db: rocksdb::DB::open(&o, path).expect("rocksdb open"),
            })
        }
        Kind::Silt => panic!("silt is not a peer"),
    }
}
