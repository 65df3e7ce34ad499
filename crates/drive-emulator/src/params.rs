//! Query-string access with Google-style 400s instead of framework rejections.

use super::errors::ApiError;

/// Decoded query parameters of one request, in order.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Parse a raw query string (`None` = no query).
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = raw.map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
        Params(pairs)
    }

    /// First value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A required string parameter.
    pub fn require(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key).ok_or_else(|| ApiError::required(key, format!("Required parameter: {key}")))
    }

    /// A boolean parameter (`true`/`false`), with a default when absent.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
            Some(v) => Err(ApiError::invalid_value(key, format!("Invalid value '{v}'. Values must be true or false."))),
        }
    }

    /// An integer parameter within `[min, max]`, with a default when absent.
    pub fn int_in(&self, key: &str, default: usize, min: usize, max: usize) -> Result<usize, ApiError> {
        let Some(raw) = self.get(key) else {
            return Ok(default);
        };
        let n: usize = raw.trim().parse().map_err(|_| {
            ApiError::invalid_value(
                key,
                format!("Invalid value '{raw}'. Values must be within the range: [{min}, {max}]"),
            )
        })?;
        if n < min || n > max {
            return Err(ApiError::invalid_value(
                key,
                format!("Invalid value '{raw}'. Values must be within the range: [{min}, {max}]"),
            ));
        }
        Ok(n)
    }
}
