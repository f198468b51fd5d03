//! Every VTQL query the connector sends, built in one place so that one test can check each
//! shape against the grammar Vtiger 8.2 parses (contract §6: flat conditions, `AND` binding
//! tighter than `OR`, at most 100 rows a page, the query in the URL).

use crmhub_core::crm::CrmError;

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::Record;
use super::vtql::{Cond, Query, contains, digits_in_order};

pub const PHONE_FIELDS: &[&str] = &["phone", "mobile", "homephone", "otherphone", "assistantphone", "fax"];
pub const EMAIL_FIELDS: &[&str] = &["email", "secondaryemail"];
/// What a search result needs; selecting only these keeps Vtiger from sending every field of
/// every matching contact.
pub const SUMMARY_FIELDS: &[&str] = &[
    "id",
    "firstname",
    "lastname",
    "email",
    "secondaryemail",
    "phone",
    "mobile",
    "homephone",
    "otherphone",
    "assistantphone",
    "fax",
    "account_id",
];
/// A row of a contact search: the [`SUMMARY_FIELDS`] as text, read with no map and no key
/// copies per row (a page of 100 of them is most of a search's own work). A value that is not
/// text counts as absent, as [`super::text`] reads a record; other fields are skipped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SummaryRow<'a>([Option<Cow<'a, str>>; SUMMARY_FIELDS.len()]);

/// A contact's summary fields, read alike from a record and from a search row.
pub trait SummaryFields {
    /// The field trimmed, `None` when absent, not text or blank.
    fn text(&self, field: &str) -> Option<&str>;
}

impl SummaryFields for Record {
    fn text(&self, field: &str) -> Option<&str> {
        super::text(self, field)
    }
}

impl SummaryFields for SummaryRow<'_> {
    fn text(&self, field: &str) -> Option<&str> {
        let at = SUMMARY_FIELDS.iter().position(|f| *f == field)?;
        self.0[at].as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
}

impl SummaryRow<'_> {
    /// The row with its text copied out of the page, to outlive it.
    pub fn into_owned(self) -> SummaryRow<'static> {
        SummaryRow(self.0.map(|v| v.map(|v| Cow::Owned(v.into_owned()))))
    }
}

/// Borrows the page's text where it has no escapes, so a row that does not match costs no copy.
impl<'de: 'a, 'a> Deserialize<'de> for SummaryRow<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Row;
        impl<'de> Visitor<'de> for Row {
            type Value = SummaryRow<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Vtiger record")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SummaryRow<'de>, A::Error> {
                let mut row = SummaryRow::default();
                while let Some(FieldAt(at)) = map.next_key()? {
                    match at {
                        Some(at) => row.0[at] = map.next_value::<TextValue<'_>>()?.0,
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(row)
            }
        }
        deserializer.deserialize_map(Row)
    }
}

/// A record's key, as its place in [`SUMMARY_FIELDS`] (`None`: not one of them).
struct FieldAt(Option<usize>);

impl<'de> Deserialize<'de> for FieldAt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = FieldAt;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<FieldAt, E> {
                Ok(FieldAt(SUMMARY_FIELDS.iter().position(|f| *f == name)))
            }
        }
        deserializer.deserialize_str(Key)
    }
}

/// A value kept when it is text.
struct TextValue<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for TextValue<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = TextValue<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TextValue(Some(Cow::Borrowed(v))))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TextValue(Some(Cow::Owned(v.to_owned()))))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(TextValue(Some(Cow::Owned(v))))
            }

            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(TextValue(None))
            }

            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(TextValue(None))
            }

            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(TextValue(None))
            }

            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(TextValue(None))
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(TextValue(None))
            }

            fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(TextValue(None))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TextValue(None))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(TextValue(None))
            }
        }
        deserializer.deserialize_any(Text)
    }
}

/// Words of a search term that go into the query. Each word must be in the first or the last
/// name, and the flat form of that has 2^words alternatives; further words are checked on the
/// rows that come back.
pub const QUERY_WORDS: usize = 3;
/// Accounts whose name matches a search term, at most, whose contacts a search includes.
pub const MATCHING_ACCOUNTS: u32 = 20;

/// The parts of a search term the queries and the row filter use.
#[derive(Debug, Clone)]
pub struct SearchTerm {
    pub whole: String,
    pub words: Vec<String>,
    /// The digits of a term that looks like a phone number.
    pub phone_digits: Option<String>,
}

impl SearchTerm {
    pub fn parse(term: &str) -> Option<Self> {
        let whole = term.trim();
        if whole.is_empty() {
            return None;
        }
        let words: Vec<String> = whole.split_whitespace().take(6).map(str::to_owned).collect();
        let digits: String = whole.chars().filter(char::is_ascii_digit).collect();
        let phone_like = digits.len() >= 3 && whole.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c));
        Some(Self { whole: whole.to_owned(), words, phone_digits: phone_like.then_some(digits) })
    }

    /// Whether the term could be (part of) a company name: not a phone number or an e-mail
    /// address, which would cost a pointless Accounts query on every such search.
    pub fn may_be_a_company(&self) -> bool {
        self.phone_digits.is_none() && !self.whole.contains('@') && self.whole.chars().count() >= 2
    }
}

