//! An output-only JSON value that keeps object keys in insertion order.
//!
//! Vtiger returns record keys in field order (the contract lists the Contacts order), and clients
//! are compared against it. `serde_json::Value` sorts keys unless its `preserve_order` feature is
//! on, and turning that feature on here would silently change key order for every other crate in
//! the workspace (features are unified), so responses are built from this small type instead.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Out {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Arr(Vec<Out>),
    Obj(Vec<(String, Out)>),
}

impl Out {
    pub(crate) fn str(s: impl Into<String>) -> Self {
        Out::Str(s.into())
    }

    /// Builds an object from `(key, value)` pairs, keeping their order.
    pub(crate) fn obj<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Out)>) -> Self {
        Out::Obj(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub(crate) fn to_json_string(&self) -> String {
        // Serializing this type cannot fail: every key is a string and there are no floats.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("null"))
    }
}

impl Serialize for Out {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Out::Null => serializer.serialize_unit(),
            Out::Bool(b) => serializer.serialize_bool(*b),
            Out::Int(i) => serializer.serialize_i64(*i),
            Out::Str(s) => serializer.serialize_str(s),
            Out::Arr(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Out::Obj(pairs) => {
                let mut map = serializer.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_keep_insertion_order() {
        let o = Out::obj([("z", Out::str("1")), ("a", Out::Int(2)), ("m", Out::Null)]);
        assert_eq!(o.to_json_string(), r#"{"z":"1","a":2,"m":null}"#);
    }
}
