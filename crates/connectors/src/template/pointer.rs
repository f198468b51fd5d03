//! JSON Pointers (RFC 6901) with one extension: a `*` segment stands for every element of an
//! array, so `/emails/*/address` yields all addresses.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    raw: String,
    segments: Vec<String>,
}

impl Pointer {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Ok(Self { raw: String::new(), segments: Vec::new() });
        }
        let Some(rest) = raw.strip_prefix('/') else {
            return Err(format!("{raw:?} is not a JSON pointer (it must start with '/')"));
        };
        let segments = rest.split('/').map(|s| s.replace("~1", "/").replace("~0", "~")).collect();
        Ok(Self { raw: raw.to_owned(), segments })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Every value the pointer reaches.
    pub fn all<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        let mut current = vec![root];
        for segment in &self.segments {
            let mut next = Vec::new();
            for value in current {
                match (segment.as_str(), value) {
                    ("*", Value::Array(items)) => next.extend(items.iter()),
                    (key, Value::Object(map)) => next.extend(map.get(key)),
                    (index, Value::Array(items)) => next.extend(index.parse::<usize>().ok().and_then(|i| items.get(i))),
                    _ => {}
                }
            }
            current = next;
        }
        current
    }

    pub fn first<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.all(root).into_iter().next()
    }

    /// The first value as text: strings as they are, numbers and booleans printed, null and
    /// empty strings absent.
    pub fn text(&self, root: &Value) -> Option<String> {
        self.first(root).and_then(as_text)
    }

    /// Every reached value as text.
    pub fn texts(&self, root: &Value) -> Vec<String> {
        self.all(root).into_iter().filter_map(as_text).collect()
    }
}

pub fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pointers_reach_values_and_wildcards_fan_out() {
        let doc = json!({"data": [{"id": 7, "emails": [{"a": "x@y.z"}, {"a": "q@r.s"}]}], "a/b": {"~k": "v"}});
        assert_eq!(Pointer::parse("/data/0/id").unwrap().text(&doc).as_deref(), Some("7"));
        assert_eq!(Pointer::parse("/data/0/emails/*/a").unwrap().texts(&doc), ["x@y.z", "q@r.s"]);
        assert_eq!(Pointer::parse("/a~1b/~0k").unwrap().text(&doc).as_deref(), Some("v"));
        assert_eq!(Pointer::parse("").unwrap().all(&doc).len(), 1);
        assert!(Pointer::parse("data").is_err());
        assert!(Pointer::parse("/missing/x").unwrap().text(&doc).is_none());
    }
}
