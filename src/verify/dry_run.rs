//! `mirrorflow run --dry-run`: what the next run would upload, replace, move and remove, with sizes,
//! read off a reconcile (`verify`'s pass: Drive's tree against the destination's objects) and the
//! store's records. Nothing is written: neither the destination nor the state.

use super::{Report, VerifyError};
use crate::config::DeletePolicy;
use crate::model::FileId;
use crate::state::Store;
use std::collections::BTreeSet;
use std::io::Write;

/// A key the run would write, and the Drive file behind it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Target {
    /// The key, relative to the prefix.
    pub key: String,
    /// The Drive file.
    pub file_id: Option<FileId>,
    /// Bytes Drive has for it, when known.
    pub size: Option<u64>,
}

/// One thing the next run would do to one key (keys relative to the prefix).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// A file the mirror does not hold yet: fetched from Drive.
    Upload(Target),
    /// An object whose content differs from Drive's: fetched again.
    Replace(Target),
    /// A file now at another key: its object moves (a server-side copy, then the old key goes).
    Move {
        /// The key the object is at.
        from: String,
        /// Where it goes.
        to: Target,
    },
    /// An object no Drive file maps to: removed per `[destination] deletes`.
    Remove {
        /// The object's key.
        key: String,
    },
}

/// Every action of the next run, and the `deletes` policy removals follow.
#[derive(Debug, serde::Serialize)]
pub struct DryRun {
    /// In key order within each kind: uploads and replacements, moves, removals.
    pub actions: Vec<Action>,
    /// What a removal does.
    #[serde(serialize_with = "policy_name")]
    pub deletes: DeletePolicy,
}

fn policy_name<S: serde::Serializer>(p: &DeletePolicy, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(policy_verb(*p))
}

fn policy_verb(p: DeletePolicy) -> &'static str {
    match p {
        DeletePolicy::Trash => "trash",
        DeletePolicy::Delete => "delete",
        DeletePolicy::Keep => "keep",
    }
}

impl DryRun {
    /// Pairs each missing file whose record holds an extra key into a move; the rest are uploads and
    /// removals as the reconcile found them.
    pub fn from_report(report: &Report, store: Option<&Store>, deletes: DeletePolicy) -> Result<DryRun, VerifyError> {
        let mut extras: BTreeSet<String> = report.extra_keys()?.into_iter().collect();
        let mut actions = Vec::new();
        for entry in report.missing() {
            let (key, d) = entry?;
            let recorded = match (store, &d.file_id) {
                (Some(s), Some(id)) => s.file(id)?.map(|r| report.relative(&r.key.0).to_string()),
                _ => None,
            };
            let target = Target { key, file_id: d.file_id, size: d.size };
            match recorded.filter(|from| extras.remove(from)) {
                Some(from) => actions.push(Action::Move { from, to: target }),
                None => actions.push(Action::Upload(target)),
            }
        }
        for entry in report.mismatched() {
            let (key, d) = entry?;
            actions.push(Action::Replace(Target { key, file_id: d.file_id, size: d.size }));
        }
        actions.extend(extras.into_iter().map(|key| Action::Remove { key }));
        Ok(DryRun { actions, deletes })
    }

    /// Bytes the run would fetch from Drive (uploads and replacements whose size is known).
    pub fn bytes_to_fetch(&self) -> u64 {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Upload(t) | Action::Replace(t) => t.size,
                _ => None,
            })
            .sum()
    }

    /// One line per action, then a summary.
    pub fn write_human(&self, w: &mut impl Write) -> std::io::Result<()> {
        let verb = policy_verb(self.deletes);
        let (mut uploads, mut moves, mut removals) = (0, 0, 0);
        for a in &self.actions {
            match a {
                Action::Upload(t) => {
                    uploads += 1;
                    writeln!(w, "would upload   {}  ({})", t.key, human_size(t.size))?
                }
                Action::Replace(t) => {
                    uploads += 1;
                    writeln!(w, "would replace  {}  ({})", t.key, human_size(t.size))?
                }
                Action::Move { from, to } => {
                    moves += 1;
                    writeln!(w, "would move     {from}  ->  {}  ({})", to.key, human_size(to.size))?
                }
                Action::Remove { key } => {
                    removals += 1;
                    writeln!(w, "would {verb:<8} {key}")?
                }
            }
        }
        writeln!(
            w,
            "dry run: {uploads} to fetch ({}), {moves} to move, {removals} to remove (deletes = {verb}); nothing was changed",
            human_size(Some(self.bytes_to_fetch()))
        )
    }
}

fn human_size(size: Option<u64>) -> String {
    match size {
        None => "size unknown".into(),
        Some(b) if b < 1 << 10 => format!("{b} B"),
        Some(b) if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        Some(b) if b < 1 << 30 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        Some(b) => format!("{:.2} GiB", b as f64 / (1 << 30) as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_size(Some(512)), "512 B");
        assert_eq!(human_size(Some(1536)), "1.5 KiB");
        assert_eq!(human_size(Some(3 << 20)), "3.0 MiB");
        assert_eq!(human_size(None), "size unknown");
    }

    #[test]
    fn the_summary_counts_each_kind_and_the_bytes_to_fetch() {
        let plan = DryRun {
            actions: vec![
                Action::Upload(Target { key: "a".into(), file_id: None, size: Some(100) }),
                Action::Replace(Target { key: "b".into(), file_id: None, size: Some(50) }),
                Action::Move { from: "c".into(), to: Target { key: "d".into(), file_id: None, size: Some(7) } },
                Action::Remove { key: "e".into() },
            ],
            deletes: DeletePolicy::Trash,
        };
        assert_eq!(plan.bytes_to_fetch(), 150);
        let mut out = Vec::new();
        plan.write_human(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("would move     c  ->  d"), "{text}");
        assert!(text.contains("would trash    e"), "{text}");
        assert!(text.contains("2 to fetch (150 B), 1 to move, 1 to remove (deletes = trash)"), "{text}");
    }
}
