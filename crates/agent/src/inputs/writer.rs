//! The kubelet's atomic writer (pkg/volume/util/atomic_writer.go) for configMap, secret,
//! downwardAPI and projected volumes: the content lives in a timestamped folder
//! (`..2026_12_04_09_30_00.1234`), the `..data` symlink points at it, and every user-visible
//! entry is a symlink into `..data`. An update writes a new folder and swaps `..data` with one
//! `rename`, so a reader sees the old or the new content, never a mix.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::InputError;

/// The symlink that points at the current content folder.
pub const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file of a volume's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProjection {
    /// The bytes of the file.
    pub data: Vec<u8>,
    /// Its permission bits (`defaultMode` or the item's `mode`).
    pub mode: u32,
}

/// A volume's content: relative path → file.
pub type Payload = BTreeMap<String, FileProjection>;

/// Checks a payload path as upstream does: relative, no `..` element, not starting with `..`.
pub fn validate_payload_path(path: &str) -> Result<(), InputError> {
    let invalid = |why: &str| InputError::Invalid(format!("invalid path {path:?}: {why}"));
    if path.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if Path::new(path).is_absolute() {
        return Err(invalid("must be relative path"));
    }
    if path.starts_with("..") {
        return Err(invalid("must not start with '..'"));
    }
    if path.split('/').any(|part| part == "..") {
        return Err(invalid("must not contain '..'"));
    }
    Ok(())
}

/// The mode a file ends up with once the pod's `fsGroup` applies (group-readable, as the
/// kubelet's `SetVolumeOwnership` does for read-only volumes).
fn final_mode(mode: u32, fs_group: Option<u32>) -> u32 {
    let mode = mode & 0o7777;
    match fs_group {
        Some(_) => mode | 0o440,
        None => mode,
    }
}

/// Writes `payload` into `target` atomically; returns `false` (and writes nothing) when the
/// current content is already exactly the payload.
pub fn write_payload(
    target: &Path,
    payload: &Payload,
    fs_group: Option<u32>,
) -> Result<bool, InputError> {
    for path in payload.keys() {
        validate_payload_path(path)?;
    }
    create_dir_all(target, 0o755)?;
    let current = current_data_dir(target);
    if let Some(current) = &current {
        if content_matches(current, payload, fs_group)? && user_visible_links_exist(target, payload)
        {
            return Ok(false);
        }
    }
    let old_paths = match &current {
        Some(dir) => read_dir_files(dir)?.into_keys().collect(),
        None => BTreeSet::new(),
    };

    let (new_dir_name, new_dir) = create_timestamped_dir(target)?;
    for (path, file) in payload {
        let dest = new_dir.join(path);
        if let Some(parent) = dest.parent() {
            create_dir_all(parent, 0o755)?;
        }
        fs::write(&dest, &file.data).map_err(|e| io_error(&dest, e))?;
        set_mode(&dest, final_mode(file.mode, fs_group))?;
    }
    if let Some(gid) = fs_group {
        chown_tree(&new_dir, gid)?;
    }

    // Swap `..data` to the new folder with a rename.
    let tmp_link = target.join(DATA_DIR_TMP);
    remove_if_exists(&tmp_link)?;
    std::os::unix::fs::symlink(&new_dir_name, &tmp_link).map_err(|e| io_error(&tmp_link, e))?;
    if let Some(gid) = fs_group {
        lchown(&tmp_link, gid)?;
    }
    let data_link = target.join(DATA_DIR);
    fs::rename(&tmp_link, &data_link).map_err(|e| io_error(&data_link, e))?;

    // User-visible entries: one symlink per top-level name, into `..data`.
    let new_top = top_level_names(payload.keys().map(String::as_str));
    for name in &new_top {
        let link = target.join(name);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_DIR).join(name), &link)
                .map_err(|e| io_error(&link, e))?;
            if let Some(gid) = fs_group {
                lchown(&link, gid)?;
            }
        }
    }
    for name in top_level_names(old_paths.iter().map(String::as_str)) {
        if !new_top.contains(&name) {
            let link = target.join(&name);
            if fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
                fs::remove_file(&link).map_err(|e| io_error(&link, e))?;
            }
        }
    }
    if let Some(old) = current {
        if old != new_dir {
            fs::remove_dir_all(&old).map_err(|e| io_error(&old, e))?;
        }
    }
    if let Some(gid) = fs_group {
        lchown(target, gid)?;
    }
    Ok(true)
}