/// Accounts whose name contains the term (their contacts belong in the results).
pub fn accounts_named(term: &SearchTerm) -> Result<Query, CrmError> {
    Ok(Query::select(&["id", "accountname"], "Accounts")?
        .filter(Cond::like("accountname", contains(&term.whole))?)
        .order_by("id", false)?
        .limit(0, MATCHING_ACCOUNTS))
}

/// Rows asked for by a search's first query: as many as the answer can take. Most rows the
/// CRM returns are true matches, so one page of `limit` rows usually completes the answer —
/// a fifth of a full page's work on the CRM, on the wire and in crmhub for the default 20. The
/// pages after it, needed only when the CRM's matches were wider than the term, are full.
pub fn first_search_page(limit: usize) -> u32 {
    u32::try_from(limit).unwrap_or(u32::MAX).clamp(1, super::vtql::PAGE)
}

/// Contacts matching the term by name (every word in the first or last name), e-mail, phone
/// digits, or belonging to one of `accounts`. The patterns match a superset of the literal term;
/// the caller filters the rows.
pub fn contact_search(term: &SearchTerm, accounts: &[String]) -> Result<Query, CrmError> {
    let by_name = Cond::And(
        term.words
            .iter()
            .take(QUERY_WORDS)
            .map(|w| Ok(Cond::Or(vec![Cond::like("firstname", contains(w))?, Cond::like("lastname", contains(w))?])))
            .collect::<Result<_, CrmError>>()?,
    );
    let mut any = vec![by_name];
    for field in EMAIL_FIELDS {
        any.push(Cond::like(field, contains(&term.whole))?);
    }
    if let Some(digits) = &term.phone_digits {
        for field in PHONE_FIELDS {
            any.push(Cond::like(field, digits_in_order(digits))?);
        }
    }
    if !accounts.is_empty() {
        any.push(Cond::is_in("account_id", accounts)?);
    }
    Query::select(SUMMARY_FIELDS, "Contacts")?.filter(Cond::Or(any)).order_by("id", false)
}

/// Contacts with any of these digit sequences in any phone field.
pub fn contacts_by_phone(digit_patterns: &[String]) -> Result<Query, CrmError> {
    let mut any = Vec::new();
    for digits in digit_patterns {
        for field in PHONE_FIELDS {
            any.push(Cond::like(field, digits_in_order(digits))?);
        }
    }
    Query::select(SUMMARY_FIELDS, "Contacts")?.filter(Cond::Or(any)).order_by("id", false)
}

/// Names of these accounts (keep the list short: the query travels in the URL).
pub fn account_names(ids: &[String]) -> Result<Query, CrmError> {
    Ok(Query::select(&["accountname"], "Accounts")?.filter(Cond::is_in("id", ids)?))
}

/// The newest `rows` records of `module` whose `reference` field points at `contact`.
pub fn related_newest(
    module: &str,
    reference: &str,
    contact: &str,
    newest_by: &str,
    rows: u32,
) -> Result<Query, CrmError> {
    Ok(Query::select(&[], module)?.filter(Cond::eq(reference, contact)?).order_by(newest_by, true)?.limit(0, rows))
}

/// The status of every ticket of a contact.
pub fn ticket_statuses(contact: &str) -> Result<Query, CrmError> {
    Query::select(&["ticketstatus"], "HelpDesk")?.filter(Cond::eq("contact_id", contact)?).order_by("id", false)
}

/// Call logs whose description carries this marker.
pub fn call_logs_marked(marker: &str) -> Result<Query, CrmError> {
    Query::select(&["id", "eventstatus", "subject", "description"], "Events")?
        .filter(Cond::like("description", contains(marker))?)
        .order_by("id", false)
}

/// Contacts changed after the watermark `(modified, after_id)`, oldest first: later times, or
/// the same time and a later id, so that any number of records sharing one `modifiedtime` are
/// paged through by id rather than read again.
pub fn changes_after(modified: &str, after_id: &str) -> Result<Query, CrmError> {
    let filter = Cond::Or(vec![
        Cond::gt("modifiedtime", modified)?,
        Cond::And(vec![Cond::eq("modifiedtime", modified)?, Cond::gt("id", after_id)?]),
    ]);
    Ok(Query::select(&[], "Contacts")?
        .filter(filter)
        .order_by("modifiedtime", false)?
        .order_by("id", false)?
        .limit(0, super::vtql::PAGE))
}

#[cfg(test)]
mod tests {
    use super::super::vtql::grammar::check;
    use super::*;

    fn term(t: &str) -> SearchTerm {
        SearchTerm::parse(t).unwrap()
    }

