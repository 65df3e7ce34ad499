//! How Drive names become object-key segments: sanitized so that no key escapes its folder, NFC,
//! length-capped by bytes, disambiguated stably, and (for Supabase) restricted to its alphabet.

use crate::model::FileId;
use unicode_normalization::UnicodeNormalization;

/// Longest segment we produce, in bytes (local file systems cap names at 255).
pub const MAX_SEGMENT_BYTES: usize = 240;

/// Characters Supabase Storage accepts in keys, besides ASCII letters and digits.
const SUPABASE_PUNCT: &str = "_/!.*'() &$=@;:+,?-";
/// Escape character of the Supabase encoding (quoted-printable style: `=XX`).
const ESCAPE: char = '=';

/// Turns one Drive name into a safe path segment: NFC, no `/` or `\`, no control characters, no
/// characters that make a key read differently than it is (bidi controls, zero-width ones), never
/// empty, `.` or `..`, no leading/trailing whitespace.
pub fn sanitize_name(name: &str) -> String {
    let cleaned: String = name
        .nfc()
        .map(|c| match c {
            '/' | '\\' => '_',
            c if c.is_control() || is_invisible_format(c) => '_',
            c => c,
        })
        .collect();
    let trimmed = cleaned.trim();
    match trimmed {
        "" => "_".to_string(),
        "." | ".." => format!("_{trimmed}"),
        t => t.to_string(),
    }
}

/// Bidi controls (a right-to-left override shows `gpj.exe` as `exe.jpg`), zero-width characters and
/// other invisible format characters: a key holding them reads as a different key.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Encodes a sanitized segment for the destination's key alphabet.
pub fn encode_segment(segment: &str, mode: KeyMode) -> String {
    match mode {
        KeyMode::Utf8 => segment.to_string(),
        KeyMode::Supabase => supabase_encode(segment),
        KeyMode::Local => local_encode(segment),
    }
}

/// object_store's local store refuses a file name whose part after its first `#` is all digits (its
/// temporary files are named so): that `#` becomes `＃`. A real name that differs only by it is
/// told apart like any other taken name (the claims give it a ` (fileId)` suffix).
pub fn local_encode(segment: &str) -> String {
    match segment.split_once('#') {
        Some((head, digits)) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{head}\u{ff03}{digits}")
        }
        _ => segment.to_string(),
    }
}

/// Quoted-printable style: allowed ASCII stays readable; every other byte (and `=` itself) is `=XX`.
/// Injective, so distinct names stay distinct.
pub fn supabase_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        let c = b as char;
        let plain = b.is_ascii_alphanumeric() || (SUPABASE_PUNCT.contains(c) && c != ESCAPE && c != '/');
        if plain {
            out.push(c);
        } else {
            out.push_str(&format!("{ESCAPE}{b:02X}"));
        }
    }
    out
}

/// True when `key` uses only Supabase Storage's alphabet.
pub fn is_supabase_safe(key: &str) -> bool {
    key.bytes().all(|b| b.is_ascii_alphanumeric() || SUPABASE_PUNCT.contains(b as char))
}

/// Splits `name` into stem and extension (`"a.tar.gz"` → `("a.tar", ".gz")`); dotfiles have no extension.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 && name.len() - i <= 16 => name.split_at(i),
        _ => (name, ""),
    }
}

/// Truncates to at most `max` bytes on a char boundary.
fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Builds the final segment from a Drive name: sanitized, optional extension appended (exports),
/// optional disambiguating ` (fileId)` before the extension, encoded, and capped by bytes while
/// keeping the extension and suffix intact.
pub fn segment(name: &str, export_ext: Option<&str>, disambiguate: Option<&FileId>, mode: KeyMode) -> String {
    candidate_segment(name, export_ext, disambiguate.map(|id| (id, 1)), mode)
}

