//! The usage spool: batches of usage records kept on local disk while the shared store
//! cannot take them (cluster mode, SPEC §9.6).
//!
//! When PostgreSQL is unreachable the proxy keeps serving from memory, so its usage records
//! must wait somewhere that survives the replica being restarted, or killed, before the
//! database comes back: memory would lose them, and an unbounded queue would grow until the
//! process died. A batch the store refused for unavailability is written here as one file,
//! and delivered (oldest first) once the store answers again; its file is removed only after
//! the commit. A crash between the commit and the removal sends the batch again, which the
//! store's record ids turn into a no-op: each record lands exactly once.
//!
//! One file per batch, written whole to a temporary name, fsynced, then renamed into place and
//! the directory fsynced: a file with a batch name is always complete. Each file ends with a
//! CRC-32 of everything before it, so a file damaged on disk is noticed, set aside as
//! `.corrupt` (never deleted: an operator may recover it) and reported, instead of delivering
//! half a batch or stopping delivery of the others.
//!
//! The payloads are opaque bytes here: the usage writer encodes its records.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

const MAGIC: &[u8; 8] = b"GWSPOOL1";
const SUFFIX: &str = ".batch";
const CORRUPT_SUFFIX: &str = ".corrupt";
const TEMP_PREFIX: &str = "tmp-";
/// No batch file is larger (the writer's batches are a few MiB at most): a longer file is
/// damaged, and is not read into memory whole.
const MAX_FILE_BYTES: u64 = 1 << 30;

/// A directory of spooled batches.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// The number the next batch file gets: one more than any present at open.
    next: u64,
}

/// One spooled batch, as listed by [`Spool::pending`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpoolFile {
    seq: u64,
    path: PathBuf,
}

