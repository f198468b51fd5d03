//! Demo data: contacts with the messy phone numbers real CRMs hold (Vietnamese national and
//! international forms, punctuated foreign numbers), accented names for case-insensitive search,
//! some without e-mail, phone or company, and a history of notes, calls and tickets. Deterministic
//! by index and clock, so tests and `crmhub demo` see the same data every time.

use super::input::{CallInput, NoteInput, TicketInput};
use super::records::{CallDirection, CallStatus, NewContact, TicketPriority};
use super::store::Store;

const FIRST_NAMES: &[&str] = &[
    "An",
    "Bình",
    "Chi",
    "Dũng",
    "Giang",
    "Hà",
    "Hùng",
    "Lan",
    "Minh",
    "Ngọc",
    "Phúc",
    "Quân",
    "Ada",
    "Grace",
    "Alan",
    "Linus",
    "Margaret",
    "Zoë",
    "José",
    "Anne-Marie",
];

const LAST_NAMES: &[&str] = &[
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Võ", "Đặng", "Bùi", "Lovelace", "Hopper", "Turing", "O'Brien", "Müller",
    "García",
];

/// `(name, e-mail domain)`.
const COMPANIES: &[(&str, &str)] = &[
    ("Acme Corporation", "acme.example"),
    ("Sao Mai Logistics", "saomai.example"),
    ("Globex Ltd", "globex.example"),
    ("Phương Đông Retail", "phuongdong.example"),
    ("Initech GmbH", "initech.example"),
];

const OWNERS: &[&str] = &["api", "linh.sales", "tom.support"];

const NOTES: &[&str] = &[
    "SMS received: Can we move the delivery to Thursday?",
    "SMS sent: Your order has shipped, reply STOP to opt out.",
    "Asked for a quote for 25 seats.\nFollow up next week.",
    "Prefers to be called after 4pm.",
];

const TICKETS: &[(&str, &str, TicketPriority)] = &[
    ("Invoice shows the wrong address", "Billing address changed in March.", TicketPriority::Normal),
    ("Cannot log in to the portal", "Password reset e-mail never arrives.", TicketPriority::High),
    ("Delivery damaged", "", TicketPriority::Urgent),
];

/// Phone formats seen in real CRM data, each a function of an 8-digit subscriber number that
/// every format keeps whole, so the last nine digits stay distinct between contacts.
fn phone(format: usize, n: u32) -> String {
    let (hi, mid, lo) = (n / 1_000_000 % 100, n / 1000 % 1000, n % 1000);
    match format % 7 {
        0 => format!("+84 9{hi:02} {mid:03} {lo:03}"),
        1 => format!("09{hi:02} {mid:03} {lo:03}"),
        2 => format!("(+84) 9{hi:02}-{mid:03}-{lo:03}"),
        3 => format!("0084.9{hi:02}.{mid:03}.{lo:03}"),
        4 => {
            let ten = format!("4{n:08}7");
            format!("+1 ({}) {}-{}", &ten[..3], &ten[3..6], &ten[6..])
        }
        5 => format!("+44 20 {:04} {:04}", n / 10_000 % 10_000, n % 10_000),
        _ => format!("849{n:08}"),
    }
}

fn ascii_slug(s: &str) -> String {
    let slug: String = s
        .chars()
        .filter_map(|c| match c.to_lowercase().next().unwrap_or(c) {
            c @ ('a'..='z' | '0'..='9') => Some(c),
            'à' | 'á' | 'ạ' | 'ă' | 'â' | 'ầ' | 'ặ' => Some('a'),
            'đ' => Some('d'),
            'é' | 'ë' | 'ê' | 'ễ' => Some('e'),
            'í' | 'ì' => Some('i'),
            'ò' | 'ó' | 'ọ' | 'ô' | 'ơ' | 'õ' => Some('o'),
            'ù' | 'ú' | 'ü' | 'ũ' | 'ư' => Some('u'),
            'ý' | 'ỳ' => Some('y'),
            _ => None,
        })
        .collect();
    if slug.is_empty() { "contact".into() } else { slug }
}