/// The `nth` candidate segment for a file whose plain name is taken: ` (fileId)` first (n = 1), then
/// ` (fileId) (n)`. A further candidate is needed only when another file literally holds the earlier
/// ones (a file named `x (<id>).txt`), so keys stay readable and stable: each file keeps the key
/// recorded for it.
pub fn candidate_segment(
    name: &str,
    export_ext: Option<&str>,
    disambiguate: Option<(&FileId, u32)>,
    mode: KeyMode,
) -> String {
    let mut base = sanitize_name(name);
    if let Some(ext) = export_ext {
        base = format!("{base}.{ext}");
    }
    let (stem, ext) = split_ext(&base);
    let suffix = match disambiguate {
        None => String::new(),
        Some((id, n)) if n <= 1 => format!(" ({id})"),
        Some((id, n)) => format!(" ({id}) ({n})"),
    };
    let mut budget = MAX_SEGMENT_BYTES;
    loop {
        let candidate = format!("{}{suffix}{ext}", stem_within(stem, budget));
        let encoded = encode_segment(&candidate, mode);
        if encoded.len() <= MAX_SEGMENT_BYTES || budget <= 1 {
            return encoded;
        }
        // Shrink in proportion to the overshoot (an escaped byte takes three), by at least one byte:
        // subtracting the overshoot itself cut a name of `é`s to nothing under Supabase keys.
        budget = (budget * MAX_SEGMENT_BYTES / encoded.len()).clamp(1, budget - 1);
    }
}

/// The stem cut to `budget` bytes on a char boundary, never to nothing: at least its first character
/// stays, so a capped segment always keeps part of the name.
fn stem_within(stem: &str, budget: usize) -> &str {
    let cut = truncate_bytes(stem, budget).trim_end();
    if !cut.is_empty() {
        return cut;
    }
    stem.char_indices().nth(1).map_or(stem, |(end, _)| &stem[..end])
}

/// S3's longest key, in bytes (GCS allows the same; Azure more): no key we write is longer.
pub const MAX_KEY_BYTES: usize = 1024;

/// The longest key written with `keys = "supabase"`: hosted Supabase Storage keeps each object in its
/// own S3 under `<tenant>/<bucket>/<key>/<version uuid>`, so a key near S3's 1,024 bytes fails there;
/// 900 leaves 124 bytes for that path (a 20-character project ref, a bucket name of up to 63, a
/// 36-character uuid and the slashes). `[destination] max_key_bytes` changes it.
pub const SUPABASE_MAX_KEY_BYTES: usize = 900;
// `<project ref>/<bucket of 63>/<key>/<uuid>` stays within S3's limit.
const _: () = assert!(20 + 1 + 63 + 1 + SUPABASE_MAX_KEY_BYTES + 1 + 36 <= MAX_KEY_BYTES);

/// The longest key written in `mode` unless `[destination] max_key_bytes` says otherwise.
pub fn default_max_key_bytes(mode: KeyMode) -> usize {
    match mode {
        KeyMode::Supabase => SUPABASE_MAX_KEY_BYTES,
        KeyMode::Utf8 | KeyMode::Local => MAX_KEY_BYTES,
    }
}

/// Room a folder's key always leaves for the name of an item in it: a ` (fileId)` suffix, an
/// extension and part of the name.
const MIN_CHILD_BYTES: usize = 128;

/// The key of `segment` inside the folder whose key is `parent`, never longer than `max` bytes (the
/// destination's `max_key_bytes`): deep paths shorten, stably (the same parent, segment and limit
/// give the same key), instead of failing. See [`fit_parent`] for a folder too deep to hold its items
/// under its own key, and [`shorten_segment`] for a name too long for the room left.
pub fn child_key(parent: &str, segment: &str, max: usize) -> String {
    let parent = fit_parent(parent, max);
    let room = max.saturating_sub(parent.len() + 1);
    if segment.len() <= room {
        return format!("{parent}/{segment}");
    }
    format!("{parent}/{}", shorten_segment(segment, room))
}

/// `key` itself when it fits `max` bytes, else its last segment under its folder per [`child_key`]
/// (a trashed key gains `.trash/…` in front).
pub fn fit_key(key: &str, max: usize) -> String {
    match key.rsplit_once('/') {
        Some((parent, segment)) if key.len() > max => child_key(parent, segment, max),
        _ => key.to_string(),
    }
}

/// The folder key the items of folder `parent` go under when keys are at most `max` bytes: `parent`
/// itself, or, when it leaves less than [`MIN_CHILD_BYTES`] for them, its leading whole segments
/// followed by `_deep-<hash of parent>`. The hash keeps two deep folders apart; the leading segments
/// keep the mirror browsable.
pub fn fit_parent(parent: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if parent.len() + 1 + MIN_CHILD_BYTES <= max {
        return std::borrow::Cow::Borrowed(parent);
    }
    let tag = format!("_deep-{}", short_hash(parent));
    let budget = max.saturating_sub(MIN_CHILD_BYTES + tag.len() + 2);
    let head_end = parent.match_indices('/').map(|(i, _)| i).take_while(|i| *i <= budget).last().unwrap_or(0);
    std::borrow::Cow::Owned(match &parent[..head_end] {
        "" => tag,
        head => format!("{head}/{tag}"),
    })
}