/// The folder `..data` points at, if the volume was written before.
fn current_data_dir(target: &Path) -> Option<PathBuf> {
    let link = fs::read_link(target.join(DATA_DIR)).ok()?;
    let dir = target.join(link);
    dir.is_dir().then_some(dir)
}

fn content_matches(
    dir: &Path,
    payload: &Payload,
    fs_group: Option<u32>,
) -> Result<bool, InputError> {
    let files = read_dir_files(dir)?;
    if files.len() != payload.len() {
        return Ok(false);
    }
    for (path, file) in payload {
        match files.get(path) {
            Some((data, mode))
                if *data == file.data && *mode == final_mode(file.mode, fs_group) => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

fn user_visible_links_exist(target: &Path, payload: &Payload) -> bool {
    top_level_names(payload.keys().map(String::as_str))
        .iter()
        .all(|name| fs::symlink_metadata(target.join(name)).is_ok())
}

/// Every regular file under `dir`: relative path → (content, permission bits).
fn read_dir_files(dir: &Path) -> Result<BTreeMap<String, (Vec<u8>, u32)>, InputError> {
    let mut files = BTreeMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let here = dir.join(&relative);
        for entry in fs::read_dir(&here).map_err(|e| io_error(&here, e))? {
            let entry = entry.map_err(|e| io_error(&here, e))?;
            let rel = relative.join(entry.file_name());
            let meta = entry.metadata().map_err(|e| io_error(&entry.path(), e))?;
            if meta.is_dir() {
                pending.push(rel);
            } else if meta.is_file() {
                let data = fs::read(entry.path()).map_err(|e| io_error(&entry.path(), e))?;
                files.insert(
                    rel.to_string_lossy().into_owned(),
                    (data, meta.permissions().mode() & 0o7777),
                );
            }
        }
    }
    Ok(files)
}

fn top_level_names<'a>(paths: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    paths
        .filter_map(|p| match Path::new(p).components().next() {
            Some(Component::Normal(name)) => Some(name.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

fn create_timestamped_dir(target: &Path) -> Result<(String, PathBuf), InputError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = time::OffsetDateTime::now_utc();
    loop {
        let name = format!(
            "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}.{}{}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.nanosecond(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
        );
        let dir = target.join(&name);
        match fs::create_dir(&dir) {
            Ok(()) => {
                set_mode(&dir, 0o755)?;
                return Ok((name, dir));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error(&dir, e)),
        }
    }
}

/// Creates `dir` and its parents with `mode` (not subject to the umask).
pub fn create_dir_all(dir: &Path, mode: u32) -> Result<(), InputError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    set_mode(dir, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), InputError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| io_error(path, e))
}

fn remove_if_exists(path: &Path) -> Result<(), InputError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(path, e)),
        _ => Ok(()),
    }
}

fn lchown(path: &Path, gid: u32) -> Result<(), InputError> {
    std::os::unix::fs::lchown(path, None, Some(gid)).map_err(|e| io_error(path, e))
}

/// Gives every entry under `root` (and `root`) the group `gid`, as the kubelet's
/// `SetVolumeOwnership` does: files stay as they are apart from the group, folders get the
/// setgid bit and group access so new files inherit the group. `writable` adds group write.
pub fn apply_fs_group(root: &Path, gid: u32, writable: bool) -> Result<(), InputError> {
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = fs::symlink_metadata(&path).map_err(|e| io_error(&path, e))?;
        lchown(&path, gid)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mut mask = if writable { 0o660 } else { 0o440 };
        if meta.is_dir() {
            mask |= 0o2000 | 0o110;
            for entry in fs::read_dir(&path).map_err(|e| io_error(&path, e))? {
                pending.push(entry.map_err(|e| io_error(&path, e))?.path());
            }
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode | mask != mode {
            set_mode(&path, mode | mask)?;
        }
    }
    Ok(())
}

fn chown_tree(root: &Path, gid: u32) -> Result<(), InputError> {
    apply_fs_group(root, gid, false)
}

/// The group owning `path`, if it exists.
pub fn group_of(path: &Path) -> Option<u32> {
    fs::metadata(path).ok().map(|m| m.gid())
}

