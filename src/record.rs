//! Record encoding: `crc32 | flags | key_len u16 | val_len u32 | key | value`.
//!
//! All integers are little-endian. The CRC (crc32fast) covers every byte after
//! itself. See `docs/format.md`.

/// Bytes before the key.
pub(crate) const HEADER_LEN: usize = 4 + 1 + 2 + 4;
/// Longest key, bytes.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// let db = silt::Db::open(dir.path()).await?;
/// db.put(vec![b'k'; silt::MAX_KEY_LEN], "ok").await?;
/// assert!(db.put(vec![b'k'; silt::MAX_KEY_LEN + 1], "no").await.is_err());
/// # db.close().await?;
/// # Ok::<(), silt::Error>(()) }).unwrap();
/// ```
pub const MAX_KEY_LEN: usize = u16::MAX as usize;

/// The record sets a key to a value.
pub(crate) const FLAG_PUT: u8 = 1;
/// The record deletes a key (a tombstone; its value is empty).
pub(crate) const FLAG_DELETE: u8 = 2;
/// First record of an atomic group (a single put has both BEGIN and END).
pub(crate) const FLAG_BEGIN: u8 = 4;
/// Last record of an atomic group: the group is committed iff this is intact.
pub(crate) const FLAG_END: u8 = 8;
const KNOWN_FLAGS: u8 = FLAG_PUT | FLAG_DELETE | FLAG_BEGIN | FLAG_END;

/// The decoded fixed part of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub crc: u32,
    pub flags: u8,
    pub key_len: u16,
    pub val_len: u32,
}

impl Header {
    /// Length of the whole record.
    pub fn record_len(&self) -> usize {
        HEADER_LEN + self.key_len as usize + self.val_len as usize
    }
    pub fn is_delete(&self) -> bool {
        self.flags & FLAG_DELETE != 0
    }
}

/// Why bytes are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the header or the lengths it declares.
    Truncated,
    /// All-zero header: the end of the written data, not damage.
    End,
    /// Impossible flags or lengths.
    BadHeader,
    /// The CRC does not match.
    BadCrc,
}

impl DecodeError {
    pub fn describe(self) -> &'static str {
        match self {
            DecodeError::Truncated => "record truncated",
            DecodeError::End => "no record (zeroed bytes)",
            DecodeError::BadHeader => "record header has impossible flags or lengths",
            DecodeError::BadCrc => "record CRC mismatch",
        }
    }
}

/// Length of the record for `key` and a value of `val_len` bytes.
pub(crate) fn encoded_len(key_len: usize, val_len: usize) -> usize {
    HEADER_LEN + key_len + val_len
}

/// Writes a record into `out` (exactly `encoded_len` bytes long).
pub(crate) fn encode_into(out: &mut [u8], flags: u8, key: &[u8], value: &[u8]) {
    debug_assert_eq!(out.len(), encoded_len(key.len(), value.len()));
    let (head, body) = out.split_at_mut(HEADER_LEN);
    let (k, v) = body.split_at_mut(key.len());
    k.copy_from_slice(key);
    v.copy_from_slice(value);
    fill_head(head, flags, key, value);
}

/// The header and key of a record whose value is written separately (a
/// value larger than a slab goes to disk straight from the caller's bytes).
pub(crate) fn encode_head(flags: u8, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN + key.len()];
    let (head, k) = out.split_at_mut(HEADER_LEN);
    k.copy_from_slice(key);
    fill_head(head, flags, key, value);
    out
}

/// Fills the fixed header, CRC last (over the rest of the header, the key
/// and the value).
fn fill_head(head: &mut [u8], flags: u8, key: &[u8], value: &[u8]) {
    debug_assert!(key.len() <= MAX_KEY_LEN && value.len() <= u32::MAX as usize);
    head[4] = flags;
    head[5..7].copy_from_slice(&(key.len() as u16).to_le_bytes());
    head[7..11].copy_from_slice(&(value.len() as u32).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&head[4..HEADER_LEN]);
    h.update(key);
    h.update(value);
    head[0..4].copy_from_slice(&h.finalize().to_le_bytes());
}

