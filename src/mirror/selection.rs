//! What to mirror (`[source] folders`, `include`, `exclude`, `mime_types`): one predicate on a file's
//! Drive path (names as Drive has them, relative to the drive's root, `/`-separated), its mime type
//! and the ids of its ancestor folders. Pure: the planner asks it, `verify` asks it, nothing else
//! decides scope, so the mirror and the check of the mirror cannot disagree.
//!
//! Patterns and paths are compared in one Unicode form, NFC (the form keys are written in): Drive keeps
//! a name as it was typed, so `café.txt` may arrive decomposed (NFD, `e` + U+0301) while the pattern
//! was typed composed, or the other way round; both are the same name. Matching is case-sensitive.

use crate::model::FileId;
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use std::borrow::Cow;
use std::collections::HashSet;
use unicode_normalization::{UnicodeNormalization, is_nfc};

/// A bad pattern, named by its key (`source.include[2]`).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {pattern:?} is not a glob pattern: {why}")]
pub struct SelectionError {
    /// The config key and index.
    pub key: String,
    /// The pattern as written.
    pub pattern: String,
    /// globset's reason.
    pub why: String,
}

/// The files of a drive a mirror holds. `Selection::default()` holds every file.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    folders: HashSet<FileId>,
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    mime_types: Vec<String>,
    /// `[source] shortcuts`: a `.url` link (the default), nothing, or the target's bytes.
    shortcuts: ShortcutMode,
}

/// A file as the selection sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// Drive path relative to the drive root, e.g. `Projects/2024/report.pdf`.
    pub path: &'a str,
    /// Drive mime type.
    pub mime_type: &'a str,
    /// Ids of every folder above the file, nearest first, the drive's root included when known.
    pub ancestors: &'a [FileId],
}

/// `text` in NFC, borrowed when it is already (the common case: most names are ASCII).
fn nfc(text: &str) -> Cow<'_, str> {
    if is_nfc(text) { Cow::Borrowed(text) } else { Cow::Owned(text.nfc().collect()) }
}

/// A glob where `*` stays within one path segment and `**` crosses them (gitignore-like), matched
/// case-sensitively as Drive names are, compiled from the pattern's NFC form (paths are matched in NFC
/// too).
fn glob(key: &str, index: usize, pattern: &str) -> Result<Glob, SelectionError> {
    GlobBuilder::new(&nfc(pattern)).literal_separator(true).build().map_err(|e| SelectionError {
        key: format!("{key}[{index}]"),
        pattern: pattern.to_string(),
        why: e.kind().to_string(),
    })
}

fn glob_set(key: &str, patterns: &[String]) -> Result<Option<GlobSet>, SelectionError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for (i, p) in patterns.iter().enumerate() {
        builder.add(glob(key, i, p)?);
    }
    let set =
        builder.build().map_err(|e| SelectionError { key: key.into(), pattern: String::new(), why: e.to_string() })?;
    Ok(Some(set))
}

impl Selection {
    /// Builds the selection; a bad pattern is an error naming its key.
    pub fn new(
        folders: &[String],
        include: &[String],
        exclude: &[String],
        mime_types: &[String],
    ) -> Result<Selection, SelectionError> {
        Ok(Selection {
            folders: folders.iter().map(|f| FileId(f.clone())).collect(),
            include: glob_set("source.include", include)?,
            exclude: glob_set("source.exclude", exclude)?,
            mime_types: mime_types.to_vec(),
            shortcuts: ShortcutMode::Skip,
        })
    }

    /// What shortcuts become (`[source] shortcuts`).
    pub fn with_shortcuts(self, mode: ShortcutMode) -> Selection {
        Selection { shortcuts: mode, ..self }
    }

    /// Whether a shortcut is mirrored at all: as a `.url` link, or (follow) as its target's bytes.
    pub fn links_shortcuts(&self) -> bool {
        self.shortcuts != ShortcutMode::Skip
    }

