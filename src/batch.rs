//! `WriteBatch`: writes applied atomically.

use crate::writer::Op;
use bytes::Bytes;

/// A set of writes applied atomically: after any crash, all or none of it.
/// A later operation on the same key wins over an earlier one.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// let db = silt::Db::open(dir.path()).await?;
/// let mut batch = silt::WriteBatch::new();
/// batch.put("from", "0");
/// batch.put("to", "100");
/// db.write(batch).await?;
/// # db.close().await?;
/// # Ok::<(), silt::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    ops: Vec<Op>,
}

impl WriteBatch {
    /// An empty batch.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let mut batch = silt::WriteBatch::new();
    /// assert!(batch.is_empty());
    /// batch.put("k", "v");
    /// assert_eq!(batch.len(), 1);
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }
    /// Adds a put. The key is copied (keys are small); the value is taken
    /// as it is (a `Bytes`, `Vec<u8>` or `String` without a copy).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let mut batch = silt::WriteBatch::new();
    /// batch.put("k", "first");
    /// batch.put("k", "second"); // the later one wins
    /// let db = silt::Db::open(dir.path()).await?;
    /// db.write(batch).await?;
    /// assert_eq!(db.get(b"k").await?.unwrap(), "second");
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl Into<Bytes>) {
        let key = Bytes::copy_from_slice(key.as_ref());
        self.ops.push(Op::Put(key, value.into()));
    }
    /// Adds a delete.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = silt::Db::open(dir.path()).await?;
    /// db.put("old", "x").await?;
    /// let mut batch = silt::WriteBatch::new();
    /// batch.delete("old");
    /// batch.put("new", "y");
    /// db.write(batch).await?;
    /// assert_eq!(db.get(b"old").await?, None);
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn delete(&mut self, key: impl AsRef<[u8]>) {
        self.ops
            .push(Op::Delete(Bytes::copy_from_slice(key.as_ref())));
    }
    /// Number of operations.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let mut batch = silt::WriteBatch::new();
    /// batch.put("a", "1");
    /// batch.delete("b");
    /// assert_eq!(batch.len(), 2);
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    /// True if the batch holds no operation.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// assert!(silt::WriteBatch::new().is_empty());
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub(crate) fn into_ops(self) -> Vec<Op> {
        self.ops
    }
}
