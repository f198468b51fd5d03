//! The contact card: a complete HTML document shown in a narrow iframe beside a conversation.
//! Every value is escaped (see [`super::html`]); the only links are the record in the CRM
//! (`http`/`https`) and the message in the platform (`https` only, contract §6).

use crmhub_core::crm::{Activity, ActivityKind, ContactCard, LabeledValue};
use crmhub_core::signing::MessageMetadata;

use super::html::{Href, Html};
use super::settings::CardSettings;

/// The card's only styles, allowed by hash in its `Content-Security-Policy`. Laid out for a
/// 320 px wide iframe first: labels stack above values below 360 px, long words wrap.
pub const STYLE: &str = "\
*{box-sizing:border-box}\
body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2328;background:#fff}\
.card{max-width:40rem;margin:0 auto;padding:12px}\
h1{font-size:1.25rem;margin:0}\
h2{font-size:.75rem;text-transform:uppercase;letter-spacing:.04em;color:#57606a;margin:16px 0 6px}\
p{margin:0}\
.sub,.meta,dt{color:#57606a}\
dl{display:grid;grid-template-columns:minmax(5rem,max-content) 1fr;gap:4px 12px;margin:0}\
dd{margin:0}\
h1,h2,dd,p{overflow-wrap:anywhere}\
ol{list-style:none;margin:0;padding:0}\
li{padding:8px 0;border-top:1px solid #d0d7de}\
.meta{font-size:.85rem}\
.subject{font-weight:600}\
.body{white-space:pre-line}\
.message{background:#f6f8fa;border-radius:6px;padding:8px 10px;margin-top:12px}\
.message h2{margin-top:0}\
footer{margin-top:16px}\
a{color:#0969da}\
@media (max-width:360px){dl{grid-template-columns:1fr;gap:0}dd{margin-bottom:6px}}";

/// Untrusted metadata longer than this is cut for display.
const MAX_METADATA_CHARS: usize = 300;

/// The card for `card`, with the message's context when the platform sent any.
pub fn render(card: &ContactCard, message: &MessageMetadata, settings: &CardSettings) -> String {
    let mut html = Html::new();
    start(&mut html, &card.display_name);
    html.open("header", "").element("h1", "", &card.display_name);
    let subtitle: Vec<&str> = [card.title.as_deref(), card.company.as_deref()].into_iter().flatten().collect();
    if !subtitle.is_empty() {
        html.element("p", "sub", &subtitle.join(" · "));
    }
    html.close("header");
    if !message.is_empty() {
        message_context(&mut html, message);
    }
    details(&mut html, card, settings);
    if settings.show_figures && !card.figures.is_empty() {
        html.element("h2", "", "Figures");
        definitions(&mut html, card.figures.iter().map(|f| (f.label.as_str(), f.value.as_str())));
    }
    let shown = card.activities.len().min(settings.max_activities as usize);
    if shown > 0 {
        activities(&mut html, &card.activities[..shown]);
    }
    if let Some(href) = card.record_url.as_deref().and_then(Href::web) {
        html.open("footer", "").link(&href, "Open in the CRM").close("footer");
    }
    finish(html)
}

/// What the iframe shows when the CRM cannot be reached: nothing about why.
pub fn unavailable() -> String {
    let mut html = Html::new();
    start(&mut html, "CRM unavailable");
    html.element("p", "", "The CRM is not available right now. Please try again in a moment.");
    finish(html)
}

fn start(html: &mut Html, title: &str) {
    html.markup(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\"><title>",
    )
    .text(title)
    .markup("</title><style>")
    .markup(STYLE)
    .markup("</style></head><body><main class=\"card\">");
}

fn finish(mut html: Html) -> String {
    html.markup("</main></body></html>");
    html.finish()
}