/// Decodes and sanity-checks the fixed header fields (flags, lengths that
/// contradict each other) without looking at what follows.
pub(crate) fn decode_fixed(buf: &[u8]) -> Result<Header, DecodeError> {
    let head: &[u8; HEADER_LEN] = buf
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(DecodeError::Truncated)?;
    if head.iter().all(|&b| b == 0) {
        return Err(DecodeError::End);
    }
    let h = Header {
        crc: u32::from_le_bytes([head[0], head[1], head[2], head[3]]),
        flags: head[4],
        key_len: u16::from_le_bytes([head[5], head[6]]),
        val_len: u32::from_le_bytes([head[7], head[8], head[9], head[10]]),
    };
    let kind = h.flags & (FLAG_PUT | FLAG_DELETE);
    if h.flags & !KNOWN_FLAGS != 0
        || (kind != FLAG_PUT && kind != FLAG_DELETE)
        || h.key_len == 0
        || (h.is_delete() && h.val_len != 0)
    {
        return Err(DecodeError::BadHeader);
    }
    Ok(h)
}

/// Decodes the header at the start of `buf` and checks that the lengths it
/// declares fit in `buf`. Does not check the CRC.
pub(crate) fn decode_header(buf: &[u8]) -> Result<Header, DecodeError> {
    let h = decode_fixed(buf)?;
    if buf.len() < h.record_len() {
        return Err(DecodeError::Truncated);
    }
    Ok(h)
}

/// Checks the CRC of the record `rec` (exactly `header.record_len()` bytes).
pub(crate) fn check_crc(header: &Header, rec: &[u8]) -> Result<(), DecodeError> {
    match rec.get(4..header.record_len()) {
        Some(covered) if crc32fast::hash(covered) == header.crc => Ok(()),
        Some(_) => Err(DecodeError::BadCrc),
        None => Err(DecodeError::Truncated),
    }
}

/// Decodes and fully checks the record at the start of `buf`.
pub(crate) fn decode(buf: &[u8]) -> Result<Header, DecodeError> {
    let h = decode_header(buf)?;
    check_crc(&h, buf)?;
    Ok(h)
}

/// The key of a record whose header is `h`, from the record's bytes.
pub(crate) fn key_of<'a>(h: &Header, rec: &'a [u8]) -> &'a [u8] {
    rec.get(HEADER_LEN..HEADER_LEN + h.key_len as usize)
        .unwrap_or_default()
}

/// The stable 64-bit hash of a key (xxh3). Stored in segment footers, so it
/// must never change for a given format version.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(flags: u8, k: &[u8], v: &[u8]) -> Vec<u8> {
        let mut out = vec![0; encoded_len(k.len(), v.len())];
        encode_into(&mut out, flags, k, v);
        out
    }

    #[test]
    fn round_trip() {
        let r = enc(FLAG_PUT | FLAG_BEGIN | FLAG_END, b"key", b"value");
        assert_eq!(r.len(), 11 + 3 + 5);
        let h = decode(&r).unwrap();
        assert_eq!(h.key_len, 3);
        assert_eq!(h.val_len, 5);
        assert_eq!(key_of(&h, &r), b"key");
        assert_eq!(h.record_len(), r.len());
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let r = enc(FLAG_PUT | FLAG_BEGIN | FLAG_END, b"k", b"hello");
        for byte in 0..r.len() {
            for bit in 0..8 {
                let mut bad = r.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "flip at {byte}:{bit} not caught");
            }
        }
    }

    #[test]
    fn truncation_and_zeroes() {
        let r = enc(FLAG_DELETE | FLAG_BEGIN | FLAG_END, b"gone", b"");
        for len in 0..r.len() {
            assert!(matches!(
                decode(&r[..len]),
                Err(DecodeError::Truncated) | Err(DecodeError::End)
            ));
        }
        assert_eq!(decode(&[0u8; 64]), Err(DecodeError::End));
    }

    #[test]
    fn impossible_headers_are_rejected() {
        // A delete with a value, an empty key, unknown flags.
        let mut r = enc(FLAG_PUT, b"k", b"v");
        r[4] = FLAG_DELETE;
        assert_eq!(decode_header(&r), Err(DecodeError::BadHeader));
        r[4] = 0x80 | FLAG_PUT;
        assert_eq!(decode_header(&r), Err(DecodeError::BadHeader));
        let mut r = enc(FLAG_PUT, b"k", b"v");
        r[5] = 0;
        assert_eq!(decode_header(&r), Err(DecodeError::BadHeader));
    }
}
