//! The evidence directory, `DATA_DIR/evidence`: one `<alert id>.pcap` per alert, written
//! whole or not at all (a temporary file renamed), kept under a total size by removing
//! the oldest, and dropped with the alerts' retention.
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The evidence directory under a data directory.
pub fn under(data_dir: &Path) -> PathBuf {
    data_dir.join("evidence")
}

/// Whether `id` is an alert id (16 hex digits): nothing else ever names a file here.
pub fn valid_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The file of alert `id`, if `id` is valid.
pub fn file_of(dir: &Path, id: &str) -> Option<PathBuf> {
    valid_id(id).then(|| dir.join(format!("{id}.pcap")))
}

/// The path alerts name: relative to the data directory.
pub fn name_of(id: &str) -> String {
    format!("evidence/{id}.pcap")
}

/// Evidence files with their size and modification time, oldest first.
fn listing(dir: &Path) -> Vec<(SystemTime, u64, PathBuf)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<_> = rd
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pcap"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, m.len(), e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Writes `bytes` as alert `id`'s file (temporary file, then rename), first removing the
/// oldest files until everything fits in `max_bytes`; returns how many it removed.
pub fn write(dir: &Path, id: &str, bytes: &[u8], max_bytes: u64) -> std::io::Result<u64> {
    let path = file_of(dir, id).ok_or_else(|| std::io::Error::other("not an alert id"))?;
    fs::create_dir_all(dir)?;
    let files = listing(dir);
    let mut total: u64 = files.iter().map(|f| f.1).sum::<u64>() + bytes.len() as u64;
    let mut removed = 0;
    for (_, len, old) in &files {
        if total <= max_bytes {
            break;
        }
        if *old != path && fs::remove_file(old).is_ok() {
            total -= len;
            removed += 1;
        }
    }
    let tmp = dir.join(format!(".{id}.pcap.tmp"));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, &path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    Ok(removed)
}

/// Removes evidence files older than `days` (the alerts' retention); returns how many.
pub fn drop_expired(dir: &Path, days: u32, now: SystemTime) -> usize {
    let keep_from = now
        .checked_sub(Duration::from_secs(u64::from(days) * 86_400))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    listing(dir)
        .into_iter()
        .filter(|(t, _, p)| *t < keep_from && fs::remove_file(p).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_leave_the_directory() {
        let d = Path::new("/data/evidence");
        assert!(file_of(d, "0123456789abcdef").is_some());
        for bad in [
            "../../etc/passwd",
            "0123456789abcde",
            "0123456789abcdeg",
            "",
            "a/b",
        ] {
            assert_eq!(file_of(d, bad), None, "{bad}");
        }
    }

    #[test]
    fn the_oldest_go_to_make_room_and_retention_drops_old_files() {
        let tmp = std::env::temp_dir().join(format!("tw-evidence-dir-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let ids = ["000000000000000a", "000000000000000b", "000000000000000c"];
        for id in ids {
            assert_eq!(write(&tmp, id, &[0; 100], 1_000).unwrap(), 0);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(write(&tmp, "000000000000000d", &[0; 500], 600).unwrap(), 2);
        assert!(!tmp.join("000000000000000a.pcap").exists());
        assert!(tmp.join("000000000000000c.pcap").exists());
        let later = SystemTime::now() + Duration::from_secs(2 * 86_400);
        assert_eq!(drop_expired(&tmp, 1, later), 2);
        assert_eq!(drop_expired(&tmp, 1, SystemTime::now()), 0);
        let _ = fs::remove_dir_all(&tmp);
    }
}
