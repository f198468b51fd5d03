//! Raw rows as both backends return them. Conversion to domain types re-parses every value,
//! so a hand-edited or corrupt row surfaces as `StoreError::Corrupt`, never as a panic.

use std::str::FromStr;

use crate::StoreError;

pub(crate) fn parse_id<T: FromStr>(entity: &'static str, raw: &str) -> Result<T, StoreError> {
    raw.parse().map_err(|_| StoreError::corrupt(entity, raw, "id is not a UUID"))
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    entity: &'static str,
    id: &str,
    raw: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::corrupt(entity, id, e))
}
