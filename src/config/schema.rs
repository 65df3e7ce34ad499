//! `mirrorflow config schema`: a JSON Schema (draft-04, the newest Taplo reads) of `pipeline.toml`,
//! generated from [`super::keys`], so an editor's TOML language server completes, documents and checks
//! the same keys and ranges `validate` does. Unknown keys are refused (`additionalProperties: false`),
//! as the parser refuses them.

use super::keys::{self, Key, Kind, Limits};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Byte sizes as strings: digits, then an optional unit `parse_byte_size` knows (any case).
pub const BYTES_PATTERN: &str = r"^\s*[0-9]+\s*([bB]|[kKmMgG]([iI]?[bB])?)?\s*$";
/// Durations: one or more `<number><unit>` parts (`"30s"`, `"1h 30m"`), as humantime reads them.
pub const DURATION_PATTERN: &str = r"^\s*([0-9]+\s*[a-zA-Zµ]+\s*)+$";

/// The schema document.
pub fn schema() -> Value {
    let mut root = Node {
        description: "mirrorflow's pipeline configuration (pipeline.toml). Reference: docs/CONFIG.md.".into(),
        ..Node::default()
    };
    for table in keys::tables() {
        root.at(table.path).description = table.doc.to_string();
        if table.required {
            let (parent, name) = table.path.rsplit_once('.').unwrap_or(("", table.path));
            root.at(parent).required.push(name.to_string());
        }
    }
    for key in keys::all() {
        let (table, name) = key.split();
        let node = root.at(table);
        if key.required {
            node.required.push(name.to_string());
        }
        node.keys.insert(name.to_string(), property(&key));
    }
    let mut doc = root.into_schema();
    doc.insert("$schema".into(), json!("http://json-schema.org/draft-04/schema#"));
    doc.insert("title".into(), json!("mirrorflow pipeline.toml"));
    Value::Object(doc)
}

/// The schema as printed: pretty JSON ending with a newline.
pub fn schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// A table while the schema is built: its keys' schemas and its sub-tables.
#[derive(Default)]
struct Node {
    description: String,
    required: Vec<String>,
    keys: BTreeMap<String, Value>,
    tables: BTreeMap<String, Node>,
}

impl Node {
    /// The table at dotted `path` below this one (`""`: this one), created on the way.
    fn at(&mut self, path: &str) -> &mut Node {
        path.split('.')
            .filter(|p| !p.is_empty())
            .fold(self, |node, part| node.tables.entry(part.to_string()).or_default())
    }

    /// The table's schema: an object that refuses unknown keys, as the parser does.
    fn into_schema(self) -> Map<String, Value> {
        let mut properties: Map<String, Value> = self.keys.into_iter().collect();
        for (name, table) in self.tables {
            properties.insert(name, Value::Object(table.into_schema()));
        }
        let mut m = Map::new();
        m.insert("type".into(), json!("object"));
        m.insert("description".into(), json!(self.description));
        m.insert("additionalProperties".into(), json!(false));
        if !self.required.is_empty() {
            m.insert("required".into(), json!(self.required));
        }
        m.insert("properties".into(), Value::Object(properties));
        m
    }
}

/// One key's schema: type, range, description, default and example.
fn property(key: &Key) -> Value {
    let mut p = Map::new();
    if let Some(why) = key.refused {
        p.insert("not".into(), json!({}));
        p.insert("description".into(), json!(format!("Refused by validate: {why}.")));
        return Value::Object(p);
    }
    match &key.kind {
        Kind::Text | Kind::Path | Kind::Url | Kind::Address | Kind::Secret => {
            p.insert("type".into(), json!("string"));
        }
        Kind::Bool => {
            p.insert("type".into(), json!("boolean"));
        }
        Kind::Texts => {
            p.insert("type".into(), json!("array"));
            p.insert("items".into(), json!({"type": "string"}));
        }
        Kind::TextOrTexts => {
            p.insert("anyOf".into(), json!([{"type": "string"}, {"type": "array", "items": {"type": "string"}}]));
        }
        Kind::Choice(values) => {
            p.insert("type".into(), json!("string"));
            p.insert("enum".into(), json!(values));
        }
        Kind::Count(l) => {
            p.insert("type".into(), json!("integer"));
            bounds(&mut p, l.min.into(), l.max.map(Into::into));
        }
        Kind::Rate(l) => {
            p.insert("type".into(), json!("number"));
            bounds(&mut p, json!(l.min), l.max.map(|m| json!(m)));
        }
        Kind::Bytes(l) => {
            let mut int = Map::new();
            int.insert("type".into(), json!("integer"));
            bounds(&mut int, l.min.into(), l.max.map(Into::into));
            p.insert("anyOf".into(), json!([int, {"type": "string", "pattern": BYTES_PATTERN}]));
            human_bounds(&mut p, l, true);
        }
        Kind::Time(l) => {
            p.insert("type".into(), json!("string"));
            p.insert("pattern".into(), json!(DURATION_PATTERN));
            human_bounds(&mut p, l, false);
        }
    }
    p.insert("description".into(), json!(description(key)));
    if let Some(default) = key.default.or(key.implied).and_then(toml_value) {
        p.insert("default".into(), default);
    }
    if let Some(example) = toml_value(&key.example) {
        p.insert("examples".into(), json!([example]));
    }
    Value::Object(p)
}

fn bounds(p: &mut Map<String, Value>, min: Value, max: Option<Value>) {
    p.insert("minimum".into(), min);
    if let Some(max) = max {
        p.insert("maximum".into(), max);
    }
}

/// A duration's or byte size's bounds as written in the file (`"100ms"`, `"5MiB"`): JSON Schema has
/// no keyword for a range of strings, so they are extensions, which editors show and tests check.
fn human_bounds<T: super::Bound>(p: &mut Map<String, Value>, l: &Limits<T>, bytes: bool) {
    p.insert("x-minimum".into(), json!(l.min.show(bytes)));
    if let Some(max) = l.max {
        p.insert("x-maximum".into(), json!(max.show(bytes)));
    }
}

/// The key's meaning, with its unit, range and default when absent, in one paragraph.
fn description(key: &Key) -> String {
    let mut d = key.doc.clone();
    if let Some(unit) = key.unit {
        d.push_str(&format!(" Unit: {unit}."));
    }
    if let Some(range) = key.range_text() {
        d.push_str(&format!(" Range: {range}."));
    }
    if key.default.is_none()
        && let Some(absent) = key.absent
    {
        d.push_str(&format!(" When absent: {absent}."));
    }
    d
}

/// A TOML value (`"30s"`, `1000`, `["all"]`) as JSON.
pub(crate) fn toml_value(literal: &str) -> Option<Value> {
    let table: toml::Table = toml::from_str(&format!("v = {literal}")).ok()?;
    serde_json::to_value(table.get("v")?).ok()
}