    /// Every shape the connector builds, with awkward values, parses under 8.2's grammar.
    #[test]
    fn every_query_shape_is_flat_vtql() {
        let accounts = vec!["11x2".to_owned(), "11x9".to_owned()];
        let mut shapes = vec![
            accounts_named(&term("Acme Ltd")).unwrap(),
            contact_search(&term("red"), &[]).unwrap(),
            contact_search(&term("susan red"), &accounts).unwrap(),
            contact_search(&term("O'Brien x' OR '1'='1 50% \\ Seán extra words here"), &accounts).unwrap(),
            contact_search(&term("c.searchable@example.org"), &[]).unwrap(),
            contact_search(&term("+1 (415) 555-0142"), &[]).unwrap(),
            contacts_by_phone(&["84912345678".into(), "912345678".into(), "0912345678".into()]).unwrap(),
            account_names(&accounts).unwrap(),
            related_newest("ModComments", "related_to", "12x3", "createdtime", 20).unwrap(),
            related_newest("Events", "contact_id", "12x3", "date_start", 20).unwrap(),
            ticket_statuses("12x3").unwrap(),
            call_logs_marked("[crmhub-call:abc-1]").unwrap(),
            changes_after("1970-01-01 00:00:00", "0x0").unwrap(),
            changes_after("2026-12-01 10:00:00", "12x150").unwrap(),
        ];
        let paged: Vec<Query> = shapes.iter().map(|q| q.clone().limit(300, 100)).collect();
        shapes.extend(paged);
        for query in &shapes {
            let text = query.render();
            check(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert!(text.len() < 4_000, "a query must stay well inside a URL: {} bytes", text.len());
        }
    }

    #[test]
    fn a_name_search_is_a_sum_of_products() {
        let q = contact_search(&term("susan red"), &[]).unwrap().render();
        assert!(q.contains(
            "WHERE firstname LIKE '%susan%' AND firstname LIKE '%red%' \
             OR firstname LIKE '%susan%' AND lastname LIKE '%red%' \
             OR lastname LIKE '%susan%' AND firstname LIKE '%red%' \
             OR lastname LIKE '%susan%' AND lastname LIKE '%red%' \
             OR email LIKE '%susan red%'"
        ));
        assert!(!q.contains('('), "{q}");
    }

    #[test]
    fn the_change_watermark_pages_one_timestamp_by_id() {
        let q = changes_after("2026-12-01 10:00:00", "12x150").unwrap().render();
        assert_eq!(
            q,
            "SELECT * FROM Contacts WHERE modifiedtime > '2026-12-01 10:00:00' \
             OR modifiedtime = '2026-12-01 10:00:00' AND id > '12x150' \
             ORDER BY modifiedtime, id LIMIT 0,100;"
        );
    }

    #[test]
    fn long_terms_keep_the_query_small() {
        let q = contact_search(
            &term("aaaaaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbbbbbbbbb ccccccccccccccccccc ddddddddddddddddd e f"),
            &[],
        )
        .unwrap();
        // Three words in the query: 2^3 name alternatives plus the two e-mail fields.
        assert_eq!(q.render().matches(" OR ").count(), 8 + 2 - 1);
    }

    #[test]
    fn a_summary_row_reads_like_a_record_of_the_summary_fields() {
        let raw = r#"[{"id":"12x7","firstname":" Susan ","lastname":"Red","email":"","phone":123,
            "mobile":null,"fax":["x"],"homephone":{"a":1},"account_id":"11x3","label":"Susan Red",
            "cf_901":"ignored","lastname":"Redder"}]"#;
        let rows: Vec<SummaryRow<'_>> = serde_json::from_str(raw).unwrap();
        let record: Record = serde_json::from_str::<Vec<Record>>(raw).unwrap().remove(0);
        for field in SUMMARY_FIELDS {
            assert_eq!(rows[0].text(field), super::super::text(&record, field), "{field}");
        }
        assert_eq!(rows[0].text("lastname"), Some("Redder"), "the last of a repeated key, as a map keeps it");
        assert_eq!(rows[0].text("label"), None, "only the summary fields are kept");
        let back = serde_json::from_str::<Vec<SummaryRow<'_>>>(raw).unwrap().remove(0).into_owned();
        assert_eq!(back, rows[0]);
        assert!(back.0.iter().flatten().all(|v| matches!(v, Cow::Owned(_))), "{back:?}");
        assert_eq!((back.text("firstname"), back.text("phone"), back.text("cf_901")), (Some("Susan"), None, None));
        assert!(serde_json::from_str::<Vec<SummaryRow<'_>>>(r#"[["not", "a record"]]"#).is_err());

        // Text without escapes is borrowed from the page, not copied.
        let page = r#"[{"firstname":"Ann","lastname":"O\"Neil"}]"#;
        let rows: Vec<SummaryRow<'_>> = serde_json::from_str(page).unwrap();
        assert!(matches!(rows[0].0[1], Some(Cow::Borrowed("Ann"))), "{:?}", rows[0]);
        assert_eq!(rows[0].text("lastname"), Some("O\"Neil"));
    }
}
