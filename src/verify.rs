//! Offline verification of a store directory: every file's header, every
//! segment's trailer and footer, and every record's CRC, live or dead.
//! Reads files only; takes no lock and changes nothing.

use crate::error::{Error, Result};
use crate::record;
use crate::recovery::{cut_after_lost_records, Link};
use crate::segment::{decode_footer, scan_records};
use crate::slab::{decode_file_header, decode_predecessor};
use std::path::{Path, PathBuf};

/// One problem found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The damaged file.
    pub path: PathBuf,
    /// Byte offset of the damage.
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Data files checked.
    pub files: usize,
    /// Records whose CRC was checked.
    pub records: u64,
    /// Bytes of data files read.
    pub bytes: u64,
    /// Damage in sealed segments (or unreadable files): these are errors.
    pub problems: Vec<Problem>,
    /// Bytes after the last intact record of unsealed (`.log`) files: a
    /// torn tail left by a crash, which `open` cuts; not an error.
    pub torn_tail_bytes: u64,
    /// Files `open` will set aside (into `<dir>/dropped/`): an unsealed
    /// file written before them lost records they followed.
    pub to_set_aside: Vec<PathBuf>,
}

impl VerifyReport {
    /// True if no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every data file under `dir/data`. `progress(done, total)` is
/// called after each file with bytes checked so far and in all.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// let db = silt::Db::open(dir.path()).await?;
/// db.put("k", "v").await?;
/// db.close().await?;
/// let report = silt::verify(dir.path(), |_done, _total| {})?;
/// assert!(report.is_ok());
/// assert_eq!(report.records, 1);
/// # Ok::<(), silt::Error>(()) }).unwrap();
/// ```
pub fn verify(dir: impl AsRef<Path>, mut progress: impl FnMut(u64, u64)) -> Result<VerifyReport> {
    let data = dir.as_ref().join("data");
    let mut files: Vec<(PathBuf, u64)> = Vec::new();
    let rd = std::fs::read_dir(&data).map_err(|e| Error::io("list data directory", &data, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("list data directory", &data, e))?;
        let path = entry.path();
        let ext = path.extension().and_then(|e| e.to_str());
        if matches!(ext, Some("silt") | Some("log")) {
            let len = entry
                .metadata()
                .map_err(|e| Error::io("stat", &path, e))?
                .len();
            files.push((path, len));
        }
    }
    files.sort();
    let total: u64 = files.iter().map(|(_, l)| l).sum();
    let mut report = VerifyReport::default();
    let mut links = Vec::new();
    for (path, _) in files {
        let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        report.files += 1;
        report.bytes += bytes.len() as u64;
        links.extend(check_file(&path, &bytes, &mut report));
        progress(report.bytes, total);
    }
    // Listed by name, and names are zero-padded ids; wider ids sort by value.
    links.sort_by_key(|l| l.id);
    let cut = cut_after_lost_records(&links);
    report.to_set_aside = links
        .into_iter()
        .filter(|l| cut.contains(&l.id))
        .map(|l| l.path)
        .collect();
    Ok(report)
}

/// Checks one file; returns what recovery's write-order check needs of it.
fn check_file(path: &Path, bytes: &[u8], report: &mut VerifyReport) -> Option<Link> {
    let problem = |offset: u64, what: String| Problem {
        path: path.to_path_buf(),
        offset,
        what,
    };
    let id = path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse::<u32>().ok());
    if decode_file_header(bytes).is_none() || decode_file_header(bytes) != id {
        report.problems.push(problem(
            0,
            "file header damaged or naming another file".into(),
        ));
        return None;
    }
    let link = |log: bool, end: usize| Link {
        id: id.unwrap_or_default(),
        path: path.to_path_buf(),
        log,
        end: end as u64,
        predecessor: decode_predecessor(bytes),
        // Files with a damaged header are reported above.
        header_lost: false,
    };
    let sealed = path.extension().is_some_and(|e| e == "silt");
    if !sealed {
        let scan = scan_records(bytes, true);
        report.records += scan.entries.len() as u64;
        report.torn_tail_bytes += scan.torn_bytes;
        return Some(link(true, scan.valid_end));
    }
    match decode_footer(bytes) {
        Ok(footer) => {
            let end = footer.data_end;
            for e in &footer.entries {
                let at = e.offset as usize;
                let rec = bytes.get(at..at + e.len as usize).unwrap_or_default();
                match record::decode(rec) {
                    Ok(h) if h.record_len() == e.len as usize => report.records += 1,
                    Ok(_) => report.problems.push(problem(
                        at as u64,
                        "record length differs from its footer entry".into(),
                    )),
                    Err(err) => report
                        .problems
                        .push(problem(at as u64, err.describe().into())),
                }
            }
            Some(link(false, end))
        }
        Err(why) => {
            let scan = scan_records(bytes, true);
            report.records += scan.entries.len() as u64;
            report.problems.push(problem(
                bytes.len().saturating_sub(crate::segment::TRAILER_LEN) as u64,
                format!("{why}; {} records readable by scanning", scan.entries.len()),
            ));
            Some(link(false, scan.valid_end))
        }
    }
}