/// An I/O error with the path it happened on.
pub fn io_error(path: &Path, error: io::Error) -> InputError {
    InputError::Io(format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(entries: &[(&str, &str, u32)]) -> Payload {
        entries
            .iter()
            .map(|(path, data, mode)| {
                (
                    path.to_string(),
                    FileProjection {
                        data: data.as_bytes().to_vec(),
                        mode: *mode,
                    },
                )
            })
            .collect()
    }

    fn read(target: &Path, path: &str) -> String {
        fs::read_to_string(target.join(path)).unwrap()
    }

    #[test]
    fn writes_through_data_symlink_and_user_visible_links() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("vol");
        let written = write_payload(
            &target,
            &payload(&[("a", "1", 0o644), ("sub/b", "2", 0o600)]),
            None,
        )
        .unwrap();
        assert!(written);
        assert_eq!(read(&target, "a"), "1");
        assert_eq!(read(&target, "sub/b"), "2");
        assert_eq!(
            fs::read_link(target.join("a")).unwrap(),
            Path::new("..data/a")
        );
        assert_eq!(
            fs::read_link(target.join("sub")).unwrap(),
            Path::new("..data/sub")
        );
        let data = fs::read_link(target.join(DATA_DIR)).unwrap();
        assert!(data.to_string_lossy().starts_with(".."), "{data:?}");
        let mode = fs::metadata(target.join("sub/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn unchanged_payload_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("vol");
        let p = payload(&[("a", "1", 0o644)]);
        assert!(write_payload(&target, &p, None).unwrap());
        let before = fs::read_link(target.join(DATA_DIR)).unwrap();
        assert!(!write_payload(&target, &p, None).unwrap());
        assert_eq!(fs::read_link(target.join(DATA_DIR)).unwrap(), before);
        // A mode change is a change.
        assert!(write_payload(&target, &payload(&[("a", "1", 0o600)]), None).unwrap());
    }

    #[test]
    fn update_swaps_data_and_removes_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("vol");
        write_payload(
            &target,
            &payload(&[("a", "1", 0o644), ("b", "2", 0o644)]),
            None,
        )
        .unwrap();
        let first = fs::read_link(target.join(DATA_DIR)).unwrap();
        write_payload(
            &target,
            &payload(&[("a", "changed", 0o644), ("c", "3", 0o644)]),
            None,
        )
        .unwrap();
        let second = fs::read_link(target.join(DATA_DIR)).unwrap();
        assert_ne!(first, second);
        assert!(!target.join(&first).exists(), "old folder removed");
        assert_eq!(read(&target, "a"), "changed");
        assert_eq!(read(&target, "c"), "3");
        assert!(
            fs::symlink_metadata(target.join("b")).is_err(),
            "removed key disappears"
        );
        assert!(!target.join(DATA_DIR_TMP).exists());
        let mut names: Vec<String> = fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".."))
            .collect();
        names.sort();
        assert_eq!(names, ["a", "c"]);
    }

    #[test]
    fn empty_payload_leaves_an_empty_volume() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("vol");
        write_payload(&target, &payload(&[("a", "1", 0o644)]), None).unwrap();
        write_payload(&target, &Payload::new(), None).unwrap();
        assert!(fs::symlink_metadata(target.join("a")).is_err());
        assert!(target.join(DATA_DIR).is_dir());
    }

    #[test]
    fn fs_group_makes_files_group_owned_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("vol");
        // The caller's own group: chown to it works without privileges.
        let gid = fs::metadata(dir.path()).unwrap().gid();
        write_payload(&target, &payload(&[("key", "v", 0o400)]), Some(gid)).unwrap();
        let meta = fs::metadata(target.join("key")).unwrap();
        assert_eq!(meta.gid(), gid);
        assert_eq!(meta.permissions().mode() & 0o777, 0o440);
        assert!(!write_payload(&target, &payload(&[("key", "v", 0o400)]), Some(gid)).unwrap());
    }

    #[test]
    fn payload_paths_are_checked() {
        for bad in ["", "/etc/passwd", "..data", "a/../b", "..", "../x"] {
            assert!(validate_payload_path(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a/b", "a..b", ".hidden"] {
            assert!(validate_payload_path(good).is_ok(), "{good:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let err = write_payload(dir.path(), &payload(&[("../escape", "x", 0o644)]), None);
        assert!(err.is_err());
        assert!(!dir.path().join("../escape").exists());
    }
}
