//! Which formats each kind of Google Workspace file can be exported to, as Google's "Export MIME types
//! for Google Workspace documents" table lists them. The table is the one authority: `validate` checks
//! the configured format of each kind against it, the planner picks the export MIME type from it, and a
//! Google type that is not in it (Forms, Sites, Maps, …) has no export at all and is skipped visibly.

/// One export format of one kind of Google file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportFormat {
    /// The extension the mirrored object gets, and the name used in `[source.export]`.
    pub ext: &'static str,
    /// Other names accepted in `[source.export]` for the same format (`jpeg` for `jpg`).
    pub aliases: &'static [&'static str],
    /// The `mimeType` passed to `files.export` (and the key of `exportLinks`).
    pub mime: &'static str,
    /// Set when Google exports only part of the file in this format ("first sheet only").
    pub partial: Option<&'static str>,
}

const fn format(ext: &'static str, mime: &'static str) -> ExportFormat {
    ExportFormat { ext, aliases: &[], mime, partial: None }
}

const fn partial(ext: &'static str, mime: &'static str, what: &'static str) -> ExportFormat {
    ExportFormat { ext, aliases: &[], mime, partial: Some(what) }
}

const PDF: ExportFormat = format("pdf", "application/pdf");
const JPG: ExportFormat = ExportFormat { ext: "jpg", aliases: &["jpeg"], mime: "image/jpeg", partial: None };
const PNG: ExportFormat = format("png", "image/png");
const SVG: ExportFormat = format("svg", "image/svg+xml");
const FIRST_SLIDE: &str = "only the first slide";

/// One kind of Google Workspace file that Drive can export, and its formats.
#[derive(Debug)]
pub struct ExportableKind {
    /// The key under `[source.export]`.
    pub config_key: &'static str,
    /// Drive's `mimeType` of the file.
    pub google_mime: &'static str,
    /// The format used when the configuration names none.
    pub default_ext: &'static str,
    /// Every format Google documents for this kind.
    pub formats: &'static [ExportFormat],
}

/// Google's table, kind by kind.
pub const EXPORTABLE: &[ExportableKind] = &[
    ExportableKind {
        config_key: "document",
        google_mime: "application/vnd.google-apps.document",
        default_ext: "docx",
        formats: &[
            format("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
            format("odt", "application/vnd.oasis.opendocument.text"),
            format("rtf", "application/rtf"),
            PDF,
            format("txt", "text/plain"),
            format("html", "text/html"),
            format("zip", "application/zip"),
            format("epub", "application/epub+zip"),
            format("md", "text/markdown"),
        ],
    },
    ExportableKind {
        config_key: "spreadsheet",
        google_mime: "application/vnd.google-apps.spreadsheet",
        default_ext: "xlsx",
        formats: &[
            format("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            format("ods", "application/vnd.oasis.opendocument.spreadsheet"),
            PDF,
            format("zip", "application/zip"),
            partial("csv", "text/csv", "only the first sheet"),
            partial("tsv", "text/tab-separated-values", "only the first sheet"),
        ],
    },
    ExportableKind {
        config_key: "presentation",
        google_mime: "application/vnd.google-apps.presentation",
        default_ext: "pptx",
        formats: &[
            format("pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
            format("odp", "application/vnd.oasis.opendocument.presentation"),
            PDF,
            format("txt", "text/plain"),
            ExportFormat { partial: Some(FIRST_SLIDE), ..JPG },
            ExportFormat { partial: Some(FIRST_SLIDE), ..PNG },
            ExportFormat { partial: Some(FIRST_SLIDE), ..SVG },
        ],
    },
    ExportableKind {
        config_key: "drawing",
        google_mime: "application/vnd.google-apps.drawing",
        default_ext: "pdf",
        formats: &[PDF, JPG, PNG, SVG],
    },
    ExportableKind {
        config_key: "script",
        google_mime: "application/vnd.google-apps.script",
        default_ext: "json",
        formats: &[format("json", "application/vnd.google-apps.script+json")],
    },
];

/// A Google type Drive has no `files.export` for but hands over through `files.download` (a
/// long-running operation) in one format: Google Vids, as MP4 ("Download and export files": the only
/// way to download Google Vids).
#[derive(Debug)]
pub struct DownloadOnlyKind {
    /// Drive's `mimeType` of the file.
    pub google_mime: &'static str,
    /// The extension the mirrored object gets.
    pub ext: &'static str,
    /// What Drive hands over.
    pub mime: &'static str,
}

/// Every download-only kind.
pub const DOWNLOAD_ONLY: &[DownloadOnlyKind] =
    &[DownloadOnlyKind { google_mime: "application/vnd.google-apps.vid", ext: "mp4", mime: "video/mp4" }];

/// The download-only kind of a Google file's `mimeType`, if it is one.
pub fn download_only(google_mime: &str) -> Option<&'static DownloadOnlyKind> {
    DOWNLOAD_ONLY.iter().find(|k| k.google_mime == google_mime)
}

/// The exportable kind of a Google file's `mimeType`; `None` for binaries and for Google types that
/// Drive cannot export (Forms, Sites, Maps, Jamboards, shortcuts, folders).
pub fn kind_of(google_mime: &str) -> Option<&'static ExportableKind> {
    EXPORTABLE.iter().find(|k| k.google_mime == google_mime)
}

/// The kind configured under `[source.export] <config_key>`.
pub fn kind_named(config_key: &str) -> Option<&'static ExportableKind> {
    EXPORTABLE.iter().find(|k| k.config_key == config_key)
}

