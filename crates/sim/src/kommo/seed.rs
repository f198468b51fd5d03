//! Deterministic, realistic seed data: Latin and Cyrillic names, several e-mails and phones in
//! mixed formats and enum codes, contacts without e-mail, PHONE before EMAIL on some (the seed
//! repository read only `custom_fields[0]`, §6), companies, tags and a few tasks.

use super::store::{
    Company, Contact, FIELD_EMAIL, FIELD_PHONE, FIELD_POSITION, FIELD_SOURCE, FieldValue, Store, USER_ADMIN,
    USER_MANAGER, field, full_name,
};

const FIRST: &[&str] = &[
    "Иван",
    "Olga",
    "John",
    "Мария",
    "Pierre",
    "Sofia",
    "Дмитрий",
    "Lukas",
    "Emma",
    "Алексей",
    "Carlos",
    "Yuki",
    "Екатерина",
    "Marek",
    "Aisha",
];
const LAST: &[&str] = &[
    "Петров",
    "Nowak",
    "Smith",
    "Иванова",
    "Dubois",
    "Rossi",
    "Соколов",
    "Müller",
    "Johansson",
    "Кузнецов",
    "García",
    "Tanaka",
    "Смирнова",
    "Dvořák",
    "Khan",
];
const DOMAINS: &[&str] = &["example.com", "example.org", "mail.example.net", "firma.example.pl"];
const POSITIONS: &[&str] = &["Manager", "Директор", "CTO", "Buyer", ""];

/// `i`-th phone in one of the formats seen in real accounts; distinct per `i`.
fn phone(i: usize, variant: usize) -> String {
    let n = 1000 + i * 7 + variant;
    match (i + variant) % 5 {
        0 => format!("+7 912 345-{:02}-{:02}", n / 100 % 100, n % 100),
        1 => format!("8 (912) 34{}-{:02}-{:02}", n / 1000 % 10, n / 100 % 100, n % 100),
        2 => format!("+44 20 7946 {:04}", n % 10_000),
        3 => format!("+4860123{:04}", n % 10_000),
        _ => format!("(555) 01{:02}-{:04}", n / 100 % 100, n % 10_000),
    }
}

fn multitext(field_id: i64, values: &[(String, &str)]) -> FieldValue {
    let def = field(field_id).expect("known field");
    FieldValue { field_id, values: values.iter().map(|(v, code)| (v.clone(), def.enum_id(code))).collect() }
}

fn ascii_slug(s: &str) -> String {
    let slug: String = s.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_lowercase();
    if slug.is_empty() { "kontakt".to_owned() } else { slug }
}

pub(crate) fn seed(store: &mut Store, n: usize, now: i64) {
    let companies = [
        ("Acme Sp. z o.o.", "biuro@acme.example.pl", vec![9_100_001_i64, 9_100_002]),
        ("ООО «Ромашка»", "info@romashka.example.ru", vec![9_100_003]),
        ("Northwind Traders Ltd", "sales@northwind.example.com", vec![]),
        ("Globex GmbH", "kontakt@globex.example.de", vec![9_100_004]),
    ];
    let mut company_ids = Vec::new();
    for (k, (name, email, leads)) in companies.into_iter().enumerate() {
        let id = store.next_id();
        let created = now - 90 * 86_400 + k as i64 * 3600;
        store.insert_company(Company {
            id,
            name: name.to_owned(),
            responsible_user_id: USER_ADMIN,
            created_at: created,
            updated_at: created + 86_400,
            fields: vec![
                multitext(FIELD_PHONE, &[(phone(900 + k, 0), "WORK")]),
                multitext(FIELD_EMAIL, &[(email.to_owned(), "WORK")]),
            ],
            linked_leads: leads,
        });
        company_ids.push(id);
    }
    let vip = store.tag_id("VIP");
    let newsletter = store.tag_id("newsletter");
    for i in 0..n {
        let id = store.next_id();
        // updated_at spread over the last 30 days, oldest first, none equal.
        let step = 30 * 86_400 / n.max(1) as i64;
        let updated = now - 3600 - (n - i) as i64 * step;
        let created = updated - 7 * 86_400 - i as i64 * 600;
        let (first, last) = if i == 0 {
            ("Anna".to_owned(), "Kowalski".to_owned())
        } else {
            (FIRST[i % FIRST.len()].to_owned(), LAST[(i * 7 + i / FIRST.len()) % LAST.len()].to_owned())
        };
        let mut fields = Vec::new();
        if i == 0 {
            fields.push(multitext(FIELD_PHONE, &[("+48 601 234 567".to_owned(), "MOB")]));
            fields.push(multitext(FIELD_EMAIL, &[("anna.kowalski@example.com".to_owned(), "WORK")]));
            fields.push(FieldValue { field_id: FIELD_POSITION, values: vec![("Head of Sales".to_owned(), None)] });
        } else {
            let slug = format!("{}.{}{}", ascii_slug(&first), ascii_slug(&last), i);
            let domain = DOMAINS[i % DOMAINS.len()];
            let emails: Vec<(String, &str)> = match i % 4 {
                0 => vec![(format!("{slug}@{domain}"), "WORK"), (format!("{slug}@private.example.com"), "PRIV")],
                1 => vec![(format!("{slug}@{domain}"), "PRIV")],
                2 => Vec::new(), // no e-mail at all
                _ => vec![(format!("{slug}@{domain}"), "WORK")],
            };
            let phones: Vec<(String, &str)> = match i % 3 {
                0 => vec![(phone(i, 0), "WORK"), (phone(i, 1), "MOB")],
                1 => vec![(phone(i, 0), "MOB")],
                _ => vec![(phone(i, 0), "WORKDD"), (phone(i, 1), "HOME"), (phone(i, 2), "OTHER")],
            };
            let position = POSITIONS[i % POSITIONS.len()];
            if !position.is_empty() && i % 2 == 0 {
                fields.push(FieldValue { field_id: FIELD_POSITION, values: vec![(position.to_owned(), None)] });
            }
            let email = (!emails.is_empty()).then(|| multitext(FIELD_EMAIL, &emails));
            let phone = multitext(FIELD_PHONE, &phones);
            // PHONE before EMAIL on odd contacts, EMAIL first on even ones.
            if i % 2 == 1 {
                fields.push(phone);
                fields.extend(email);
            } else {
                fields.extend(email);
                fields.push(phone);
            }
            if i % 5 == 0 {
                let source = if i % 10 == 0 { "Website" } else { "Выставка" };
                fields.push(FieldValue { field_id: FIELD_SOURCE, values: vec![(source.to_owned(), None)] });
            }
        }
        let mut tags = Vec::new();
        if i % 6 == 0 {
            tags.push((vip, "VIP".to_owned()));
        }
        if i % 4 == 1 {
            tags.push((newsletter, "newsletter".to_owned()));
        }
        let company_id = if i == 0 { Some(company_ids[0]) } else { (i % 3 == 0).then(|| company_ids[i % 4]) };
        let responsible = if i % 2 == 0 { USER_ADMIN } else { USER_MANAGER };
        store.insert_contact(Contact {
            id,
            name: full_name(&first, &last),
            first_name: first,
            last_name: last,
            responsible_user_id: responsible,
            created_by: USER_ADMIN,
            updated_by: responsible,
            created_at: created,
            updated_at: updated,
            fields,
            tags,
            company_id,
        });
        if i % 7 == 0 {
            store.add_task(id, "Перезвонить клиенту / call back", now + (i as i64 + 1) * 86_400, false, created);
        }
        if i % 9 == 0 {
            store.add_task(id, "Send the price list", now - 2 * 86_400, true, created);
        }
    }
}