impl SpoolFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why a spooled batch could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file is damaged; it was renamed to `set_aside` and will not be listed again.
    #[error("spooled batch {} is damaged ({why}); set aside as {}", file.display(), set_aside.display())]
    Corrupt {
        file: PathBuf,
        set_aside: PathBuf,
        why: String,
    },
    #[error("reading spooled batch {}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Spool {
    /// Opens (creating, owner-only) the spool directory, removes temporary files a crash left
    /// half-written (their batches were never acknowledged as spooled) and finds where
    /// numbering resumes.
    pub fn open(dir: &Path) -> anyhow::Result<Spool> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the usage spool {}", dir.display()))?;
        let mode = fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("narrowing the mode of {}", dir.display()))?;
        }
        let mut next = 0;
        for entry in
            fs::read_dir(dir).with_context(|| format!("listing the spool {}", dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TEMP_PREFIX) {
                fs::remove_file(entry.path()).with_context(|| {
                    format!(
                        "removing a half-written spool file {}",
                        entry.path().display()
                    )
                })?;
            } else if let Some(seq) = batch_seq(name).or_else(|| corrupt_seq(name)) {
                next = next.max(seq + 1);
            }
        }
        Ok(Spool {
            dir: dir.to_owned(),
            next,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes one batch durably: when this returns `Ok`, the batch survives a crash.
    pub fn append<'a>(
        &mut self,
        payloads: impl IntoIterator<Item = &'a [u8]>,
    ) -> anyhow::Result<SpoolFile> {
        let mut content = Vec::with_capacity(4096);
        content.extend_from_slice(MAGIC);
        for payload in payloads {
            let len = u32::try_from(payload.len()).context("a spooled record over 4 GiB")?;
            content.extend_from_slice(&len.to_le_bytes());
            content.extend_from_slice(payload);
        }
        let crc = crc32fast::hash(&content);
        content.extend_from_slice(&crc.to_le_bytes());

        let seq = self.next;
        let temp = self.dir.join(format!("{TEMP_PREFIX}{seq:016}"));
        let path = self.dir.join(batch_name(seq));
        let written = (|| -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(&content)?;
            file.sync_all()?;
            fs::rename(&temp, &path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(err) = written {
            let _ = fs::remove_file(&temp);
            return Err(err)
                .with_context(|| format!("spooling a usage batch to {}", path.display()));
        }
        self.next = seq + 1;
        Ok(SpoolFile { seq, path })
    }

    /// The batches waiting, oldest first.
    pub fn pending(&self) -> anyhow::Result<Vec<SpoolFile>> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir)
            .with_context(|| format!("listing the spool {}", self.dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name();
            if let Some(seq) = name.to_str().and_then(batch_seq) {
                files.push(SpoolFile {
                    seq,
                    path: entry.path(),
                });
            }
        }
        files.sort();
        Ok(files)
    }

    /// The payloads of one batch, in the order they were appended. A damaged file is set
    /// aside (see [`ReadError::Corrupt`]).
    pub fn read(&self, file: &SpoolFile) -> Result<Vec<Vec<u8>>, ReadError> {
        let io = |source| ReadError::Io {
            file: file.path.clone(),
            source,
        };
        let mut handle = File::open(&file.path).map_err(io)?;
        let len = handle.metadata().map_err(io)?.len();
        if len > MAX_FILE_BYTES {
            return Err(self.set_aside(file, format!("{len} bytes, over the largest batch")));
        }
        let mut content = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        handle.read_to_end(&mut content).map_err(io)?;
        decode(&content).map_err(|why| self.set_aside(file, why))
    }

    /// Removes a batch after the store committed it.
    pub fn remove(&self, file: &SpoolFile) -> anyhow::Result<()> {
        fs::remove_file(&file.path)
            .with_context(|| format!("removing delivered spool file {}", file.path.display()))?;
        // Not fsynced: a removal lost in a crash re-delivers the batch, which the store's
        // record ids make a no-op.
        Ok(())
    }

    fn set_aside(&self, file: &SpoolFile, why: String) -> ReadError {
        let set_aside = self.dir.join(format!("{:016}{CORRUPT_SUFFIX}", file.seq));
        if let Err(err) = fs::rename(&file.path, &set_aside) {
            return ReadError::Corrupt {
                file: file.path.clone(),
                set_aside: file.path.clone(),
                why: format!("{why}; and it could not be renamed: {err}"),
            };
        }
        ReadError::Corrupt {
            file: file.path.clone(),
            set_aside,
            why,
        }
    }
}

fn batch_name(seq: u64) -> String {
    format!("{seq:016}{SUFFIX}")
}

fn batch_seq(name: &str) -> Option<u64> {
    parse_seq(name.strip_suffix(SUFFIX)?)
}

fn corrupt_seq(name: &str) -> Option<u64> {
    parse_seq(name.strip_suffix(CORRUPT_SUFFIX)?)
}

fn parse_seq(digits: &str) -> Option<u64> {
    (digits.len() == 16 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn decode(content: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let Some(body) = content
        .len()
        .checked_sub(4)
        .filter(|&end| end >= MAGIC.len())
        .map(|end| &content[..end])
    else {
        return Err(format!(
            "{} bytes, shorter than an empty batch",
            content.len()
        ));
    };
    let stored = u32::from_le_bytes(content[body.len()..].try_into().map_err(|_| "trailer")?);
    if crc32fast::hash(body) != stored {
        return Err("its checksum does not match".into());
    }
    if &body[..MAGIC.len()] != MAGIC {
        return Err("not a usage spool batch".into());
    }
    let mut rest = &body[MAGIC.len()..];
    let mut payloads = Vec::new();
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err("a record length is cut".into());
        };
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err("a record is cut".into());
        }
        payloads.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    Ok(payloads)
}

#[cfg(test)]
fn assert_owner_only(path: &Path) {
    let mode = fs::metadata(path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(batch: &[&str]) -> Vec<Vec<u8>> {
        batch.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    fn append(spool: &mut Spool, batch: &[&str]) -> SpoolFile {
        spool
            .append(batch.iter().map(|s| s.as_bytes()))
            .expect("append")
    }

    #[test]
    fn batches_come_back_whole_and_in_order_across_reopening() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("spool");
        let mut spool = Spool::open(&path).expect("open");
        assert_owner_only(&path);
        let first = append(&mut spool, &["a", "", "ccc"]);
        let second = append(&mut spool, &["d"]);
        let empty = append(&mut spool, &[]);
        assert_owner_only(first.path());
        drop(spool);

        let mut spool = Spool::open(&path).expect("reopen");
        let pending = spool.pending().expect("pending");
        assert_eq!(pending, vec![first.clone(), second.clone(), empty.clone()]);
        assert_eq!(
            spool.read(&first).expect("read"),
            payloads(&["a", "", "ccc"])
        );
        assert_eq!(spool.read(&second).expect("read"), payloads(&["d"]));
        assert!(spool.read(&empty).expect("read").is_empty());

        // Numbering resumes after the files present: a new batch sorts after the old ones.
        let third = append(&mut spool, &["e"]);
        spool.remove(&first).expect("remove");
        assert_eq!(
            spool.pending().expect("pending"),
            vec![second, empty, third]
        );
    }

    #[test]
    fn numbering_resumes_after_the_newest_even_once_the_older_are_delivered() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spool = Spool::open(dir.path()).expect("open");
        let files: Vec<_> = (0..3)
            .map(|i| append(&mut spool, &[&i.to_string()]))
            .collect();
        spool.remove(&files[0]).expect("remove");
        spool.remove(&files[1]).expect("remove");
        let mut spool = Spool::open(dir.path()).expect("reopen");
        let next = append(&mut spool, &["new"]);
        assert!(next > files[2], "{next:?} must sort after {:?}", files[2]);
    }

    #[test]
    fn a_half_written_temporary_file_is_removed_at_open() {
        let dir = tempfile::tempdir().expect("dir");
        fs::write(
            dir.path().join("tmp-0000000000000007"),
            b"GWSPOOL1\x05\0\0\0ab",
        )
        .expect("write");
        let spool = Spool::open(dir.path()).expect("open");
        assert!(spool.pending().expect("pending").is_empty());
        assert!(!dir.path().join("tmp-0000000000000007").exists());
    }

    #[test]
    fn a_damaged_batch_is_set_aside_not_delivered_and_not_deleted() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spool = Spool::open(dir.path()).expect("open");
        let damaged = append(&mut spool, &["one", "two"]);
        let good = append(&mut spool, &["three"]);
        let mut bytes = fs::read(damaged.path()).expect("read");
        bytes[10] ^= 0x40;
        fs::write(damaged.path(), &bytes).expect("write");

        let err = spool.read(&damaged).expect_err("a flipped bit is noticed");
        let ReadError::Corrupt { set_aside, .. } = &err else {
            panic!("{err}");
        };
        assert!(set_aside.exists(), "kept for the operator");
        assert!(err.to_string().contains("checksum"), "{err}");
        assert_eq!(spool.pending().expect("pending"), vec![good.clone()]);
        assert_eq!(spool.read(&good).expect("read"), payloads(&["three"]));

        // A set-aside file still counts for numbering: a new batch never takes its name.
        let mut spool = Spool::open(dir.path()).expect("reopen");
        let next = append(&mut spool, &["four"]);
        assert!(next > good);
    }

    #[test]
    fn a_truncated_batch_is_noticed() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spool = Spool::open(dir.path()).expect("open");
        for cut in [0, 3, 11, 15] {
            let file = append(&mut spool, &["payload"]);
            let bytes = fs::read(file.path()).expect("read");
            fs::write(file.path(), &bytes[..cut]).expect("truncate");
            assert!(
                matches!(spool.read(&file), Err(ReadError::Corrupt { .. })),
                "cut at {cut}"
            );
        }
        assert!(spool.pending().expect("pending").is_empty());
    }

    #[test]
    fn decode_refuses_every_malformed_layout() {
        let with_crc = |body: &[u8]| {
            let mut v = body.to_vec();
            v.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
            v
        };
        assert!(decode(&with_crc(b"NOTSPOOL")).is_err());
        assert!(
            decode(&with_crc(b"GWSPOOL1\x09\0\0\0abc")).is_err(),
            "record cut"
        );
        assert!(decode(&with_crc(b"GWSPOOL1\x01\0")).is_err(), "length cut");
        assert_eq!(
            decode(&with_crc(b"GWSPOOL1\x02\0\0\0ab")).expect("good"),
            vec![b"ab".to_vec()]
        );
    }

    #[test]
    fn a_spool_directory_open_to_others_is_narrowed() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("spool");
        fs::create_dir(&path).expect("mkdir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        Spool::open(&path).expect("open");
        assert_owner_only(&path);
    }
}