/// `segment` cut to `room` bytes: the start of its stem, `-<hash of the whole segment>` (distinct
/// segments stay distinct) and its extension.
pub fn shorten_segment(segment: &str, room: usize) -> String {
    let (stem, ext) = split_ext(segment);
    let tag = format!("-{}", short_hash(segment));
    let stem_room = room.saturating_sub(tag.len() + ext.len());
    format!("{}{tag}{ext}", truncate_bytes(stem, stem_room))
}

/// Whether `segment` is `full`, or `full` shortened by [`shorten_segment`] for some room. A subtree
/// move keeps each item's last segment under its folder's new key, so a segment shortened under a
/// long folder stays shortened after the folder moves somewhere shorter.
///
/// A segment moved twice into ever longer folders is shortened twice, and then ends in the hash of its
/// first shortening: that is accepted too (each shortening of `full` is tried, by room).
pub fn derives_from(segment: &str, full: &str) -> bool {
    if segment == full || shortened_from(segment, full) {
        return true;
    }
    (1..full.len()).any(|room| {
        let once = shorten_segment(full, room);
        once.len() > segment.len() && shortened_from(segment, &once) && shortened_from(&once, full)
    })
}

/// Whether `segment` is `shorten_segment(from, r)` for some room `r`.
fn shortened_from(segment: &str, from: &str) -> bool {
    let (_, ext) = split_ext(from);
    let tail = format!("-{}{ext}", short_hash(from));
    segment.strip_suffix(&tail).is_some_and(|stem| from.starts_with(stem))
}

/// 16 hex digits of the md5 of `s`: stable across versions and platforms.
fn short_hash(s: &str) -> String {
    use md5::Digest;
    hex::encode(&md5::Md5::digest(s.as_bytes())[..8])
}

/// The collision class of a segment: keys that differ only by case (or by nothing) would land on the
/// same file on case-insensitive stores, so they must not share a class.
pub fn collision_class(segment: &str) -> String {
    segment.to_lowercase()
}

/// The top-level folders under the prefix that the mirror writes Drive's files to (`users/` joins
/// them when the mirror holds several users' drives). Anything else under the prefix is not the
/// mirror's: `verify` reports it and `--repair` leaves it unless told otherwise.
pub const MIRROR_NAMESPACES: [&str; 3] = ["my-drive", "shared-drives", super::SHARED_WITH_ME];

/// The top-level folders the mirror keeps for itself: the trash and the kept versions.
pub const RESERVED_NAMESPACES: [&str; 2] = [".trash", ".versions"];

/// Where a key (relative to the prefix) lies, as far as the mirror is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace {
    /// Under a folder of Drive's files ([`MIRROR_NAMESPACES`]).
    Mirror,
    /// Under the trash or the kept versions ([`RESERVED_NAMESPACES`]).
    Reserved,
    /// Anywhere else: not the mirror's.
    Unknown,
}

/// The namespace of `relative` (a key relative to the prefix).
pub fn namespace_of(relative: &str) -> Namespace {
    let top = relative.split('/').next().unwrap_or_default();
    let nested = relative.len() > top.len();
    if nested && MIRROR_NAMESPACES.contains(&top) {
        Namespace::Mirror
    } else if RESERVED_NAMESPACES.contains(&top) {
        Namespace::Reserved
    } else {
        Namespace::Unknown
    }
}