    /// `shortcuts = "follow"`: a shortcut to a file mirrors the file's bytes at the shortcut's key.
    pub fn follows_shortcuts(&self) -> bool {
        self.shortcuts == ShortcutMode::Follow
    }

    /// True when every file is mirrored (no key of the selection is set).
    pub fn is_everything(&self) -> bool {
        self.folders.is_empty() && self.include.is_none() && self.exclude.is_none() && self.mime_types.is_empty()
    }

    /// True when the selection depends on where a file is (folders or patterns), so a folder that
    /// moves or is renamed may carry files into or out of it.
    pub fn depends_on_place(&self) -> bool {
        !self.folders.is_empty() || self.include.is_some() || self.exclude.is_some()
    }

    /// Whether the mirror holds this file. Its path is matched in NFC, as the patterns were compiled.
    pub fn admits(&self, c: &Candidate<'_>) -> bool {
        let in_folders = self.folders.is_empty() || c.ancestors.iter().any(|a| self.folders.contains(a));
        let path = if self.include.is_some() || self.exclude.is_some() { nfc(c.path) } else { Cow::Borrowed("") };
        let included = self.include.as_ref().is_none_or(|s| s.is_match(path.as_ref()));
        let excluded = self.exclude.as_ref().is_some_and(|s| s.is_match(path.as_ref()));
        in_folders && included && !excluded && self.mime_admits(c.mime_type)
    }

    /// `mime_types` entries are exact (`application/pdf`) or a whole family (`image/*`).
    fn mime_admits(&self, mime: &str) -> bool {
        self.mime_types.is_empty()
            || self.mime_types.iter().any(|m| match m.strip_suffix("/*") {
                Some(family) => mime.split('/').next() == Some(family),
                None => m == mime,
            })
    }
}

/// Folder depth followed when building a path (Drive has no cycles; this bounds a broken server).
const MAX_DEPTH: usize = 128;

/// The Drive path and ancestor ids of an item named `name` in folder `parent`, walking up through
/// `folder` (a known folder's name and parent; `None` at a drive's root or an unknown folder, whose id
/// is still the last ancestor).
pub fn place_of<'a>(
    parent: &FileId,
    name: &str,
    folder: impl Fn(&FileId) -> Option<(&'a str, Option<&'a FileId>)>,
) -> (String, Vec<FileId>) {
    let mut segments = vec![name.to_string()];
    let mut ancestors = vec![parent.clone()];
    let mut at = parent.clone();
    while ancestors.len() <= MAX_DEPTH {
        let Some((folder_name, up)) = folder(&at) else { break };
        segments.push(folder_name.to_string());
        let Some(up) = up else { break };
        ancestors.push(up.clone());
        at = up.clone();
    }
    segments.reverse();
    (segments.join("/"), ancestors)
}

