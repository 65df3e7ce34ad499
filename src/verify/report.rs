//! What a verify found, read back from the spill in key order: the summary, the differences for
//! people, and one JSON object for programs (written as a stream, whatever the number of entries).

use super::VerifyError;
use super::expect::KeyRules;
use super::spill::Spill;
use crate::model::FileId;
use std::io::Write;

/// Differences of each kind printed for people before "… and N more".
const HUMAN_LIMIT: u64 = 1000;

/// The result of one verify.
pub struct Report {
    spill: Spill,
    rules: KeyRules,
    /// Drive files compared (files in scope that the mirror must hold).
    pub checked: u64,
    /// Bytes read and hashed (`--checksum`).
    pub bytes_hashed: u64,
    counts: (u64, u64, u64, u64),
    /// Unknown objects and links.
    others: (u64, u64),
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (missing, mismatched, extra, skipped) = self.counts;
        let (unknown, links) = self.others;
        write!(
            f,
            "Report(checked={}, missing={missing}, mismatched={mismatched}, extra={extra}, unknown={unknown}, links={links}, skipped={skipped})",
            self.checked
        )
    }
}

impl Report {
    /// Wraps a finished pass.
    pub(super) fn new(spill: Spill, rules: KeyRules, checked: u64, bytes_hashed: u64) -> Result<Report, VerifyError> {
        let counts = spill.counts()?;
        let others = spill.unknown_and_link_counts()?;
        Ok(Report { spill, rules, checked, bytes_hashed, counts, others })
    }

    /// True when the mirror equals Drive (skipped files are not differences; objects outside the
    /// mirror's namespaces and links are: the prefix holds something Drive does not have).
    pub fn equal(&self) -> bool {
        let (missing, mismatched, extra, _) = self.counts;
        missing + mismatched + extra + self.others.0 + self.others.1 == 0
    }

    /// Missing objects.
    pub fn missing_count(&self) -> u64 {
        self.counts.0
    }

    /// Mismatched objects.
    pub fn mismatched_count(&self) -> u64 {
        self.counts.1
    }

    /// Extra objects.
    pub fn extra_count(&self) -> u64 {
        self.counts.2
    }

    /// Objects outside the mirror's namespaces (`keys::MIRROR_NAMESPACES`).
    pub fn unknown_count(&self) -> u64 {
        self.others.0
    }

    /// Symbolic links in a local folder.
    pub fn link_count(&self) -> u64 {
        self.others.1
    }

    /// Skipped files.
    pub fn skipped_count(&self) -> u64 {
        self.counts.3
    }