/// How Drive names become keys.
#[derive(Debug, serde::Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeyMode {
    /// Any UTF-8 (S3, GCS, Azure).
    Utf8,
    /// Supabase Storage's restricted alphabet.
    Supabase,
    /// UTF-8 for a local folder (implied by a `file://` URL): a file name object_store's local store
    /// refuses (`#` followed by digits only, the form of its own temporary files: `Chapter #2`) gets
    /// that `#` as `＃` (U+FF03, as rclone's encoder does).
    Local,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_key_that_fits_is_the_plain_join() {
        assert_eq!(child_key("pre/my-drive/a", "b.txt", MAX_KEY_BYTES), "pre/my-drive/a/b.txt");
    }

    #[test]
    fn a_long_name_in_a_deep_folder_is_shortened_keeping_its_extension() {
        let parent = format!("pre/{}", "p".repeat(800));
        let long = format!("{}.pdf", "n".repeat(230));
        let key = child_key(&parent, &long, MAX_KEY_BYTES);
        assert!(key.len() <= MAX_KEY_BYTES, "{}", key.len());
        assert!(key.starts_with(&format!("{parent}/nnn")) && key.ends_with(".pdf"), "{key}");
        let twin = format!("{}x.pdf", "n".repeat(229));
        assert_ne!(child_key(&parent, &twin, MAX_KEY_BYTES), key, "two names sharing a long start stay apart");
    }

    proptest! {
        #[test]
        fn every_key_fits_however_deep_and_is_stable(
            names in proptest::collection::vec("[a-z\u{e9}]{1,120}", 1..40),
            max in prop_oneof![Just(MAX_KEY_BYTES), Just(SUPABASE_MAX_KEY_BYTES), 512usize..=1024],
        ) {
            let mut parent = "pre/my-drive".to_string();
            for name in &names {
                let segment = segment(name, None, None, KeyMode::Supabase);
                let key = child_key(&parent, &segment, max);
                prop_assert!(key.len() <= max, "{} bytes over {max}: {key}", key.len());
                prop_assert!(key.starts_with("pre/my-drive/"));
                prop_assert_eq!(&child_key(&parent, &segment, max), &key, "not stable");
                prop_assert!(key.split('/').all(|s| !s.is_empty() && s.len() <= MAX_SEGMENT_BYTES));
                parent = key;
            }
        }
    }

    #[test]
    fn supabase_keys_leave_room_for_the_hosted_stores_own_path() {
        assert_eq!(default_max_key_bytes(KeyMode::Supabase), SUPABASE_MAX_KEY_BYTES);
        assert_eq!(default_max_key_bytes(KeyMode::Utf8), MAX_KEY_BYTES);
        let parent = format!("pre/{}", "p/".repeat(440));
        let key = child_key(parent.trim_end_matches('/'), &format!("{}.pdf", "n".repeat(200)), SUPABASE_MAX_KEY_BYTES);
        assert!(key.len() <= SUPABASE_MAX_KEY_BYTES && key.ends_with(".pdf"), "{} bytes: {key}", key.len());
    }

    #[test]
    fn separators_and_dots_never_escape() {
        assert_eq!(sanitize_name("a/b\\c"), "a_b_c");
        assert_eq!(sanitize_name(".."), "_..");
        assert_eq!(sanitize_name("."), "_.");
        assert_eq!(sanitize_name("   "), "_");
        assert_eq!(sanitize_name(" x\u{7}y "), "x_y");
    }

    #[test]
    fn bidi_and_zero_width_characters_never_reach_a_key() {
        assert_eq!(sanitize_name("invoice\u{202E}fdp.exe"), "invoice_fdp.exe");
        assert_eq!(sanitize_name("a\u{200B}b\u{FEFF}c\u{2067}d\u{061C}"), "a_b_c_d_");
        assert_eq!(sanitize_name("\u{200D}"), "_");
        // Joiners inside emoji sequences are format characters too, and go the same way.
        assert_eq!(sanitize_name("👩\u{200D}💻.txt"), "👩_💻.txt");
    }

    #[test]
    fn nfc_and_nfd_twins_normalize_equal() {
        assert_eq!(sanitize_name("e\u{301}"), sanitize_name("\u{e9}"));
    }

    #[test]
    fn long_names_are_capped_keeping_extension_and_suffix() {
        let long = "é".repeat(300) + ".txt";
        let id = FileId("abc123".into());
        let s = segment(&long, None, Some(&id), KeyMode::Utf8);
        assert!(s.len() <= MAX_SEGMENT_BYTES, "{}", s.len());
        assert!(s.ends_with(" (abc123).txt"), "{s}");
        let s = segment(&long, None, None, KeyMode::Supabase);
        assert!(s.len() <= MAX_SEGMENT_BYTES && s.ends_with(".txt") && is_supabase_safe(&s));
    }

    #[test]
    fn a_long_name_of_escaped_characters_keeps_part_of_the_name_in_every_mode() {
        let id = FileId("1AbC".into());
        for name in ["é".repeat(280), "é".repeat(280) + ".pdf", "☠".repeat(200)] {
            for mode in [KeyMode::Utf8, KeyMode::Supabase, KeyMode::Local] {
                for suffix in [None, Some(&id)] {
                    let s = segment(&name, None, suffix, mode);
                    assert!(s.len() <= MAX_SEGMENT_BYTES, "{} bytes: {s}", s.len());
                    let unsuffixed =
                        suffix.map_or(s.as_str(), |id| s.split(&format!(" ({id})")).next().unwrap_or_default());
                    let stem = unsuffixed.trim_end_matches(".pdf");
                    assert!(stem.len() >= MAX_SEGMENT_BYTES / 2, "{mode:?}: only {stem:?} is left of the name");
                    assert!(!name.ends_with(".pdf") || s.ends_with(".pdf"), "{s}");
                    assert!(suffix.is_none_or(|id| s.contains(&format!(" ({id})"))), "{s}");
                }
            }
        }
    }

    #[test]
    fn names_the_local_store_refuses_are_escaped_only_there() {
        assert_eq!(segment("Chapter #2", None, None, KeyMode::Local), "Chapter \u{ff03}2");
        assert_eq!(segment("scan#0001", None, None, KeyMode::Local), "scan\u{ff03}0001");
        assert_eq!(segment("scan#0001.png", None, None, KeyMode::Local), "scan#0001.png");
        assert_eq!(segment("a#1#2", None, None, KeyMode::Local), "a#1#2");
        assert_eq!(segment("Chapter #2", None, None, KeyMode::Utf8), "Chapter #2");
        let p = object_store::path::Path::parse(segment("scan#0001", None, None, KeyMode::Local)).unwrap();
        assert!(p.filename().is_some_and(|f| f.split_once('#').is_none()));
    }

    #[test]
    fn exports_get_their_extension() {
        assert_eq!(segment("Report", Some("docx"), None, KeyMode::Utf8), "Report.docx");
        let id = FileId("X".into());
        assert_eq!(segment("Report", Some("docx"), Some(&id), KeyMode::Utf8), "Report (X).docx");
    }

    #[test]
    fn supabase_keeps_ascii_readable() {
        assert_eq!(supabase_encode("My file (1).txt"), "My file (1).txt");
        assert_eq!(supabase_encode("a#b"), "a=23b");
        assert_eq!(supabase_encode("a=b"), "a=3Db");
        assert_eq!(supabase_encode("é"), "=C3=A9");
    }

    proptest! {
        #[test]
        fn any_name_gives_a_safe_segment(name in any::<String>(), supa in any::<bool>()) {
            let mode = if supa { KeyMode::Supabase } else { KeyMode::Utf8 };
            let s = segment(&name, None, None, mode);
            prop_assert!(!s.is_empty() && s != "." && s != "..");
            prop_assert!(!s.contains('/') && !s.chars().any(|c| c.is_control()));
            prop_assert!(s.len() <= MAX_SEGMENT_BYTES);
            if supa { prop_assert!(is_supabase_safe(&s)); }
        }

        #[test]
        fn supabase_encoding_is_injective(a in any::<String>(), b in any::<String>()) {
            prop_assume!(a != b);
            prop_assert_ne!(supabase_encode(&a), supabase_encode(&b));
        }
    }

    #[test]
    fn a_shortened_segment_derives_from_its_full_name_and_from_no_other() {
        let full = format!("{}.txt", "long".repeat(80));
        let short = shorten_segment(&full, 120);
        assert!(short.len() <= 120 && short != full);
        assert!(derives_from(&short, &full));
        assert!(derives_from(&full, &full));
        let other = format!("{}.txt", "lang".repeat(80));
        assert!(!derives_from(&short, &other));
        assert!(!derives_from(&shorten_segment(&other, 120), &full));
        // Moved again, into a folder that leaves even less room: shortened a second time.
        let twice = shorten_segment(&short, 90);
        assert!(twice.len() <= 90 && derives_from(&twice, &full));
        assert!(!derives_from(&shorten_segment(&shorten_segment(&other, 120), 90), &full));
    }

    #[test]
    fn only_the_drive_folders_are_the_mirrors_namespaces() {
        assert_eq!(namespace_of("my-drive/a.txt"), Namespace::Mirror);
        assert_eq!(namespace_of("shared-drives/Team/a.txt"), Namespace::Mirror);
        assert_eq!(namespace_of("shared-with-me/a.txt"), Namespace::Mirror);
        assert_eq!(namespace_of("my-drive"), Namespace::Unknown, "a file named like the folder");
        assert_eq!(namespace_of("my-drive-old/a.txt"), Namespace::Unknown);
        assert_eq!(namespace_of("stray.txt"), Namespace::Unknown);
        assert_eq!(namespace_of(".versions/my-drive/a.txt/1"), Namespace::Reserved);
        assert_eq!(namespace_of(".trash/x"), Namespace::Reserved);
    }
}
