//! The subset of Drive's `q` search syntax the emulator understands.
//!
//! Supported terms, joined by `and`: `'<id>' in parents`, `trashed = true|false`,
//! `mimeType = '<m>'`, `mimeType != '<m>'`, `sharedWithMe = true|false`. Anything else is a 400 like Drive's for invalid queries.

use super::errors::ApiError;

/// A parsed `q`.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Query {
    pub parents: Vec<String>,
    pub trashed: Option<bool>,
    pub mime_eq: Vec<String>,
    pub mime_ne: Vec<String>,
    /// `sharedWithMe = true`: items shared with the user that are not theirs.
    pub shared_with_me: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Word(String),
    Eq,
    Ne,
}

fn invalid() -> ApiError {
    ApiError::invalid_value("q", "Invalid Value")
}

fn tokenize(q: &str) -> Result<Vec<Tok>, ApiError> {
    let chars: Vec<char> = q.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let (s, next) = quoted(&chars, i)?;
            toks.push(Tok::Str(s));
            i = next;
        } else if c == '=' {
            toks.push(Tok::Eq);
            i += 1;
        } else if c == '!' && chars.get(i + 1) == Some(&'=') {
            toks.push(Tok::Ne);
            i += 2;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push(Tok::Word(chars[start..i].iter().collect()));
        } else {
            return Err(invalid());
        }
    }
    Ok(toks)
}

/// A quoted string starting at `start`, with `\'` and `\\` escapes; returns it and the next index.
fn quoted(chars: &[char], start: usize) -> Result<(String, usize), ApiError> {
    let quote = chars[start];
    let mut s = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() => {
                s.push(chars[i + 1]);
                i += 2;
            }
            c if c == quote => return Ok((s, i + 1)),
            c => {
                s.push(c);
                i += 1;
            }
        }
    }
    Err(invalid())
}

/// Parse a `q` string.
pub(crate) fn parse(q: &str) -> Result<Query, ApiError> {
    let toks = tokenize(q)?;
    let mut query = Query::default();
    if toks.is_empty() {
        return Ok(query);
    }
    for term in toks.split(|t| matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case("and"))) {
        apply_term(&mut query, term)?;
    }
    Ok(query)
}

fn boolean(v: &str) -> Result<bool, ApiError> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid()),
    }
}

fn apply_term(query: &mut Query, term: &[Tok]) -> Result<(), ApiError> {
    match term {
        [Tok::Str(id), Tok::Word(kw), Tok::Word(field)] if kw.eq_ignore_ascii_case("in") && field == "parents" => {
            query.parents.push(id.clone());
        }
        [Tok::Word(field), Tok::Eq, Tok::Word(v)] if field == "trashed" => query.trashed = Some(boolean(v)?),
        [Tok::Word(field), Tok::Eq, Tok::Word(v)] if field == "sharedWithMe" => {
            query.shared_with_me = Some(boolean(v)?);
        }
        [Tok::Word(field), Tok::Eq, Tok::Str(m)] if field == "mimeType" => query.mime_eq.push(m.clone()),
        [Tok::Word(field), Tok::Ne, Tok::Str(m)] if field == "mimeType" => query.mime_ne.push(m.clone()),
        _ => return Err(invalid()),
    }
    Ok(())
}