    /// `key` relative to the prefix (how the report names keys).
    pub fn relative<'k>(&self, key: &'k str) -> &'k str {
        self.rules.relative(key)
    }

    /// The full key of a key relative to the prefix.
    pub fn full_key(&self, relative: &str) -> String {
        self.rules.join(relative)
    }

    /// The files whose objects are missing or mismatched.
    pub fn differing_files(&self) -> impl Iterator<Item = Result<FileId, VerifyError>> + '_ {
        let ids = self.spill.missing().chain(self.spill.mismatched());
        ids.filter_map(|r| r.map(|(_, d)| d.file_id).transpose())
    }

    /// Missing objects: relative key, and what is known of the file.
    pub fn missing(&self) -> impl Iterator<Item = Result<(String, super::spill::Difference), VerifyError>> + '_ {
        self.spill.missing()
    }

    /// Mismatched objects: relative key, and what is known of the file.
    pub fn mismatched(&self) -> impl Iterator<Item = Result<(String, super::spill::Difference), VerifyError>> + '_ {
        self.spill.mismatched()
    }

    /// The extra objects' keys, relative to the prefix.
    pub fn extra_keys(&self) -> Result<Vec<String>, VerifyError> {
        self.spill.extras().collect()
    }

    /// The keys of objects outside the mirror's namespaces, relative to the prefix.
    pub fn unknown_keys(&self) -> Result<Vec<String>, VerifyError> {
        self.spill.unknowns().collect()
    }

    /// The symbolic links' keys, relative to the prefix.
    pub fn link_keys(&self) -> Result<Vec<String>, VerifyError> {
        self.spill.links().map(|r| r.map(|(k, _)| k)).collect()
    }

    /// The report as one JSON object: `{"equal", "checked", "missing": [{"key", "file_id", "reason"}],
    /// "mismatched": [{"key", "file_id", "reason"}], "extra": [{"key"}], "unknown": [{"key"}], "links":
    /// [{"key", "target"}], "skipped": [{"file_id", "name", "reason"}]}`, keys relative to the prefix.
    pub fn write_json(&self, w: &mut impl Write) -> Result<(), VerifyError> {
        let io = |e: std::io::Error| VerifyError::Spill(format!("writing the report: {e}"));
        write!(
            w,
            "{{\"equal\":{},\"checked\":{},\"bytes_hashed\":{},\"missing\":[",
            self.equal(),
            self.checked,
            self.bytes_hashed
        )
        .map_err(io)?;
        for (i, entry) in self.spill.missing().enumerate() {
            let (key, d) = entry?;
            let v = serde_json::json!({"key": key, "file_id": d.file_id, "reason": d.reason});
            write!(w, "{}{}", sep(i), v).map_err(io)?;
        }
        write!(w, "],\"mismatched\":[").map_err(io)?;
        for (i, entry) in self.spill.mismatched().enumerate() {
            let (key, d) = entry?;
            let v = serde_json::json!({"key": key, "file_id": d.file_id, "reason": d.reason});
            write!(w, "{}{}", sep(i), v).map_err(io)?;
        }
        write!(w, "],\"extra\":[").map_err(io)?;
        for (i, key) in self.spill.extras().enumerate() {
            write!(w, "{}{}", sep(i), serde_json::json!({"key": key?})).map_err(io)?;
        }
        write!(w, "],\"unknown\":[").map_err(io)?;
        for (i, key) in self.spill.unknowns().enumerate() {
            write!(w, "{}{}", sep(i), serde_json::json!({"key": key?})).map_err(io)?;
        }
        write!(w, "],\"links\":[").map_err(io)?;
        for (i, entry) in self.spill.links().enumerate() {
            let (key, target) = entry?;
            write!(w, "{}{}", sep(i), serde_json::json!({"key": key, "target": target})).map_err(io)?;
        }
        write!(w, "],\"skipped\":[").map_err(io)?;
        for (i, entry) in self.spill.skipped().enumerate() {
            let (id, s) = entry?;
            let v = serde_json::json!({"file_id": id, "name": s.name, "reason": s.reason});
            write!(w, "{}{}", sep(i), v).map_err(io)?;
        }
        writeln!(w, "]}}").map_err(io)
    }

    /// The report for people: a summary table, then the differences (at most 1,000 of each kind).
    pub fn write_human(&self, w: &mut impl Write) -> Result<(), VerifyError> {
        let io = |e: std::io::Error| VerifyError::Spill(format!("writing the report: {e}"));
        let (missing, mismatched, extra, skipped) = self.counts;
        writeln!(w, "checked     {} Drive files", self.checked).map_err(io)?;
        if self.bytes_hashed > 0 {
            writeln!(w, "hashed      {:.1} MiB", self.bytes_hashed as f64 / (1 << 20) as f64).map_err(io)?;
        }
        let (unknown, links) = self.others;
        writeln!(w, "missing     {missing}\nmismatched  {mismatched}\nextra       {extra}").map_err(io)?;
        if unknown + links > 0 {
            writeln!(w, "unknown     {unknown}\nlinks       {links}").map_err(io)?;
        }
        writeln!(w, "skipped     {skipped}").map_err(io)?;
        for entry in self.spill.missing().take(HUMAN_LIMIT as usize) {
            let (key, d) = entry?;
            let why = d.reason.map(|r| format!(" (dead-lettered: {r})")).unwrap_or_default();
            writeln!(w, "missing     {key}  [{}]{why}", id_text(&d.file_id)).map_err(io)?;
        }
        more(w, "missing", missing)?;
        for entry in self.spill.mismatched().take(HUMAN_LIMIT as usize) {
            let (key, d) = entry?;
            writeln!(w, "mismatched  {key}  [{}]: {}", id_text(&d.file_id), d.reason.unwrap_or_default())
                .map_err(io)?;
        }
        more(w, "mismatched", mismatched)?;
        for key in self.spill.extras().take(HUMAN_LIMIT as usize) {
            writeln!(w, "extra       {}", key?).map_err(io)?;
        }
        more(w, "extra", extra)?;
        for key in self.spill.unknowns().take(HUMAN_LIMIT as usize) {
            writeln!(w, "unknown     {}  (outside the mirror's folders: removed only by --prune-unknown)", key?)
                .map_err(io)?;
        }
        more(w, "unknown", unknown)?;
        for entry in self.spill.links().take(HUMAN_LIMIT as usize) {
            let (key, target) = entry?;
            writeln!(w, "link        {key} -> {target}  (never followed, never removed through)").map_err(io)?;
        }
        more(w, "links", links)?;
        for entry in self.spill.skipped().take(HUMAN_LIMIT as usize) {
            let (id, s) = entry?;
            writeln!(w, "skipped     {:?}  [{id}]: {}", s.name, s.reason).map_err(io)?;
        }
        more(w, "skipped", skipped)?;
        let verdict = if self.equal() {
            "the mirror equals Drive".to_string()
        } else {
            format!("{} difference(s)", missing + mismatched + extra + unknown + links)
        };
        writeln!(w, "{verdict}").map_err(io)
    }
}

fn sep(i: usize) -> &'static str {
    if i == 0 { "" } else { "," }
}

fn id_text(id: &Option<FileId>) -> String {
    id.as_ref().map(|i| i.0.clone()).unwrap_or_default()
}

fn more(w: &mut impl Write, kind: &str, total: u64) -> Result<(), VerifyError> {
    if total > HUMAN_LIMIT {
        writeln!(w, "… and {} more {kind} (use --json for all)", total - HUMAN_LIMIT)
            .map_err(|e| VerifyError::Spill(format!("writing the report: {e}")))?;
    }
    Ok(())
}
