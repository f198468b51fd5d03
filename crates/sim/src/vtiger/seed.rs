//! Demo data: people with the messy phone numbers real CRMs hold (national, international,
//! punctuated, E.164), their organisations, notes and logged calls. Deterministic by index so
//! that tests and `crmhub demo` see the same data every time.

use super::VtigerSim;
use super::timefmt;

const FIRST_NAMES: &[&str] = &[
    "Ada",
    "Grace",
    "Alan",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "Edsger",
    "Radia",
    "Tim",
    "Hedy",
    "Donald",
    "Katherine",
    "John",
    "Sophie",
    "Niklaus",
    "Mary",
    "Bjarne",
    "Олег",
    "Zoë",
    "José",
    "Anne-Marie",
];

const LAST_NAMES: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Turing",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Berners-Lee",
    "Lamarr",
    "Knuth",
    "Johnson",
    "McCarthy",
    "Wilson",
    "Wirth",
    "Keller",
    "Stroustrup",
    "O'Brien",
    "Иванов",
    "Müller",
    "García",
];

/// `(name, e-mail domain, city, country, industry)`.
const COMPANIES: &[(&str, &str, &str, &str, &str)] = &[
    ("Acme Corporation", "acme.example", "San Francisco", "USA", "Manufacturing"),
    ("Globex Ltd", "globex.example", "London", "United Kingdom", "Finance"),
    ("Initech GmbH", "initech.example", "Berlin", "Germany", "Technology"),
    ("Umbrella SARL", "umbrella.example", "Paris", "France", "Healthcare"),
    ("Hooli Inc.", "hooli.example", "Palo Alto", "USA", "Technology"),
    ("Vandelay Industries", "vandelay.example", "New York", "USA", "Retail"),
    ("Soylent OOO", "soylent.example", "Moscow", "Russia", "Food & Beverage"),
    ("Stark & Wayne LLP", "starkwayne.example", "Chicago", "USA", "Consulting"),
];

/// Phone formats seen in real CRM data, each a function of a 7-digit subscriber number.
fn phone(format: usize, n: u32) -> String {
    let (a, b, c) = (n / 10_000 % 1000, n / 100 % 100, n % 100);
    let line = n % 10_000;
    match format % 10 {
        0 => format!("+1 415 555 {line:04}"),
        1 => format!("(415) 555-{line:04}"),
        2 => format!("+44 20 7946 {line:04}"),
        3 => format!("020 7946 {line:04}"),
        4 => format!("+49 30 {a:03}{b:02}{c:02}"),
        5 => format!("0049 89 {a:03}-{b:02}{c:02}"),
        6 => format!("+7 908 {a:03}-{b:02}-{c:02}"),
        7 => format!("+33 1 42 {b:02} {c:02} {:02}", a % 100),
        8 => format!("415.555.{line:04}"),
        _ => format!("+1415555{line:04}"),
    }
}

fn ascii_slug(s: &str) -> String {
    let slug: String = s
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            'ü' => Some('u'),
            'é' | 'ë' => Some('e'),
            'í' => Some('i'),
            _ => None,
        })
        .collect();
    if slug.is_empty() { "contact".into() } else { slug }
}

const NOTES: &[&str] = &[
    "SMS received: Can we move the demo to Thursday?",
    "SMS sent: Your ticket has been updated, reply STOP to opt out.",
    "Asked for a quote for 25 seats.",
    "Prefers to be called after 4pm.",
    "Voicemail left about the renewal.",
];

pub(crate) fn demo_contacts(sim: &VtigerSim, n: usize) -> Vec<String> {
    let now = sim.now();
    let account_count = (n / 4).clamp(1, COMPANIES.len());
    let accounts: Vec<String> = COMPANIES
        .iter()
        .take(if n == 0 { 0 } else { account_count })
        .enumerate()
        .map(|(i, (name, domain, city, country, industry))| {
            sim.insert_record(
                "Accounts",
                [
                    ("accountname", (*name).to_owned()),
                    ("website", format!("https://www.{domain}")),
                    ("phone", phone(i, 1_000_000 + 37 * i as u32)),
                    ("email1", format!("info@{domain}")),
                    ("industry", (*industry).to_owned()),
                    ("bill_city", (*city).to_owned()),
                    ("bill_country", (*country).to_owned()),
                ],
            )
        })
        .collect();

    let mut contacts = Vec::with_capacity(n);
    for i in 0..n {
        let first = FIRST_NAMES[i % FIRST_NAMES.len()];
        // A different stride so first/last combinations do not repeat in lockstep.
        let last = LAST_NAMES[(i * 7 + i / LAST_NAMES.len()) % LAST_NAMES.len()];
        let company = i % account_count;
        let (_, domain, city, country, _) = COMPANIES[company];
        let subscriber = 2_000_000 + (i as u32).wrapping_mul(7_919) % 7_000_000;
        let mut fields = vec![
            ("salutationtype", ["Mr.", "Ms.", "Dr.", ""][i % 4].to_owned()),
            ("firstname", first.to_owned()),
            ("lastname", last.to_owned()),
            ("phone", phone(i, subscriber)),
            ("mobile", phone(i + 3, subscriber + 1)),
            ("email", format!("{}.{}@{domain}", ascii_slug(first), ascii_slug(last))),
            ("account_id", accounts[company].clone()),
            ("title", ["CTO", "Office Manager", "Buyer", "Engineer", ""][i % 5].to_owned()),
            ("leadsource", ["Cold Call", "Web Site", "Partner", ""][i % 4].to_owned()),
            ("mailingcity", city.to_owned()),
            ("mailingcountry", country.to_owned()),
        ];
        if i % 3 == 0 {
            fields.push(("homephone", phone(i + 6, subscriber + 2)));
        }
        if i % 5 == 0 {
            fields.push(("secondaryemail", format!("{}{}@mail.example", ascii_slug(first), i)));
        }
        let contact_id = sim.insert_record("Contacts", fields);

        for k in 0..(1 + i % 3) {
            sim.insert_record(
                "ModComments",
                [
                    ("commentcontent", NOTES[(i + k) % NOTES.len()].to_owned()),
                    ("related_to", contact_id.clone()),
                    ("is_private", "0".to_owned()),
                ],
            );
        }
        for k in 0..(1 + i % 2) {
            let day = timefmt::date(now - 86_400 * (1 + (i + k) as i64 % 30));
            let minute = (i * 13 + k * 7) % 45;
            let hour = 9 + (i + k) % 8;
            sim.insert_record(
                "Events",
                [
                    ("subject", format!("Call with {first} {last}")),
                    ("activitytype", if k == 0 { "Call" } else { "Mobile Call" }.to_owned()),
                    ("eventstatus", "Held".to_owned()),
                    ("date_start", day.clone()),
                    ("time_start", format!("{hour:02}:{minute:02}:00")),
                    ("due_date", day),
                    ("time_end", format!("{hour:02}:{:02}:00", minute + 12)),
                    ("duration_hours", "0".to_owned()),
                    ("duration_minutes", "15".to_owned()),
                    ("contact_id", contact_id.clone()),
                    ("parent_id", accounts[company].clone()),
                    (
                        "description",
                        format!(
                            "{} call, {}m {:02}s",
                            if k == 0 { "Inbound" } else { "Outbound" },
                            1 + i % 9,
                            (i * 17) % 60
                        ),
                    ),
                ],
            );
        }
        contacts.push(contact_id);
    }
    contacts
}