/// `[source] shortcuts`.
#[derive(Debug, serde::Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ShortcutMode {
    /// A small internet-shortcut object, `<name>.url`, pointing at the target.
    #[default]
    Link,
    /// Nothing in the mirror (shortcuts are recorded as skipped).
    Skip,
    /// A shortcut to a file mirrors that file's bytes at the shortcut's key, kept current as the
    /// target changes; a shortcut to a folder, or one whose target is gone, is a link (never followed
    /// into a folder, so never into a loop).
    Follow,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(folders: &[&str], include: &[&str], exclude: &[&str], mimes: &[&str]) -> Selection {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Selection::new(&v(folders), &v(include), &v(exclude), &v(mimes)).unwrap()
    }

    fn admits(sel: &Selection, path: &str, mime: &str, ancestors: &[&str]) -> bool {
        let ancestors: Vec<FileId> = ancestors.iter().map(|a| FileId(a.to_string())).collect();
        sel.admits(&Candidate { path, mime_type: mime, ancestors: &ancestors })
    }

    #[test]
    fn the_default_holds_everything() {
        let all = Selection::default();
        assert!(all.is_everything() && !all.depends_on_place());
        assert!(admits(&all, "a/b.txt", "text/plain", &[]));
    }

    #[test]
    fn folders_hold_their_whole_subtree_only() {
        let sel = s(&["F"], &[], &[], &[]);
        assert!(admits(&sel, "x/F/y/z.txt", "text/plain", &["Y", "F", "root"]));
        assert!(!admits(&sel, "x/G/z.txt", "text/plain", &["G", "root"]));
    }

    #[test]
    fn include_and_exclude_match_drive_paths_with_gitignore_stars() {
        let sel = s(&[], &["**/*.pdf", "Notes/*"], &["**/node_modules/**", "**/*.tmp.pdf"], &[]);
        assert!(admits(&sel, "a/b/report.pdf", "application/pdf", &[]));
        assert!(admits(&sel, "report.pdf", "application/pdf", &[]), "** matches no folder at all");
        assert!(admits(&sel, "Notes/today.txt", "text/plain", &[]));
        assert!(!admits(&sel, "Notes/old/today.txt", "text/plain", &[]), "* stays within one folder");
        assert!(!admits(&sel, "app/node_modules/x/readme.pdf", "application/pdf", &[]));
        assert!(!admits(&sel, "draft.tmp.pdf", "application/pdf", &[]));
        assert!(!admits(&sel, "a/b/report.docx", "application/msword", &[]));
        assert!(sel.depends_on_place());
    }

    #[test]
    fn patterns_and_names_match_whatever_unicode_form_either_was_written_in() {
        let composed = "Caf\u{e9}/caf\u{e9}.txt"; // é as one code point (NFC)
        let decomposed = "Cafe\u{301}/cafe\u{301}.txt"; // e + combining acute (NFD)
        for (pattern, name) in [(composed, decomposed), (decomposed, composed), (decomposed, decomposed)] {
            let exclude = format!("**/{}", pattern.rsplit('/').next().unwrap_or_default());
            let excluding = s(&[], &[], &[&exclude], &[]);
            assert!(!admits(&excluding, name, "text/plain", &[]), "exclude {exclude:?} lets {name:?} through");
            let including = s(&[], &[pattern], &[], &[]);
            assert!(admits(&including, name, "text/plain", &[]), "include {pattern:?} misses {name:?}");
        }
        let other = s(&[], &[], &["**/cafe.txt"], &[]);
        assert!(admits(&other, decomposed, "text/plain", &[]), "a name without the accent is another name");
        let cased = s(&[], &[], &["**/CAF\u{c9}.TXT"], &[]);
        assert!(admits(&cased, decomposed, "text/plain", &[]), "matching is case-sensitive");
    }

    #[test]
    fn mime_types_are_exact_or_a_family() {
        let sel = s(&[], &[], &[], &["image/*", "application/vnd.google-apps.document"]);
        assert!(admits(&sel, "p.png", "image/png", &[]));
        assert!(admits(&sel, "Doc", "application/vnd.google-apps.document", &[]));
        assert!(!admits(&sel, "a.pdf", "application/pdf", &[]));
        assert!(!admits(&sel, "x", "imagex/png", &[]));
        assert!(!sel.depends_on_place());
    }

    #[test]
    fn a_place_is_the_chain_of_known_folders_up_to_the_root() {
        let map: std::collections::HashMap<FileId, (String, Option<FileId>)> = [
            (FileId("b".into()), ("B".to_string(), Some(FileId("a".into())))),
            (FileId("a".into()), ("A".to_string(), Some(FileId("root".into())))),
        ]
        .into_iter()
        .collect();
        let (path, ancestors) =
            place_of(&FileId("b".into()), "f.txt", |id| map.get(id).map(|(n, p)| (n.as_str(), p.as_ref())));
        assert_eq!(path, "A/B/f.txt");
        let ids: Vec<&str> = ancestors.iter().map(|a| a.0.as_str()).collect();
        assert_eq!(ids, ["b", "a", "root"]);
    }

    #[test]
    fn a_bad_pattern_names_its_key() {
        let e = Selection::new(&[], &[], &["ok/**".into(), "a[".into()], &[]).unwrap_err();
        assert_eq!(e.key, "source.exclude[1]");
    }
}