impl ExportableKind {
    /// The format a `[source.export]` value names for this kind (case-insensitive, aliases included).
    pub fn format(&self, name: &str) -> Option<&'static ExportFormat> {
        let name = name.trim_start_matches('.').to_ascii_lowercase();
        self.formats.iter().find(|f| f.ext == name || f.aliases.contains(&name.as_str()))
    }

    /// The extensions this kind can be exported to, for error messages.
    pub fn format_names(&self) -> String {
        self.formats.iter().map(|f| f.ext).collect::<Vec<_>>().join(", ")
    }
}

/// `[source.export]`: which format each kind of Google Workspace file is exported to. The formats each
/// kind allows are Google's (`EXPORTABLE`); `validate` refuses any other.
#[derive(Debug, serde::Deserialize, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    /// Docs.
    pub document: String,
    /// Sheets.
    pub spreadsheet: String,
    /// Slides.
    pub presentation: String,
    /// Drawings.
    pub drawing: String,
    /// Apps Script projects.
    pub script: String,
    /// Accept formats that hold only part of a file (CSV/TSV: the first sheet; a Slides image: the
    /// first slide). Off by default, so nobody loses the rest of a file without having asked for it.
    pub allow_partial: bool,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            document: "docx".into(),
            spreadsheet: "xlsx".into(),
            presentation: "pptx".into(),
            drawing: "pdf".into(),
            script: "json".into(),
            allow_partial: false,
        }
    }
}

impl ExportConfig {
    /// The configured value of one `[source.export]` key (one per exportable kind).
    fn value(&self, config_key: &str) -> &str {
        match config_key {
            "document" => &self.document,
            "spreadsheet" => &self.spreadsheet,
            "presentation" => &self.presentation,
            "drawing" => &self.drawing,
            "script" => &self.script,
            _ => "",
        }
    }

    /// The export format for a Google file's `mimeType`; `None` when Drive cannot export that type.
    /// A configured value that `validate` would refuse falls back to the kind's default.
    pub fn format_for(&self, google_mime: &str) -> Option<&'static ExportFormat> {
        let kind = kind_of(google_mime)?;
        kind.format(self.value(kind.config_key)).or_else(|| kind.format(kind.default_ext))
    }

    /// One line per configured format that Google does not offer for its kind, or that exports only
    /// part of the file while `allow_partial` is off.
    pub fn problems(&self, p: &mut Vec<String>) {
        for kind in EXPORTABLE {
            let value = self.value(kind.config_key);
            match kind.format(value) {
                None => p.push(format!(
                    "source.export.{}: Google cannot export a {} as {value:?}; choose one of: {}",
                    kind.config_key,
                    kind.config_key,
                    kind.format_names()
                )),
                Some(f) => {
                    if let (Some(what), false) = (f.partial, self.allow_partial) {
                        p.push(format!(
                            "source.export.{}: {value:?} holds {what} of each {}; \
                             set source.export.allow_partial = true to accept that",
                            kind.config_key, kind.config_key
                        ));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_is_a_complete_format_of_its_kind() {
        for kind in EXPORTABLE {
            let f = kind.format(kind.default_ext).expect("default is listed");
            assert!(f.partial.is_none(), "{} defaults to a partial export", kind.config_key);
        }
    }

    #[test]
    fn formats_are_looked_up_per_kind() {
        let sheet = kind_named("spreadsheet").unwrap();
        assert_eq!(sheet.format("ods").unwrap().mime, "application/vnd.oasis.opendocument.spreadsheet");
        assert!(sheet.format("csv").unwrap().partial.is_some());
        assert!(sheet.format("docx").is_none());
        assert!(kind_named("document").unwrap().format("csv").is_none(), "CSV is for Sheets only");
        assert_eq!(kind_named("drawing").unwrap().format("JPEG").unwrap().ext, "jpg");
        assert!(kind_named("presentation").unwrap().format("png").unwrap().partial.is_some());
        assert!(kind_named("drawing").unwrap().format("png").unwrap().partial.is_none());
        assert_eq!(
            kind_of("application/vnd.google-apps.script").unwrap().format("json").unwrap().mime,
            "application/vnd.google-apps.script+json"
        );
        assert!(kind_of("application/vnd.google-apps.form").is_none());
    }
}
