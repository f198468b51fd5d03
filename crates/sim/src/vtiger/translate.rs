//! The custom registered operation `gettranslation` (contract §8, from the seed article):
//! POST `totranslate` (JSON-encoded list), `language`, `module` → `{string: translation}`.
//!
//! The handler is PHP's `foreach ($totranslate as $str) $translated[$str] = …; return
//! $translated;`, so a list that is empty or not a list yields `null`, and strings without a
//! translation come back unchanged (as `getTranslatedString` does).

use serde_json::Value;

use super::json::Out;

/// `(language, key, translation)`: a small built-in table of module labels.
const TABLE: &[(&str, &str, &str)] = &[
    ("ru_ru", "Contacts", "Контакты"),
    ("ru_ru", "SINGLE_Contacts", "Контакт"),
    ("ru_ru", "Accounts", "Контрагенты"),
    ("ru_ru", "SINGLE_Accounts", "Контрагент"),
    ("ru_ru", "HelpDesk", "Заявки"),
    ("ru_ru", "SINGLE_HelpDesk", "Заявка"),
    ("ru_ru", "Calendar", "Календарь"),
    ("ru_ru", "Events", "События"),
    ("ru_ru", "SINGLE_Events", "Событие"),
    ("ru_ru", "ModComments", "Комментарии"),
    ("ru_ru", "Call", "Звонок"),
    ("ru_ru", "Meeting", "Встреча"),
    ("en_us", "Contacts", "Contacts"),
    ("en_us", "SINGLE_Contacts", "Contact"),
    ("en_us", "Accounts", "Organizations"),
    ("en_us", "SINGLE_Accounts", "Organization"),
    ("en_us", "HelpDesk", "Tickets"),
    ("en_us", "SINGLE_HelpDesk", "Ticket"),
    ("en_us", "Calendar", "Calendar"),
    ("en_us", "Events", "Events"),
    ("en_us", "SINGLE_Events", "Event"),
    ("en_us", "ModComments", "Comments"),
    ("de_de", "Contacts", "Personen"),
    ("de_de", "SINGLE_Contacts", "Person"),
    ("de_de", "Accounts", "Organisationen"),
    ("de_de", "SINGLE_Accounts", "Organisation"),
    ("de_de", "HelpDesk", "Trouble Tickets"),
    ("de_de", "SINGLE_HelpDesk", "Trouble Ticket"),
    ("de_de", "Calendar", "Kalender"),
    ("de_de", "Events", "Termine"),
    ("de_de", "Call", "Anruf"),
];

/// Vtiger's default language when none is given.
const DEFAULT_LANGUAGE: &str = "en_us";

fn translate_one(language: &str, key: &str) -> String {
    TABLE
        .iter()
        .find(|(l, k, _)| l.eq_ignore_ascii_case(language) && *k == key)
        .map_or_else(|| key.to_owned(), |(_, _, t)| (*t).to_owned())
}

pub(crate) fn gettranslation(totranslate: Option<&str>, language: Option<&str>) -> Out {
    let language = language.unwrap_or(DEFAULT_LANGUAGE);
    let decoded: Option<Value> = totranslate.and_then(|t| serde_json::from_str(t).ok());
    let items: Vec<String> = match decoded {
        Some(Value::Array(items)) => items.iter().filter_map(scalar).collect(),
        Some(Value::Object(map)) => map.values().filter_map(scalar).collect(),
        _ => Vec::new(),
    };
    if items.is_empty() {
        return Out::Null;
    }
    let mut pairs: Vec<(String, Out)> = Vec::new();
    for key in items {
        let value = Out::Str(translate_one(language, &key));
        // PHP array semantics: a repeated key keeps its first position.
        match pairs.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => pairs.push((key, value)),
        }
    }
    Out::Obj(pairs)
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(true) => Some("1".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_the_article_example() {
        let out = gettranslation(Some(r#"["SINGLE_Contacts", "Contacts"]"#), Some("ru_ru"));
        assert_eq!(out.to_json_string(), r#"{"SINGLE_Contacts":"Контакт","Contacts":"Контакты"}"#);
    }

    #[test]
    fn unknown_strings_map_to_themselves_and_empty_is_null() {
        let out = gettranslation(Some(r#"["LBL_NOPE"]"#), Some("ru_ru"));
        assert_eq!(out.to_json_string(), r#"{"LBL_NOPE":"LBL_NOPE"}"#);
        assert_eq!(gettranslation(Some("[]"), None), Out::Null);
        assert_eq!(gettranslation(Some("not json"), None), Out::Null);
    }
}
