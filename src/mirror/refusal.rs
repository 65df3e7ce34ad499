//! Answers with which a store refuses one object on purpose: over its file size limit (Supabase's
//! `413 EntityTooLarge`), a key it does not take (`400 InvalidKey`, S3's `KeyTooLongError`), or no
//! right to write there (`403 AccessDenied`). Trying again cannot help and the store is not failing,
//! so such a refusal dead-letters that one file at once, with what to change, and never counts toward
//! the destination's circuit breaker. object_store keeps the HTTP status and the S3 error body only in
//! its error's text (its `RetryError` is private), so they are read from there.

use crate::model::ObjectKey;

/// Why the store refused an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Over the store's (or the bucket's) file size limit.
    TooLarge,
    /// A key the store does not take: too long for it, or characters it refuses.
    InvalidKey,
    /// The credentials may not write there.
    AccessDenied,
}

impl Refusal {
    /// The refusal `source` reports, if it is one: an S3 error code in its body, or else its status.
    pub fn of(source: &object_store::Error) -> Option<Refusal> {
        if matches!(source, object_store::Error::PermissionDenied { .. }) {
            return Some(Refusal::AccessDenied);
        }
        let text = error_chain(source);
        let by_code = s3_code(&text).and_then(|code| match code {
            "EntityTooLarge" => Some(Refusal::TooLarge),
            "InvalidKey" | "KeyTooLongError" => Some(Refusal::InvalidKey),
            "AccessDenied" => Some(Refusal::AccessDenied),
            _ => None,
        });
        by_code.or_else(|| match status(&text)? {
            413 => Some(Refusal::TooLarge),
            403 => Some(Refusal::AccessDenied),
            _ => None,
        })
    }

    /// The dead-letter reason (and retries-metric label).
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::TooLarge => "destination_too_large",
            Refusal::InvalidKey => "destination_invalid_key",
            Refusal::AccessDenied => "destination_access_denied",
        }
    }

    /// What was refused and what to change, for the dead letter of the file of `size` bytes (`None`:
    /// an export, whose size is not known in advance) at `key`; `max_key_bytes` is the limit in force.
    pub fn explain(self, key: &ObjectKey, size: Option<u64>, max_key_bytes: usize) -> String {
        match self {
            Refusal::TooLarge => {
                let what = size.map_or_else(|| "the export".to_string(), human_size);
                format!(
                    "{what} over the store's limit: raise the bucket's or the project's file size limit \
                     (Supabase: 50 MB on the free plan), or set destination.max_file_size to dead-letter such \
                     files before downloading them; then `mirrorflow dlq retry`"
                )
            }
            Refusal::InvalidKey => format!(
                "the store refused the key {key:?} ({} bytes): use keys = \"supabase\" for Supabase Storage \
                 (its alphabet), or lower destination.max_key_bytes (now {max_key_bytes}) below the store's key \
                 limit; then `mirrorflow dlq retry`",
                key.as_str().len()
            ),
            Refusal::AccessDenied => format!(
                "the store denied writing {key:?}: give the credentials write access to the bucket and prefix \
                 (S3: s3:PutObject; Supabase: an S3 access key of the project, or a policy that allows the \
                 writes); then `mirrorflow dlq retry`"
            ),
        }
    }
}

/// `bytes` for a person: `73.4 MB (73400320 bytes)`, in decimal units as Supabase states its limits.
pub fn human_size(bytes: u64) -> String {
    let units = [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")];
    let value = bytes as f64;
    match units.iter().find(|(unit, _)| value >= *unit) {
        Some((unit, name)) if value / unit >= 100.0 => format!("{:.0} {name} ({bytes} bytes)", value / unit),
        Some((unit, name)) => format!("{:.1} {name} ({bytes} bytes)", value / unit),
        None => format!("{bytes} bytes"),
    }
}

/// `e` and each error under it, as one text.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(inner) = next {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        next = inner.source();
    }
    text
}

/// The `<Code>` of an S3 XML error body in `text`.
fn s3_code(text: &str) -> Option<&str> {
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    Some(text[start..start + len].trim())
}

/// The HTTP status object_store reports in `text` (`… status code: 413 Payload Too Large …`).
fn status(text: &str) -> Option<u16> {
    let (_, after) = text.split_once("status code: ")?;
    after.get(..3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(text: &str) -> object_store::Error {
        object_store::Error::Generic { store: "S3", source: text.to_string().into() }
    }

    #[test]
    fn refusals_are_told_by_their_s3_code_or_else_their_status() {
        let body = |status: &str, code: &str| {
            format!(
                "Error performing PUT http://s/b/k in 2ms - Server returned non-2xx status code: {status}: <?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>"
            )
        };
        let cases = [
            (body("413 Payload Too Large", "EntityTooLarge"), Some(Refusal::TooLarge)),
            (body("400 Bad Request", "InvalidKey"), Some(Refusal::InvalidKey)),
            (body("400 Bad Request", "KeyTooLongError"), Some(Refusal::InvalidKey)),
            (body("413 Payload Too Large", "Other"), Some(Refusal::TooLarge)),
            (body("400 Bad Request", "InvalidArgument"), None),
            (body("503 Service Unavailable", "SlowDown"), None),
            ("error sending request: connection reset".to_string(), None),
        ];
        for (text, want) in cases {
            assert_eq!(Refusal::of(&generic(&text)), want, "{text}");
        }
        let denied = object_store::Error::PermissionDenied { path: "k".into(), source: "403".into() };
        assert_eq!(Refusal::of(&denied), Some(Refusal::AccessDenied));
    }

    #[test]
    fn a_refusal_says_what_to_change() {
        let key = ObjectKey("pre/my-drive/big.bin".into());
        let too_large = Refusal::TooLarge.explain(&key, Some(73_400_320), 900);
        assert!(too_large.starts_with("73.4 MB (73400320 bytes) over the store's limit"), "{too_large}");
        assert!(too_large.contains("destination.max_file_size"), "{too_large}");
        assert!(Refusal::InvalidKey.explain(&key, None, 900).contains("destination.max_key_bytes (now 900)"));
        assert_eq!(human_size(999), "999 bytes");
        assert_eq!(human_size(52_428_800), "52.4 MB (52428800 bytes)");
        assert_eq!(human_size(150_000_000), "150 MB (150000000 bytes)");
    }
}
