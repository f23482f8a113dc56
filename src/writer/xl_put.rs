//! The writer's XL path: a put too large for a slab gets its own segment
//! file (see `crate::xl`), written off the runtime.

use super::{Change, Group, Update, Writer};
use crate::error::{Error, Result};
use crate::index::Location;
use crate::registry::Source;
use crate::slab::FILE_HEADER_LEN;
use crate::xl::write_xl_segment;
use bytes::Bytes;
use std::sync::Arc;

impl Writer {
    /// A put too large for a slab: its own segment file (see `xl.rs`). Every
    /// earlier write is made durable and sealed first and later ones wait,
    /// so file ids keep the order of writes. Other writes stall meanwhile
    /// (about a second per GiB here).
    pub(super) async fn put_xl(&mut self, key: Bytes, value: Bytes) -> Result<()> {
        self.seal_all().await?;
        let id = self.take_file_id()?;
        let shared = self.shared.clone();
        let predecessor = self.last_file;
        let written = tokio::task::spawn_blocking(move || {
            let _span = tracing::info_span!("xl_put", file_id = id, bytes = value.len()).entered();
            let dir = shared.registry.data_dir();
            let size = crate::xl::file_len(key.len(), value.len());
            let reservation = crate::gc::reserve(&shared, size)?;
            let (segment, len) =
                write_xl_segment(&*shared.vfs, dir, id, predecessor, &key, &value)?;
            reservation.publish(|| {
                shared
                    .registry
                    .insert(id, Source::Segment(Arc::new(segment)));
                Ok(())
            })?;
            Ok::<_, Error>((key, len))
        })
        .await
        .map_err(|_| Error::Closed)??;
        let (key, len) = written;
        self.last_file = Some(crate::slab::Predecessor {
            file_id: id,
            end: u64::from(len) + FILE_HEADER_LEN as u64,
        });
        let loc = Location {
            file_id: id,
            offset: FILE_HEADER_LEN as u32,
        };
        self.apply(Group {
            updates: vec![Update {
                known: Vec::new(),
                key,
                loc,
                len,
                change: Change::Put,
            }],
            waiters: Vec::new(),
        });
        Ok(())
    }
}