fn details(html: &mut Html, card: &ContactCard, settings: &CardSettings) {
    let mut rows: Vec<(&str, &str)> = Vec::new();
    rows.extend(labeled(&card.emails));
    rows.extend(labeled(&card.phones));
    rows.extend(card.company.as_deref().map(|c| ("Company", c)));
    rows.extend(card.owner.as_deref().map(|o| ("Owner", o)));
    if settings.show_extra_fields {
        rows.extend(labeled(&card.extra_fields));
    }
    if !rows.is_empty() {
        html.element("h2", "", "Contact");
        definitions(html, rows.into_iter());
    }
}

fn labeled(values: &[LabeledValue]) -> impl Iterator<Item = (&str, &str)> {
    values.iter().map(|v| (v.label.as_str(), v.value.as_str()))
}

fn definitions<'a>(html: &mut Html, rows: impl Iterator<Item = (&'a str, &'a str)>) {
    html.open("dl", "");
    for (label, value) in rows {
        html.element("dt", "", label).element("dd", "", value);
    }
    html.close("dl");
}

fn activities(html: &mut Html, activities: &[Activity]) {
    html.element("h2", "", "Recent activity").open("ol", "");
    for activity in activities {
        let kind = kind_label(activity.kind);
        let meta: Vec<&str> =
            [Some(kind), activity.at.as_deref(), activity.status.as_deref()].into_iter().flatten().collect();
        html.open("li", "").element("p", "meta", &meta.join(" · "));
        if activity.subject != kind {
            html.element("p", "subject", &activity.subject);
        }
        if let Some(body) = activity.body.as_deref().filter(|b| !b.trim().is_empty()) {
            html.element("p", "body", body);
        }
        html.close("li");
    }
    html.close("ol");
}

fn kind_label(kind: ActivityKind) -> &'static str {
    match kind {
        ActivityKind::Note => "Note",
        ActivityKind::Call => "Call",
        ActivityKind::Meeting => "Meeting",
        ActivityKind::Task => "Task",
        ActivityKind::Ticket => "Ticket",
        ActivityKind::Other => "Activity",
    }
}

/// The conversation the agent is looking at (the untrusted `message_*` parameters): a subject
/// line from the network and sentiment, the ids, and a link to the message if it is `https`.
fn message_context(html: &mut Html, message: &MessageMetadata) {
    html.open("section", "message").element("h2", "", &subject_line(message));
    let rows: Vec<(&str, String)> = [
        ("Language", &message.language_code),
        ("Author", &message.author_social_network_id),
        ("Message id", &message.social_network_id),
        ("Inbox message", &message.socialsignin_id),
        ("Inbox author", &message.author_socialsignin_id),
    ]
    .into_iter()
    .filter_map(|(label, value)| value.as_deref().map(|v| (label, clip(v))))
    .collect();
    if !rows.is_empty() {
        definitions(html, rows.iter().map(|(label, value)| (*label, value.as_str())));
    }
    match (message.https_socialsignin_url().and_then(Href::https), message.socialsignin_url.as_deref()) {
        (Some(href), _) => {
            html.open("p", "").link(&href, "Open the message in the inbox").close("p");
        }
        // Shown, so that the agent sees something was sent, but never as a link.
        (None, Some(other)) => {
            html.element("p", "meta", &format!("Message link (not opened, not https): {}", clip(other)));
        }
        (None, None) => {}
    }
    html.close("section");
}

fn subject_line(message: &MessageMetadata) -> String {
    let network = message.social_network_type.as_deref().map(clip).map(capitalised);
    let mut line = format!("{} message", network.as_deref().unwrap_or("Inbox"));
    if let Some(sentiment) = message.sentiment.as_deref() {
        line.push_str(" · sentiment: ");
        line.push_str(&clip(sentiment));
    }
    line
}

fn capitalised(text: String) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => text,
    }
}

fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_METADATA_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> ContactCard {
        ContactCard {
            id: "12x5".into(),
            display_name: "<script>alert(1)</script>".into(),
            first_name: None,
            last_name: None,
            title: Some("Buyer".into()),
            emails: vec![LabeledValue::new("Email", "a@example.com")],
            phones: vec![LabeledValue::new("Mobile", "+84 912 345 678")],
            company: Some("Redwood & Co".into()),
            owner: Some("Admin".into()),
            extra_fields: vec![LabeledValue::new("Lead Source", "Web Site")],
            figures: vec![LabeledValue::new("Open tickets", "1")],
            activities: vec![Activity {
                kind: ActivityKind::Note,
                subject: "Note".into(),
                body: Some("\"><img src=x onerror=alert(1)>".into()),
                at: Some("2024-01-02 03:04:05".into()),
                status: None,
            }],
            record_url: Some("https://crm.example.com/index.php?module=Contacts&view=Detail&record=5".into()),
        }
    }

    #[test]
    fn everything_is_escaped_and_every_section_is_there() {
        let html = render(&card(), &MessageMetadata::default(), &CardSettings::default());
        assert!(html.starts_with("<!DOCTYPE html><html lang=\"en\">"));
        assert!(html.ends_with("</main></body></html>"));
        assert!(!html.contains("<script>") && !html.contains("<img"), "{html}");
        assert!(html.contains("<h1>&lt;script&gt;alert(1)&lt;/script&gt;</h1>"));
        assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
        for expected in ["a@example.com", "+84 912 345 678", "Redwood &amp; Co", "Admin", "Lead Source", "Open tickets"]
        {
            assert!(html.contains(expected), "{expected}");
        }
        assert!(html.contains(
            "<a href=\"https://crm.example.com/index.php?module=Contacts&amp;view=Detail&amp;record=5\" target=\"_blank\""
        ));
        assert_eq!(html.matches("<style>").count(), 1);
        assert!(html.contains(&format!("<style>{STYLE}</style>")), "the stylesheet must match its CSP hash");
    }

    #[test]
    fn settings_hide_sections() {
        let settings = CardSettings { max_activities: 0, show_figures: false, show_extra_fields: false };
        let html = render(&card(), &MessageMetadata::default(), &settings);
        for hidden in ["Recent activity", "Figures", "Lead Source"] {
            assert!(!html.contains(hidden), "{hidden}");
        }
    }

    #[test]
    fn a_record_url_that_is_not_a_web_url_is_not_linked() {
        let card = ContactCard { record_url: Some("javascript:alert(1)".into()), ..card() };
        let html = render(&card, &MessageMetadata::default(), &CardSettings::default());
        assert!(!html.contains("<a ") && !html.contains("javascript:"));
    }

    #[test]
    fn message_context_links_https_only() {
        let message = MessageMetadata {
            social_network_type: Some("twitter".into()),
            sentiment: Some("negative".into()),
            socialsignin_url: Some("https://app.example/messages/1?a=1&b=2".into()),
            ..Default::default()
        };
        let html = render(&card(), &message, &CardSettings::default());
        assert!(html.contains("<h2>Twitter message · sentiment: negative</h2>"), "{html}");
        assert!(html.contains("<a href=\"https://app.example/messages/1?a=1&amp;b=2\""));

        for url in ["javascript:alert(document.domain)", "http://app.example/m/1", "data:text/html,<b>x</b>"] {
            let message = MessageMetadata { socialsignin_url: Some(url.into()), ..Default::default() };
            let html = render(&ContactCard { record_url: None, ..card() }, &message, &CardSettings::default());
            assert!(!html.contains("<a "), "{url} became a link");
            assert!(html.contains("not opened, not https"), "{url}");
            assert!(!html.contains("<b>"));
        }
    }

    #[test]
    fn long_metadata_is_clipped() {
        let message = MessageMetadata { sentiment: Some("x".repeat(10_000)), ..Default::default() };
        let html = render(&card(), &message, &CardSettings::default());
        assert!(html.len() < 6_000, "{}", html.len());
        assert_eq!(clip("ab"), "ab");
        assert_eq!(clip(&"é".repeat(301)), format!("{}…", "é".repeat(300)));
    }

    #[test]
    fn the_unavailable_page_is_a_complete_document() {
        let html = unavailable();
        assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>"));
        assert!(html.contains("not available"));
    }
}
