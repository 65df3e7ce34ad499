//! In-progress multipart uploads the state store has no id for. An upload's id is known only once
//! `CreateMultipartUpload` answers, so a process killed between that answer and the synced record of
//! the id leaves an upload nothing would abort. The uploader records a marker (key, no id) before it
//! creates an upload; at the next start the uploads open at that key are listed
//! (`ListMultipartUploads`, signed by object_store's own SigV4 signer) and aborted.

use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::signer::{SignedUrlOptions, Signer};
use std::time::Duration;

/// The ids of the uploads in progress at exactly `key` (S3 `ListMultipartUploads` with the key as
/// prefix; other keys that merely start with it are left alone).
pub async fn open_at(s3: &AmazonS3, key: &str) -> Result<Vec<String>, String> {
    let options = SignedUrlOptions::new().with_query([("uploads", ""), ("prefix", key)]);
    let url = s3
        .signed_url_opts(http::Method::GET, &Path::from(""), Duration::from_secs(300), &options)
        .await
        .map_err(|e| format!("cannot sign ListMultipartUploads: {e}"))?;
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(60)).build().map_err(|e| format!("http client: {e}"))?;
    let response = client.get(url).send().await.map_err(|e| format!("ListMultipartUploads: {e}"))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| format!("ListMultipartUploads: {e}"))?;
    if !status.is_success() {
        let excerpt: String = body.chars().take(300).collect();
        return Err(format!("ListMultipartUploads: {status}: {excerpt}"));
    }
    Ok(uploads_in(&body).into_iter().filter(|(k, _)| k == key).map(|(_, id)| id).collect())
}

/// `(key, upload id)` of every `<Upload>` in a `ListMultipartUploadsResult`.
fn uploads_in(xml: &str) -> Vec<(String, String)> {
    xml.split("<Upload>")
        .skip(1)
        .filter_map(|block| {
            let block = block.split("</Upload>").next()?;
            Some((unescape(element(block, "Key")?), unescape(element(block, "UploadId")?)))
        })
        .collect()
}

pub(super) fn element<'a>(block: &'a str, name: &str) -> Option<&'a str> {
    let start = block.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + block[start..].find(&format!("</{name}>"))?;
    Some(&block[start..end])
}

/// XML's five predefined entities and numeric character references.
pub(super) fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let Some(semi) = after.find(';') else {
            out.push_str(&rest[amp..]);
            return out;
        };
        let entity = &after[..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| entity.strip_prefix('#').map(|d| d.parse::<u32>()))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keys_and_ids_and_decodes_entities() {
        let xml = "<ListMultipartUploadsResult><Bucket>b</Bucket>\
            <Upload><Key>m/a &amp; b&#x2F;&lt;c&gt;.bin</Key><UploadId>id-1</UploadId></Upload>\
            <Upload><UploadId>id-2</UploadId><Key>m/a.bin</Key><Initiated>x</Initiated></Upload>\
            </ListMultipartUploadsResult>";
        assert_eq!(
            uploads_in(xml),
            vec![("m/a & b/<c>.bin".to_string(), "id-1".to_string()), ("m/a.bin".to_string(), "id-2".to_string())]
        );
        assert_eq!(unescape("50 &pct; &amp"), "50 &pct; &amp");
    }
}
