//! The listing of a local-folder destination that never follows a symbolic link. object_store's own
//! local listing follows every link, so the files behind `mirror/my-drive/archive -> /elsewhere`
//! were listed as objects of the mirror: `verify` called them extras and `--repair` removed them,
//! outside the destination. Here a link is an entry of its own ([`Listed::Link`]), never entered.

use super::{DestError, ListedObject, staged_name_of};
use crate::model::ObjectKey;
use std::path::{Path, PathBuf};

/// One entry of a destination's listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listed {
    /// An object.
    Object(ListedObject),
    /// A symbolic link inside a local folder (to a file or a folder): reported, never followed, never
    /// removed through.
    Link {
        /// The link's own key.
        key: ObjectKey,
        /// Where it points, as the link says.
        target: String,
    },
}

/// Entries sent ahead of the reader: bounds memory whatever the folder's size.
const AHEAD: usize = 1024;

/// Every entry under `root`, as a stream fed by one blocking walk.
pub(super) fn entries(root: PathBuf) -> impl futures::Stream<Item = Result<Listed, DestError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = walk(&root, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

/// A listing failure as the destination's error.
fn list_error(at: &Path, e: std::io::Error) -> DestError {
    DestError::Store {
        op: "list",
        key: at.display().to_string(),
        source: object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) },
    }
}

/// The key of `path` below `root`: its segments joined by `/` (as object_store names a local file).
fn key_of(root: &Path, path: &Path) -> Result<ObjectKey, DestError> {
    let rel = path.strip_prefix(root).map_err(|e| list_error(path, std::io::Error::other(e)))?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    let joined = parts.map(|p| p.join("/")).ok_or_else(|| DestError::InvalidKey(rel.display().to_string()))?;
    object_store::path::Path::parse(&joined).map_err(|_| DestError::InvalidKey(joined.clone()))?;
    Ok(ObjectKey(joined))
}

/// Walks `root` depth first without following links; stops early when the reader is gone.
fn walk(root: &Path, tx: &tokio::sync::mpsc::Sender<Result<Listed, DestError>>) -> Result<(), DestError> {
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let listing = match std::fs::read_dir(&folder) {
            Ok(listing) => listing,
            // Removed while listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(list_error(&folder, e)),
        };
        for entry in listing {
            let entry = entry.map_err(|e| list_error(&folder, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| list_error(&path, e))?;
            let item = if kind.is_symlink() {
                let target = std::fs::read_link(&path).map_err(|e| list_error(&path, e))?;
                Listed::Link { key: key_of(root, &path)?, target: target.display().to_string() }
            } else if kind.is_dir() {
                folders.push(path);
                continue;
            } else if kind.is_file() && staged_name_of(&entry.file_name().to_string_lossy()).is_none() {
                let size = match entry.metadata() {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(list_error(&path, e)),
                };
                Listed::Object(ListedObject { key: key_of(root, &path)?, size, md5: None })
            } else {
                // A staging file of a write in progress, a socket, a device: not an object.
                continue;
            };
            if tx.blocking_send(Ok(item)).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn a_link_is_listed_as_itself_and_never_entered() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious.txt"), b"not the mirror's").unwrap();
        let root = tempfile::tempdir().unwrap();
        let drive = root.path().join("my-drive");
        std::fs::create_dir_all(&drive).unwrap();
        std::fs::write(drive.join("a.txt"), b"abc").unwrap();
        std::fs::write(drive.join("a.txt#3"), b"half").unwrap();
        std::os::unix::fs::symlink(outside.path(), drive.join("archive")).unwrap();
        let mut listed: Vec<Listed> = entries(root.path().to_path_buf()).try_collect().await.unwrap();
        listed.sort_by_key(|l| format!("{l:?}"));
        let object = ListedObject { key: ObjectKey("my-drive/a.txt".into()), size: 3, md5: None };
        let link =
            Listed::Link { key: ObjectKey("my-drive/archive".into()), target: outside.path().display().to_string() };
        assert_eq!(listed, [link, Listed::Object(object)]);
    }
}