/// Seeds `n` contacts (and their history) into `store`; returns their ids in order.
pub(crate) fn demo_contacts(store: &mut Store, n: usize, now: i64) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let first = FIRST_NAMES[i % FIRST_NAMES.len()];
        // A different stride so first/last combinations do not repeat in lockstep.
        let last = LAST_NAMES[(i * 5 + i / LAST_NAMES.len()) % LAST_NAMES.len()];
        let company = (i % 6 != 5).then(|| COMPANIES[i % COMPANIES.len()]);
        let domain = company.map_or("mail.example", |(_, d)| d);
        let subscriber = 10_000_000 + u32::try_from(i).unwrap_or(0).wrapping_mul(7_919) % 89_000_000;
        let hours_ago = i64::try_from((i * 37) % 240).unwrap_or(0);
        let mut contact = NewContact::new(last)
            .first_name(first)
            .owner(OWNERS[i % OWNERS.len()])
            .updated_at(now - 3600 * hours_ago - i64::try_from(i % 60).unwrap_or(0));
        if i % 7 != 6 {
            contact = contact.phone(phone(i, subscriber));
        }
        if i % 4 != 3 {
            contact = contact.email(format!("{}.{}@{domain}", ascii_slug(first), ascii_slug(last)));
        }
        if let Some((name, _)) = company {
            contact = contact.company(name);
        }
        let id = store.insert_contact(contact, now);
        seed_history(store, &id, i, now);
        ids.push(id);
    }
    ids
}

fn seed_history(store: &mut Store, contact_id: &str, i: usize, now: i64) {
    let day = |k: usize| now - 86_400 * i64::try_from(1 + (i + k) % 30).unwrap_or(1);
    for k in 0..(i % 3) {
        let body = NOTES[(i + k) % NOTES.len()].to_owned();
        // The contact exists, so these cannot fail; a failure would only mean less demo data.
        let _ = store.create_note(NoteInput { contact_id: contact_id.to_owned(), body }, "api", day(k) + 3_600);
    }
    for k in 0..(1 + i % 2) {
        let inbound = (i + k) % 2 == 0;
        let missed = (i + k) % 5 == 4;
        let call = CallInput {
            external_id: format!("pbx-{}-{k}", 1000 + i),
            contact_id: Some(contact_id.to_owned()),
            direction: if inbound { CallDirection::Inbound } else { CallDirection::Outbound },
            from: inbound.then(|| phone(i, 20_000_000 + u32::try_from(i).unwrap_or(0))),
            to: (!inbound).then(|| phone(i, 20_000_000 + u32::try_from(i).unwrap_or(0))),
            started_at: day(k) + 36_000 + i64::try_from(i * 97 % 3_600).unwrap_or(0),
            duration: (!missed).then_some(u64::try_from(30 + (i * 17) % 600).unwrap_or(60)),
            status: if missed { CallStatus::Missed } else { CallStatus::Completed },
            notes: (k == 0 && i % 3 == 0).then(|| "Customer asked about delivery times.".to_owned()),
        };
        let _ = store.create_call(call, day(k) + 40_000);
    }
    if i % 4 == 1 {
        let (title, description, priority) = TICKETS[i % TICKETS.len()];
        let ticket = TicketInput {
            contact_id: Some(contact_id.to_owned()),
            title: title.to_owned(),
            description: (!description.is_empty()).then(|| description.to_owned()),
            priority,
        };
        let _ = store.create_ticket(ticket, day(2) + 50_000);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::json_crm::input::{PHONE_MATCH_DIGITS, digits};

    #[test]
    fn seeded_phones_stay_distinct_on_their_last_nine_digits() {
        let mut store = Store::default();
        demo_contacts(&mut store, 200, 1_700_000_000);
        let keys: Vec<String> = store
            .contacts()
            .filter_map(|c| c.phone.as_deref())
            .map(|p| {
                let d = digits(p);
                d[d.len().saturating_sub(PHONE_MATCH_DIGITS)..].to_owned()
            })
            .collect();
        let unique: HashSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
        assert!(keys.iter().all(|k| k.len() == PHONE_MATCH_DIGITS), "{keys:?}");
    }

    #[test]
    fn seeding_is_deterministic() {
        let (mut a, mut b) = (Store::default(), Store::default());
        demo_contacts(&mut a, 30, 1_700_000_000);
        demo_contacts(&mut b, 30, 1_700_000_000);
        assert_eq!(a.contacts().cloned().collect::<Vec<_>>(), b.contacts().cloned().collect::<Vec<_>>());
        assert_eq!(a.calls().count(), b.calls().count());
        assert!(a.notes().count() > 0 && a.tickets().count() > 0);
    }
}
