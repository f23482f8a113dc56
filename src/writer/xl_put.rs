//! The writer's XL path: a put or a batch too large for a slab gets its own
//! segment file (see `crate::xl`), written off the runtime.

use super::{Change, Group, Op, Update, Writer};
use crate::error::{Error, Result};
use crate::index::Location;
use crate::registry::Source;
use crate::xl::{write_xl_segment, XlRecord};
use std::sync::Arc;

impl Writer {
    /// A write too large for a slab (one put, or a batch): a segment file of
    /// its own (see `xl.rs`), all or nothing. Every earlier write is made
    /// durable and sealed first and later ones wait, so file ids keep the
    /// order of writes. Other writes stall meanwhile (about a second per
    /// GiB here).
    pub(super) async fn write_own_file(&mut self, ops: Vec<Op>) -> Result<()> {
        self.seal_all().await?;
        let id = self.take_file_id()?;
        let shared = self.shared.clone();
        let predecessor = self.last_file;
        let written = tokio::task::spawn_blocking(move || {
            let bytes: usize = ops.iter().map(|o| o.value().len()).sum();
            let _span =
                tracing::info_span!("xl_write", file_id = id, records = ops.len(), bytes).entered();
            let records: Vec<XlRecord<'_>> = ops
                .iter()
                .map(|o| XlRecord {
                    key: o.key(),
                    value: o.value(),
                    delete: o.is_delete(),
                })
                .collect();
            let dir = shared.registry.data_dir();
            let size = crate::xl::file_len(&records)?;
            let reservation = crate::gc::reserve(&shared, size)?;
            let (segment, placed) = write_xl_segment(&*shared.vfs, dir, id, predecessor, &records)?;
            reservation.publish(|| {
                shared
                    .registry
                    .insert(id, Source::Segment(Arc::new(segment)));
                Ok(())
            })?;
            drop(records);
            Ok::<_, Error>((ops, placed))
        })
        .await
        .map_err(|_| Error::Closed)??;
        let (ops, placed) = written;
        if let Some(&(offset, len)) = placed.last() {
            self.last_file = Some(crate::slab::Predecessor {
                file_id: id,
                end: u64::from(offset) + u64::from(len),
            });
        }
        let updates = ops
            .into_iter()
            .zip(placed)
            .map(|(op, (offset, len))| Update {
                known: Vec::new(),
                change: if op.is_delete() {
                    Change::Delete
                } else {
                    Change::Put
                },
                key: op.key().clone(),
                loc: Location {
                    file_id: id,
                    offset,
                },
                len,
            })
            .collect();
        self.apply(Group {
            updates,
            waiters: Vec::new(),
        });
        Ok(())
    }
}
