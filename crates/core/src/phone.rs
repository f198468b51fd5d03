//! Phone numbers as telephony and CRMs write them, normalised for matching (contract `cti.md`
//! §(d) 8).
//!
//! Caller ids arrive as E.164 (Aircall), as national digits from a PBX, or as whatever a person
//! typed into a CRM's free-text field: `0912 345 678`, `84912345678`, `+84 (0) 912…`,
//! `0168 123 4567` (a Vietnamese number from before the 2018 renumbering), `1900 1234` (a
//! hotline with no international form), `anonymous`. [`PhoneNumber::parse`] reads all of these
//! against a default region and yields one canonical value; [`PhoneNumber::search_variants`] goes
//! the other way and lists the digit strings a CRM may hold for that value, so a lookup can ask
//! for every one of them.
//!
//! ```ignore
//! let vn = PhoneRegion::parse("VN")?;
//! let n = PhoneNumber::parse("0168 123 4567", Some(vn))?;
//! assert_eq!(n.e164(), Some("+84381234567")); // renumbered in 2018
//! assert!(n.search_variants().contains(&"01681234567".to_owned()));
//! assert!(n.matches_text("+84 38 123 45 67", Some(vn)));
//! ```
//!
//! This is deliberately not a full numbering-plan library. The per-country table holds only
//! what is needed to tell the forms apart (calling code, trunk prefix, the range of national
//! number lengths, the digits a national number may start with); it does not know which area
//! codes exist. Everything here is pure: no I/O, no global state, no panics on any input.

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Serialize, Serializer};

use crate::PhoneRegion;

/// E.164 allows at most 15 digits, country code included.
pub const E164_MAX_DIGITS: usize = 15;

/// Longest extension kept. Longer digit runs after a marker are more likely a second number
/// glued on than a real extension, so they are refused instead of silently kept.
const MAX_EXTENSION_DIGITS: usize = 10;

/// Dialled strings this short are short codes (emergency, operator services), not subscriber
/// numbers, wherever they do not fit the region's plan.
const MAX_SHORT_CODE_DIGITS: usize = 6;

/// Shortest national number accepted for a calling code that has no [`PLANS`] row: Niue and
/// Saint Helena use four digits.
const MIN_UNKNOWN_NSN_DIGITS: usize = 4;

/// Why a text is not a usable phone number. The messages are meant for the person who typed
/// the number (or for the log line of a caller id that could not be matched).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Nothing but whitespace or separators.
    #[error("no phone number given")]
    Empty,
    /// A withheld caller id: `anonymous`, `unknown`, `private`, `restricted`, a bare `+`, or
    /// all zeros. Not an error in a call flow, only "nothing to look up".
    #[error("the caller id is anonymous or withheld")]
    Anonymous,
    /// A letter outside an extension marker (`1-800-FLOWERS`, `0912 345 678 (home)`).
    #[error(
        "a phone number cannot contain letters (found {0:?}); only an extension marker such as \"ext\" or \"x\" may follow the digits"
    )]
    Letters(char),
    /// A symbol that is neither a digit, a separator, a leading `+` nor an extension marker.
    #[error("unexpected character {0:?} in a phone number")]
    InvalidCharacter(char),
    /// An extension marker (`x`, `ext`, `#`, `;ext=`) not followed by 1–10 digits.
    #[error("an extension must be 1 to 10 digits after its marker (x, ext, #, ;ext=)")]
    BadExtension,
    /// Fewer digits than the country's numbers have.
    #[error("too short: {digits} digits where at least {min} are expected")]
    TooShort { digits: usize, min: usize },
    /// More digits than the country's numbers have, or more than E.164's 15.
    #[error("too long: {digits} digits where at most {max} are allowed")]
    TooLong { digits: usize, max: usize },
    /// A number without a country code and no default region to read it in.
    #[error("a number without a country code needs a default region (or write it as +<country code> <number>)")]
    NoRegion,
    /// The default region is not in this module's numbering table.
    #[error("region {0} is not in the phone numbering table; write the number as +<country code> <number>")]
    UnsupportedRegion(PhoneRegion),
    /// The digits after `+` / `00` do not start with an assigned ITU calling code.
    #[error("the number does not start with an assigned country calling code")]
    UnknownCountryCode,
    /// The right length, but national numbers of that country never start with that digit.
    #[error("not a valid number for country code +{country_code}")]
    Invalid { country_code: u16 },
}

/// What kind of number was parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PhoneKind {
    /// An ordinary number with an E.164 form.
    Subscriber,
    /// A hotline (`1900 1234`, `1800 599 920` in Vietnam, `1300 …` in Australia) or a short
    /// code (`113`, `911`): dialable only inside its country, so it has no E.164 form and is
    /// kept exactly as dialled.
    Service,
}

/// A parsed phone number.
///
/// Equality and hashing compare the number itself (kind, country code, national digits,
/// extension), not the region it happened to be parsed in.
#[derive(Debug, Clone)]
pub struct PhoneNumber {
    kind: PhoneKind,
    /// Always `Some` for [`PhoneKind::Subscriber`]; `None` only for a short code read without a
    /// default region.
    country_code: Option<u16>,
    /// The national significant number (no trunk prefix) or, for a service number, the
    /// digits as dialled.
    national: String,
    extension: Option<String>,
    /// E.164 (`+84912345678`) for a subscriber number, the dialled digits for a service one.
    canonical: String,
    /// The default region given to `parse`: national forms in `search_variants` are the ones
    /// that mean this number when read in that region.
    context: Option<PhoneRegion>,
}

impl PhoneNumber {
    /// Reads `raw` as written by a person, a PBX or a CRM.
    ///
    /// `default_region` says how to read a number written without a country code (the
    /// tenant's region). Accepted, in any mix of spaces, `.`, `-`, `/`, `(`, `)` and unicode
    /// spaces or dashes, with full-width digits allowed and an optional `tel:` prefix:
    /// - `+84 912 345 678`, `0084 912 345 678`, `011 44 …` (NANP regions), `8 10 44 …` (RU, KZ);
    /// - `+49 (0)30 1234567` or `+44 020 …`: a trunk prefix kept after the country code is
    ///   dropped;
    /// - `0912 345 678` (trunk prefix), `912 345 678` (national significant number alone),
    ///   `84912345678` (country code without `+`, when the length fits the region's plan);
    /// - an extension after `x`, `ext`, `ext.`, `extension`, `#` or `;ext=`;
    /// - a pre-2018 Vietnamese 11-digit mobile number, which yields its new 10-digit number;
    /// - hotlines and short codes, as [`PhoneKind::Service`].
    pub fn parse(raw: &str, default_region: Option<PhoneRegion>) -> Result<Self, PhoneError> {
        let scanned = scan(raw)?;
        let digits = scanned.digits.as_str();
        // PBXs send all zeros (or "0") for a withheld number.
        if digits.bytes().all(|b| b == b'0') {
            return Err(PhoneError::Anonymous);
        }
        let parsed = if scanned.plus {
            international(digits)?
        } else if let Some(rest) = strip_international_prefix(digits, default_region) {
            international(rest)?
        } else {
            national(digits, default_region)?
        };
        Ok(Self::build(parsed, scanned.extension, default_region))
    }

    fn build(parsed: Parsed, extension: Option<String>, context: Option<PhoneRegion>) -> Self {
        match parsed {
            Parsed::Subscriber { code, nsn } => {
                let national = if code == VN_CODE { vn_new_from_old(&nsn).unwrap_or(nsn) } else { nsn };
                Self {
                    kind: PhoneKind::Subscriber,
                    country_code: Some(code),
                    canonical: format!("+{code}{national}"),
                    national,
                    extension,
                    context,
                }
            }
            Parsed::Service { code, digits } => Self {
                kind: PhoneKind::Service,
                country_code: code,
                canonical: digits.clone(),
                national: digits,
                extension,
                context,
            },
        }
    }

    pub fn kind(&self) -> PhoneKind {
        self.kind
    }

    /// True for hotlines and short codes ([`PhoneKind::Service`]).
    pub fn is_service(&self) -> bool {
        self.kind == PhoneKind::Service
    }

    /// `+84912345678`, without the extension. `None` for a service number, which has no
    /// international form.
    pub fn e164(&self) -> Option<&str> {
        match self.kind {
            PhoneKind::Subscriber => Some(&self.canonical),
            PhoneKind::Service => None,
        }
    }

    /// The canonical text without the extension: the E.164 form, or a service number's
    /// dialled digits.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// The ITU calling code (`84`, `1`, `44`). `None` only for a short code read without a
    /// default region.
    pub fn country_code(&self) -> Option<u16> {
        self.country_code
    }

    /// The national significant number (`912345678`: no country code, no trunk `0`), or a
    /// service number's digits as dialled.
    pub fn national_number(&self) -> &str {
        &self.national
    }

    /// The extension digits, if any.
    pub fn extension(&self) -> Option<&str> {
        self.extension.as_deref()
    }

    /// The digit strings a CRM field may hold for this number, for exact lookups, E.164 first:
    /// `+84912345678`, `84912345678`, `0084912345678`, `0912345678`, `912345678`, then the same
    /// five forms of the pre-2018 number when the number was renumbered
    /// (`+841681234567` … `01681234567`).
    ///
    /// Only strings that [`PhoneNumber::parse`] reads back as this same number are listed,
    /// read in the region the number was parsed in (or its own country when none was given):
    /// so a British number looked up for a Vietnamese tenant lists `+44…` and `0044…` but not
    /// `020…`, which in a Vietnamese CRM is a Vietnamese number. A service number lists only its
    /// digits. Extensions are not part of any variant; forms with separators are found with
    /// [`PhoneNumber::digits_pattern`] instead.
    pub fn search_variants(&self) -> Vec<String> {
        let (candidates, region) = match (self.kind, self.country_code) {
            (PhoneKind::Subscriber, Some(code)) => {
                let mut forms = Vec::new();
                let trunk = trunk_for_code(code);
                for nsn in self.national_forms() {
                    forms.push(format!("+{code}{nsn}"));
                    forms.push(format!("{code}{nsn}"));
                    forms.push(format!("00{code}{nsn}"));
                    if let Some(trunk) = trunk {
                        forms.push(format!("{trunk}{nsn}"));
                    }
                    forms.push(nsn);
                }
                (forms, self.context.or_else(|| self.home_region()))
            }
            // A service number exists only inside its own country, so it is read there.
            _ => (vec![self.national.clone()], self.home_region().or(self.context)),
        };
        let mut out: Vec<String> = Vec::with_capacity(candidates.len());
        for candidate in candidates {
            if out.contains(&candidate) {
                continue;
            }
            if Self::parse(&candidate, region).is_ok_and(|back| back.same_number(self)) {
                out.push(candidate);
            }
        }
        out
    }

    /// The national significant number's digits (a service number's dialled digits), for a
    /// superset search such as `LIKE '%9%1%2%3%4%5%6%7%8%'` that also finds `091-234-5678` or
    /// `+84 (91) 234 56 78`. Filter the candidates with [`PhoneNumber::matches_text`].
    pub fn digits_pattern(&self) -> String {
        self.national.clone()
    }

    /// [`PhoneNumber::digits_pattern`] followed by the national digits of the pre-2018 form
    /// when the number was renumbered (`381234567`, `1681234567`): the old form shares no
    /// digit-for-digit superset pattern with the new one, so a lookup needs both.
    pub fn digits_patterns(&self) -> Vec<String> {
        match self.kind {
            PhoneKind::Subscriber => self.national_forms(),
            PhoneKind::Service => vec![self.national.clone()],
        }
    }

    /// Whether both denote the same line: same E.164 (or, for service numbers, the same
    /// digits in the same country), extensions ignored. A pre-2018 Vietnamese number and its
    /// new number are the same line; `parse` already maps the old form to the new one, so the
    /// comparison is on canonical values.
    pub fn same_number(&self, other: &PhoneNumber) -> bool {
        match (self.kind, other.kind) {
            (PhoneKind::Subscriber, PhoneKind::Subscriber) => {
                self.country_code == other.country_code
                    && canonical_nsn(self.country_code, &self.national)
                        == canonical_nsn(other.country_code, &other.national)
            }
            (PhoneKind::Service, PhoneKind::Service) => {
                // A short code read without a region matches the same digits anywhere.
                let same_country = match (self.country_code, other.country_code) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
                same_country && self.national == other.national
            }
            _ => false,
        }
    }

    /// Parses free text stored in a CRM field (with the tenant's region) and compares it with
    /// [`PhoneNumber::same_number`]. False when the text is not a phone number.
    pub fn matches_text(&self, stored: &str, region: Option<PhoneRegion>) -> bool {
        Self::parse(stored, region).is_ok_and(|other| self.same_number(&other))
    }

    /// The national number and, for a renumbered Vietnamese mobile, its pre-2018 form.
    fn national_forms(&self) -> Vec<String> {
        let mut forms = vec![self.national.clone()];
        if self.country_code == Some(VN_CODE)
            && let Some(old) = vn_old_from_new(&self.national)
        {
            forms.push(old);
        }
        forms
    }

    /// The country the number belongs to, as far as the table can tell (the first region
    /// sharing the calling code whose plan fits, e.g. `US` for any `+1` number).
    fn home_region(&self) -> Option<PhoneRegion> {
        let code = self.country_code?;
        let plan = match self.kind {
            PhoneKind::Subscriber => plans_for_code(code).find(|p| p.check(&self.national).is_ok()),
            PhoneKind::Service => None,
        }
        .or_else(|| plans_for_code(code).next())?;
        PhoneRegion::parse(plan.region).ok()
    }
}

impl PartialEq for PhoneNumber {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.country_code == other.country_code
            && self.national == other.national
            && self.extension == other.extension
    }
}

impl Eq for PhoneNumber {}

impl Hash for PhoneNumber {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        self.country_code.hash(state);
        self.national.hash(state);
        self.extension.hash(state);
    }
}

/// E.164 (or a service number's digits), then `;ext=123` when there is an extension — the
/// RFC 3966 spelling, which `parse` reads back.
impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)?;
        if let Some(ext) = &self.extension {
            write!(f, ";ext={ext}")?;
        }
        Ok(())
    }
}

/// Serialised as its `Display` text: the bare E.164 string unless there is an extension, which
/// is kept (`+12125550142;ext=12`) rather than silently lost.
impl Serialize for PhoneNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the text.

/// The characters of a number once separators are gone.
#[derive(Debug)]
struct Scanned {
    plus: bool,
    digits: String,
    extension: Option<String>,
}

/// Words that PBXs and CRMs put in place of a withheld caller id (RFC 3323's
/// `sip:anonymous@anonymous.invalid` included, by containment).
const ANONYMOUS_WORDS: &[&str] =
    &["anonymous", "anonym", "unknown", "private", "restricted", "withheld", "unavailable", "blocked", "hidden"];

/// Extension markers, longest first so `extension` is not read as `ext` + `ension`.
const EXTENSION_MARKERS: &[&str] = &[";ext=", "extension", "ext", "x", "#"];

/// Maps the look-alike characters of copy-pasted or East Asian input to the ASCII ones the
/// scanner knows: full-width digits and punctuation, unicode dashes, and every kind of space
/// or invisible direction mark (RTL pages wrap numbers in them) to a plain space.
fn fold_char(c: char) -> char {
    match c {
        '\u{FF10}'..='\u{FF19}' => char::from(b'0' + (u32::from(c) - 0xFF10) as u8),
        '\u{FF0B}' => '+',
        '\u{FF08}' => '(',
        '\u{FF09}' => ')',
        '\u{FF0E}' => '.',
        '\u{FF0F}' => '/',
        '\u{FF03}' => '#',
        '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE63}' | '\u{FF0D}' => '-',
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' => ' ',
        c if c.is_whitespace() => ' ',
        c => c.to_ascii_lowercase(),
    }
}

fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '.' | '-' | '/' | '(' | ')' | '[' | ']')
}

fn scan(raw: &str) -> Result<Scanned, PhoneError> {
    let folded: String = raw.chars().map(fold_char).collect();
    let text = folded.trim();
    let text = text.strip_prefix("tel:").unwrap_or(text);

    if !text.bytes().any(|b| b.is_ascii_digit()) {
        return Err(no_digits(text));
    }

    let mut plus = false;
    let mut digits = String::new();
    let mut extension = None;
    let mut pos = 0;
    while let Some(c) = text[pos..].chars().next() {
        let rest = &text[pos..];
        match c {
            '0'..='9' => digits.push(c),
            // A `+` is the international prefix only before the first digit.
            '+' if !plus && digits.is_empty() => plus = true,
            // `+49 (0)30 …`: the trunk prefix written in brackets after the country code is
            // not dialled from abroad. Read nationally (`(0)30 …` after a digit), dropping it
            // leaves the national significant number, which parses to the same value.
            '(' if !digits.is_empty() && rest.starts_with("(0)") => {
                pos += "(0)".len();
                continue;
            }
            c if is_separator(c) => {}
            _ => {
                if let Some(marker) = EXTENSION_MARKERS.iter().find(|m| rest.starts_with(**m)) {
                    extension = Some(read_extension(&rest[marker.len()..])?);
                    break;
                }
                return Err(if c.is_alphabetic() { PhoneError::Letters(c) } else { PhoneError::InvalidCharacter(c) });
            }
        }
        pos += c.len_utf8();
    }

    if digits.is_empty() {
        // Only an extension (`x123`), or `+` followed by nothing but separators.
        return Err(if plus { PhoneError::Anonymous } else { PhoneError::Empty });
    }
    Ok(Scanned { plus, digits, extension })
}

/// Classifies a text without a single digit.
fn no_digits(text: &str) -> PhoneError {
    if ANONYMOUS_WORDS.iter().any(|w| text.contains(w)) {
        return PhoneError::Anonymous;
    }
    let mut meaningful = text.chars().filter(|c| !is_separator(*c));
    match meaningful.next() {
        None => PhoneError::Empty,
        // A lone `+` is what some trunks send for a withheld number.
        Some('+') if meaningful.all(|c| c == '+') => PhoneError::Anonymous,
        Some(c) if c.is_alphabetic() => PhoneError::Letters(c),
        Some(c) => PhoneError::InvalidCharacter(c),
    }
}

/// The digits after an extension marker: optional `.`/`:`/`=`/spaces, then 1–10 digits.
fn read_extension(after_marker: &str) -> Result<String, PhoneError> {
    let ext = after_marker.trim_start_matches([' ', '.', ':', '=']).trim_end();
    if let Some(letter) = ext.chars().find(|c| c.is_alphabetic()) {
        return Err(PhoneError::Letters(letter));
    }
    if ext.is_empty() || ext.len() > MAX_EXTENSION_DIGITS || !ext.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PhoneError::BadExtension);
    }
    Ok(ext.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Interpreting the digits.

#[derive(Debug)]
enum Parsed {
    Subscriber { code: u16, nsn: String },
    Service { code: Option<u16>, digits: String },
}

/// `00` is the ITU-recommended international prefix and is used by most of the world, so it is
/// recognised whatever the region (no national number starts with `00`). `011` is NANP's and
/// `810` the old Soviet one still used in Russia and Kazakhstan; elsewhere those digits start
/// ordinary national numbers (`0114…` is Sheffield), so they need the region.
fn strip_international_prefix(digits: &str, region: Option<PhoneRegion>) -> Option<&str> {
    if let Some(rest) = digits.strip_prefix("00") {
        return Some(rest);
    }
    let plan = plan_for_region(region?)?;
    let idd = match plan.code {
        NANP_CODE => "011",
        RU_KZ_CODE => "810",
        _ => return None,
    };
    digits.strip_prefix(idd)
}

/// Digits after `+` or an international prefix: calling code, then the national number.
fn international(digits: &str) -> Result<Parsed, PhoneError> {
    let (code, rest) = split_calling_code(digits).ok_or(PhoneError::UnknownCountryCode)?;
    let code_len = digits.len() - rest.len();

    // `+84 1900 1234`: a hotline written internationally is still only a hotline.
    if is_service_number(code, rest) {
        return Ok(Parsed::Service { code: Some(code), digits: rest.to_owned() });
    }

    if plans_for_code(code).next().is_none() {
        // A code we know but whose national plan is not in the table: only E.164's bounds.
        if rest.len() < MIN_UNKNOWN_NSN_DIGITS {
            return Err(PhoneError::TooShort { digits: digits.len(), min: code_len + MIN_UNKNOWN_NSN_DIGITS });
        }
        if digits.len() > E164_MAX_DIGITS {
            return Err(PhoneError::TooLong { digits: digits.len(), max: E164_MAX_DIGITS });
        }
        return Ok(Parsed::Subscriber { code, nsn: rest.to_owned() });
    }

    // `+44 020 …`, `+7 8 495 …`: the national trunk prefix kept after the country code. Tried
    // second, so a national number that really starts with the trunk digit (Russia's
    // `+7 800 …`) is kept whole.
    let trunk_dropped = trunk_for_code(code).and_then(|t| rest.strip_prefix(t));
    let mut last_err = PhoneError::UnknownCountryCode;
    for nsn in [Some(rest), trunk_dropped].into_iter().flatten() {
        if code_len + nsn.len() > E164_MAX_DIGITS {
            last_err = PhoneError::TooLong { digits: code_len + nsn.len(), max: E164_MAX_DIGITS };
            continue;
        }
        match check_code(code, nsn) {
            Ok(()) => return Ok(Parsed::Subscriber { code, nsn: nsn.to_owned() }),
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

/// Digits without an international prefix, read in the default region.
fn national(digits: &str, region: Option<PhoneRegion>) -> Result<Parsed, PhoneError> {
    let short = digits.len() <= MAX_SHORT_CODE_DIGITS;
    let short_code =
        |code: Option<u16>| -> Result<Parsed, PhoneError> { Ok(Parsed::Service { code, digits: digits.to_owned() }) };
    let Some(region) = region else {
        return if short { short_code(None) } else { Err(PhoneError::NoRegion) };
    };
    let Some(plan) = plan_for_region(region) else {
        return if short { short_code(None) } else { Err(PhoneError::UnsupportedRegion(region)) };
    };
    let code = plan.code;
    if is_service_number(code, digits) {
        return short_code(Some(code));
    }

    let code_text = code.to_string();
    let trunk = plan.trunk.and_then(|t| digits.strip_prefix(t));
    let bare = digits.strip_prefix(code_text.as_str());
    let bare_then_trunk = bare.and_then(|b| plan.trunk.and_then(|t| b.strip_prefix(t)));
    // Where a trunk prefix exists, people write national numbers with it, so a number without
    // it that starts with the country code (`84912345678`) is far more likely the
    // international form with the `+` lost than a national number. Where there is no trunk
    // prefix (Italy, Spain, …) the national significant number *is* the usual national form
    // (`393 123 4567` is an Italian mobile, not `+39 31234567`), so it is tried first.
    let candidates = if plan.trunk.is_some() {
        [trunk, bare, bare_then_trunk, Some(digits)]
    } else {
        [Some(digits), bare, None, None]
    };

    let mut first_err = None;
    for nsn in candidates.into_iter().flatten() {
        // `8419001234`: a hotline behind the country code is still a hotline (and must not
        // become a subscriber number whose E.164 form would read back as a hotline).
        if is_service_number(code, nsn) {
            return Ok(Parsed::Service { code: Some(code), digits: nsn.to_owned() });
        }
        match check_code(code, nsn) {
            Ok(()) => return Ok(Parsed::Subscriber { code, nsn: nsn.to_owned() }),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if short {
        return short_code(Some(code));
    }
    Err(first_err.unwrap_or(PhoneError::Invalid { country_code: code }))
}

/// Splits the leading ITU calling code off. Calling codes form a prefix-free set (no code is
/// the start of another), so the first match by length is the only one.
fn split_calling_code(digits: &str) -> Option<(u16, &str)> {
    // No calling code starts with 0 (`+0…` would otherwise read `091…` as India's 91).
    if digits.starts_with('0') {
        return None;
    }
    (1..=3).find_map(|len| {
        let head = digits.get(..len)?;
        let code: u16 = head.parse().ok()?;
        CALLING_CODES.binary_search(&code).ok()?;
        Some((code, &digits[len..]))
    })
}

/// Checks a national significant number against every plan sharing the calling code (NANP's
/// regions, Russia and Kazakhstan, the UK and its Crown Dependencies share one plan each).
fn check_code(code: u16, nsn: &str) -> Result<(), PhoneError> {
    let mut first_err = None;
    for plan in plans_for_code(code) {
        match plan.check(nsn) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or(PhoneError::UnknownCountryCode))
}

fn is_service_number(code: u16, digits: &str) -> bool {
    SERVICE_PREFIXES
        .iter()
        .any(|s| s.code == code && digits.starts_with(s.prefix) && (s.min..=s.max).contains(&digits.len()))
}

// ---------------------------------------------------------------------------------------------
// Numbering tables.

/// One country's numbering plan, reduced to what tells the written forms apart.
#[derive(Debug)]
struct Plan {
    /// ISO 3166-1 alpha-2.
    region: &'static str,
    /// ITU-T E.164 calling code.
    code: u16,
    /// Dialled before a national number inside the country (`0`, `8` in Russia, `1` in NANP,
    /// `06` in Hungary); `None` where numbers are dialled the same everywhere.
    trunk: Option<&'static str>,
    /// Length range of the national significant number. Generous where a country mixes
    /// lengths, so that real numbers are never refused; the only cost is a less sharp
    /// "too short/too long" for typos.
    min: usize,
    max: usize,
    /// Digits a national significant number may start with.
    lead: &'static str,
}

impl Plan {
    fn check(&self, nsn: &str) -> Result<(), PhoneError> {
        if nsn.len() < self.min {
            return Err(PhoneError::TooShort { digits: nsn.len(), min: self.min });
        }
        if nsn.len() > self.max {
            return Err(PhoneError::TooLong { digits: nsn.len(), max: self.max });
        }
        if !nsn.starts_with(|c: char| self.lead.contains(c)) {
            return Err(PhoneError::Invalid { country_code: self.code });
        }
        Ok(())
    }
}

const fn plan(region: &'static str, code: u16, trunk: Option<&'static str>, min: usize, max: usize) -> Plan {
    Plan { region, code, trunk, min, max, lead: NONZERO }
}

const fn plan_lead(
    region: &'static str,
    code: u16,
    trunk: Option<&'static str>,
    min: usize,
    max: usize,
    lead: &'static str,
) -> Plan {
    Plan { region, code, trunk, min, max, lead }
}

const NONZERO: &str = "123456789";
const VN_CODE: u16 = 84;
const NANP_CODE: u16 = 1;
const RU_KZ_CODE: u16 = 7;
const ZERO: Option<&str> = Some("0");
const NONE: Option<&str> = None;

/// NANP: area codes and exchange codes never start with 0 or 1; the trunk prefix is `1`.
const fn nanp(region: &'static str) -> Plan {
    plan_lead(region, NANP_CODE, Some("1"), 10, 10, "23456789")
}

/// National numbering plans: the most populous countries, the EU, and every NANP region. Facts
/// from the public national numbering plans as summarised by the ITU (E.164 "national
/// numbering plan" notifications). A region missing here can still be reached with `+`.
const PLANS: &[Plan] = &[
    // North American Numbering Plan: one plan, one calling code, many regions.
    nanp("US"),
    nanp("CA"),
    nanp("AG"),
    nanp("AI"),
    nanp("AS"),
    nanp("BB"),
    nanp("BM"),
    nanp("BS"),
    nanp("DM"),
    nanp("DO"),
    nanp("GD"),
    nanp("GU"),
    nanp("JM"),
    nanp("KN"),
    nanp("KY"),
    nanp("LC"),
    nanp("MP"),
    nanp("MS"),
    nanp("PR"),
    nanp("SX"),
    nanp("TC"),
    nanp("TT"),
    nanp("VC"),
    nanp("VG"),
    nanp("VI"),
    // +7 is shared: Russian numbers start with 3, 4, 8 or 9, Kazakh ones with 6 or 7.
    plan_lead("RU", 7, Some("8"), 10, 10, "3489"),
    plan_lead("KZ", 7, Some("8"), 10, 10, "67"),
    plan("EG", 20, ZERO, 8, 10),
    plan("ZA", 27, ZERO, 9, 9),
    plan("GR", 30, NONE, 10, 10),
    plan("NL", 31, ZERO, 7, 10),
    plan("BE", 32, ZERO, 8, 9),
    plan("FR", 33, ZERO, 9, 9),
    plan_lead("ES", 34, NONE, 9, 9, "56789"),
    plan("HU", 36, Some("06"), 8, 9),
    // Italian fixed numbers keep their leading 0 internationally (+39 06 …).
    plan_lead("IT", 39, NONE, 6, 11, "0123456789"),
    plan("RO", 40, ZERO, 9, 9),
    plan("CH", 41, ZERO, 9, 9),
    plan("AT", 43, ZERO, 5, 13),
    // UK national numbers never start with 0, 4 or 6; the Crown Dependencies share the plan.
    plan_lead("GB", 44, ZERO, 7, 10, "1235789"),
    plan_lead("GG", 44, ZERO, 7, 10, "1235789"),
    plan_lead("JE", 44, ZERO, 7, 10, "1235789"),
    plan_lead("IM", 44, ZERO, 7, 10, "1235789"),
    plan("DK", 45, NONE, 8, 8),
    plan("SE", 46, ZERO, 7, 9),
    plan("NO", 47, NONE, 8, 8),
    plan("PL", 48, NONE, 9, 9),
    plan("DE", 49, ZERO, 6, 13),
    plan("PE", 51, ZERO, 8, 9),
    plan("MX", 52, NONE, 10, 10),
    // Argentine mobiles gain a `9` after the country code when dialled from abroad.
    plan("AR", 54, ZERO, 10, 11),
    plan("BR", 55, ZERO, 10, 11),
    plan("CL", 56, NONE, 9, 9),
    plan("CO", 57, NONE, 10, 10),
    plan("VE", 58, ZERO, 10, 10),
    plan("MY", 60, ZERO, 8, 10),
    plan("AU", 61, ZERO, 9, 9),
    plan("ID", 62, ZERO, 7, 12),
    plan("PH", 63, ZERO, 8, 10),
    plan("NZ", 64, ZERO, 8, 10),
    plan_lead("SG", 65, NONE, 8, 8, "3689"),
    plan("TH", 66, ZERO, 8, 9),
    plan("JP", 81, ZERO, 9, 10),
    plan("KR", 82, ZERO, 8, 10),
    // 9 digits for mobiles (3x, 5x, 7x, 8x, 9x), 10 for landlines (2xx since 2017) and for
    // the pre-2018 mobiles (1xx) that `parse` renumbers.
    plan("VN", VN_CODE, ZERO, 9, 10),
    plan("CN", 86, ZERO, 8, 11),
    plan("TR", 90, ZERO, 10, 10),
    plan("IN", 91, ZERO, 10, 10),
    plan("PK", 92, ZERO, 8, 11),
    plan("AF", 93, ZERO, 9, 9),
    plan("LK", 94, ZERO, 9, 9),
    plan("MM", 95, ZERO, 7, 10),
    plan("IR", 98, ZERO, 10, 10),
    plan("MA", 212, ZERO, 9, 9),
    plan("DZ", 213, ZERO, 8, 9),
    plan("SN", 221, NONE, 9, 9),
    plan("CI", 225, NONE, 10, 10),
    plan("GH", 233, ZERO, 9, 9),
    plan("NG", 234, ZERO, 8, 10),
    plan("CM", 237, NONE, 9, 9),
    plan("CD", 243, ZERO, 7, 9),
    plan("AO", 244, NONE, 9, 9),
    plan("SD", 249, ZERO, 9, 9),
    plan("ET", 251, ZERO, 9, 9),
    plan("KE", 254, ZERO, 7, 10),
    plan("TZ", 255, ZERO, 9, 9),
    plan("UG", 256, ZERO, 9, 9),
    plan("MZ", 258, NONE, 8, 9),
    plan("ZM", 260, ZERO, 9, 9),
    plan("MG", 261, ZERO, 9, 9),
    plan("ZW", 263, ZERO, 8, 10),
    plan("PT", 351, NONE, 9, 9),
    plan("IE", 353, ZERO, 7, 10),
    plan("FI", 358, ZERO, 5, 12),
    plan("BG", 359, ZERO, 8, 9),
    plan("UA", 380, ZERO, 9, 9),
    plan("RS", 381, ZERO, 8, 9),
    plan("HR", 385, ZERO, 8, 9),
    plan("CZ", 420, NONE, 9, 9),
    plan("SK", 421, ZERO, 9, 9),
    plan("GT", 502, NONE, 8, 8),
    plan("EC", 593, ZERO, 8, 9),
    plan("HK", 852, NONE, 8, 8),
    plan("KH", 855, ZERO, 8, 9),
    plan("LA", 856, ZERO, 8, 10),
    plan("BD", 880, ZERO, 8, 10),
    plan("TW", 886, ZERO, 8, 9),
    plan("SY", 963, ZERO, 8, 9),
    plan("IQ", 964, ZERO, 8, 10),
    plan("SA", 966, ZERO, 8, 9),
    plan("YE", 967, ZERO, 7, 9),
    plan("AE", 971, ZERO, 8, 9),
    plan("IL", 972, ZERO, 8, 9),
    plan("NP", 977, ZERO, 8, 10),
];

/// Every assigned ITU-T E.164 calling code (geographic and global services such as +800),
/// sorted. Needed to split `+<code><national number>` for countries outside [`PLANS`].
/// Unassigned or reserved codes (259, 379, 384, 388, 422, 671, 684, 969, 978, 997, …) are
/// left out so a typo is reported rather than accepted.
const CALLING_CODES: &[u16] = &[
    1, 7, 20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54, 55, 56, 57, 58, 60,
    61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98, 211, 212, 213, 216, 218, 220, 221, 222, 223,
    224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246,
    247, 248, 249, 250, 251, 252, 253, 254, 255, 256, 257, 258, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 290,
    291, 297, 298, 299, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 370, 371, 372, 373, 374, 375, 376, 377, 378,
    380, 381, 382, 383, 385, 386, 387, 389, 420, 421, 423, 500, 501, 502, 503, 504, 505, 506, 507, 508, 509, 590, 591,
    592, 593, 594, 595, 596, 597, 598, 599, 670, 672, 673, 674, 675, 676, 677, 678, 679, 680, 681, 682, 683, 685, 686,
    687, 688, 689, 690, 691, 692, 800, 808, 850, 852, 853, 855, 856, 870, 878, 880, 881, 882, 883, 886, 888, 960, 961,
    962, 963, 964, 965, 966, 967, 968, 970, 971, 972, 973, 974, 975, 976, 977, 979, 992, 993, 994, 995, 996, 998,
];

/// Hotline ranges that cannot be dialled from abroad, kept as [`PhoneKind::Service`]. Short
/// codes (up to six digits) need no row: they are recognised by length.
struct ServicePrefix {
    code: u16,
    prefix: &'static str,
    /// Length range of the whole dialled number.
    min: usize,
    max: usize,
}

const SERVICE_PREFIXES: &[ServicePrefix] = &[
    // Vietnam: 1800 free-phone and 1900 premium-rate, 8 or 10 digits, dialled without the
    // trunk 0.
    ServicePrefix { code: VN_CODE, prefix: "1800", min: 8, max: 10 },
    ServicePrefix { code: VN_CODE, prefix: "1900", min: 8, max: 10 },
    // Australia: 1300 local-rate and 1800 free-call, 10 digits (13 xx xx is a short code).
    ServicePrefix { code: 61, prefix: "1300", min: 10, max: 10 },
    ServicePrefix { code: 61, prefix: "1800", min: 10, max: 10 },
];

/// Vietnam's 2018 mobile renumbering: the Ministry of Information and Communications (MIC)
/// converted every 11-digit mobile number to 10 digits from 15 September 2018 (both forms
/// worked until 14 November 2018, old ones answered with an announcement until 30 June 2019).
/// 21 network codes changed; the last seven digits were kept. Pairs are the national
/// significant numbers' prefixes, old → new (`0168 xxx xxxx` → `038 xxx xxxx`), from the MIC's
/// published conversion table.
const VN_2018_RENUMBERING: &[(&str, &str)] = &[
    // Viettel
    ("162", "32"),
    ("163", "33"),
    ("164", "34"),
    ("165", "35"),
    ("166", "36"),
    ("167", "37"),
    ("168", "38"),
    ("169", "39"),
    // MobiFone
    ("120", "70"),
    ("121", "79"),
    ("122", "77"),
    ("126", "76"),
    ("128", "78"),
    // VinaPhone
    ("123", "83"),
    ("124", "84"),
    ("125", "85"),
    ("127", "81"),
    ("129", "82"),
    // Vietnamobile
    ("186", "56"),
    ("188", "58"),
    // Gmobile
    ("199", "59"),
];

/// Old Vietnamese mobile numbers had a 10-digit national number (`1681234567`); new ones have
/// 9 (`381234567`).
const VN_OLD_MOBILE_LEN: usize = 10;
const VN_NEW_MOBILE_LEN: usize = 9;

fn vn_new_from_old(nsn: &str) -> Option<String> {
    if nsn.len() != VN_OLD_MOBILE_LEN {
        return None;
    }
    VN_2018_RENUMBERING.iter().find_map(|(old, new)| nsn.strip_prefix(old).map(|tail| format!("{new}{tail}")))
}

fn vn_old_from_new(nsn: &str) -> Option<String> {
    if nsn.len() != VN_NEW_MOBILE_LEN {
        return None;
    }
    VN_2018_RENUMBERING.iter().find_map(|(old, new)| nsn.strip_prefix(new).map(|tail| format!("{old}{tail}")))
}

/// The national number with any pre-2018 Vietnamese prefix replaced by its new one.
fn canonical_nsn(code: Option<u16>, nsn: &str) -> std::borrow::Cow<'_, str> {
    match code {
        Some(VN_CODE) => vn_new_from_old(nsn).map_or(std::borrow::Cow::Borrowed(nsn), std::borrow::Cow::Owned),
        _ => std::borrow::Cow::Borrowed(nsn),
    }
}

fn plans_for_code(code: u16) -> impl Iterator<Item = &'static Plan> {
    PLANS.iter().filter(move |p| p.code == code)
}

fn plan_for_region(region: PhoneRegion) -> Option<&'static Plan> {
    PLANS.iter().find(|p| p.region == region.as_str())
}

/// The trunk prefix of the plan behind a calling code (all plans sharing a code share it).
fn trunk_for_code(code: u16) -> Option<&'static str> {
    plans_for_code(code).next().and_then(|p| p.trunk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn region(code: &str) -> Option<PhoneRegion> {
        Some(PhoneRegion::parse(code).unwrap())
    }

    fn vn() -> Option<PhoneRegion> {
        region("VN")
    }

    #[track_caller]
    fn e164(raw: &str, default_region: Option<PhoneRegion>) -> String {
        match PhoneNumber::parse(raw, default_region) {
            Ok(n) => n.e164().unwrap_or_else(|| panic!("{raw:?} parsed as a service number: {n:?}")).to_owned(),
            Err(e) => panic!("{raw:?} did not parse: {e}"),
        }
    }

    #[track_caller]
    fn err(raw: &str, default_region: Option<PhoneRegion>) -> PhoneError {
        match PhoneNumber::parse(raw, default_region) {
            Ok(n) => panic!("{raw:?} should not parse, got {n:?}"),
            Err(e) => e,
        }
    }

    // --- Vietnam -----------------------------------------------------------------------------

    #[test]
    fn vietnamese_mobile_in_every_written_form() {
        for raw in [
            "0912345678",
            "84912345678",
            "+84912345678",
            "0084912345678",
            "912345678",
            "091 234 5678",
            "0912 345 678",
            "091.234.5678",
            "091-234-5678",
            "(091) 234-5678",
            "+84 91 234 56 78",
            "+84-912-345-678",
            "(+84) 912 345 678",
            "+84 (0) 912 345 678",
            "+84 0912345678",
            "0084 (0)912 345 678",
            "84 912 345 678",
            "tel:+84912345678",
            "  0912345678\t",
            "0912\u{a0}345\u{a0}678",
            "\u{200e}+84 912 345 678\u{200e}",
            "０９１２３４５６７８",
            "＋８４　９１２　３４５　６７８",
            "091\u{2013}234\u{2013}5678",
        ] {
            assert_eq!(e164(raw, vn()), "+84912345678", "{raw:?}");
        }
    }

    #[test]
    fn vietnamese_number_parts() {
        let n = PhoneNumber::parse("0912 345 678", vn()).unwrap();
        assert_eq!(n.kind(), PhoneKind::Subscriber);
        assert!(!n.is_service());
        assert_eq!(n.e164(), Some("+84912345678"));
        assert_eq!(n.as_str(), "+84912345678");
        assert_eq!(n.country_code(), Some(84));
        assert_eq!(n.national_number(), "912345678");
        assert_eq!(n.extension(), None);
        assert_eq!(n.to_string(), "+84912345678");
    }

    #[test]
    fn international_forms_need_no_region() {
        assert_eq!(e164("+84 912 345 678", None), "+84912345678");
        assert_eq!(e164("0084 912 345 678", None), "+84912345678");
        assert_eq!(err("0912345678", None), PhoneError::NoRegion);
        assert_eq!(err("84912345678", None), PhoneError::NoRegion);
    }

    #[test]
    fn vietnamese_landline() {
        // Hanoi since the 2017 area-code change: 024 + 8 digits.
        assert_eq!(e164("024 3826 1234", vn()), "+842438261234");
        assert_eq!(e164("+84 24 3826 1234", None), "+842438261234");
        assert_eq!(e164("842438261234", vn()), "+842438261234");
    }

    #[test]
    fn pre_2018_mobiles_parse_to_their_new_number() {
        for raw in [
            "01681234567",
            "0168 123 4567",
            "0168.123.4567",
            "+84 168 123 4567",
            "+841681234567",
            "841681234567",
            "00841681234567",
            "1681234567",
            "+84 (0)168 123 4567",
        ] {
            assert_eq!(e164(raw, vn()), "+84381234567", "{raw:?}");
        }
        let cases = [
            ("0162", "032"),
            ("0163", "033"),
            ("0164", "034"),
            ("0165", "035"),
            ("0166", "036"),
            ("0167", "037"),
            ("0168", "038"),
            ("0169", "039"),
            ("0120", "070"),
            ("0121", "079"),
            ("0122", "077"),
            ("0126", "076"),
            ("0128", "078"),
            ("0123", "083"),
            ("0124", "084"),
            ("0125", "085"),
            ("0127", "081"),
            ("0129", "082"),
            ("0186", "056"),
            ("0188", "058"),
            ("0199", "059"),
        ];
        assert_eq!(cases.len(), VN_2018_RENUMBERING.len());
        for (old, new) in cases {
            let old_number = PhoneNumber::parse(&format!("{old}7654321"), vn()).unwrap();
            let new_number = PhoneNumber::parse(&format!("{new}7654321"), vn()).unwrap();
            assert_eq!(old_number, new_number, "{old} → {new}");
            assert_eq!(old_number.e164().unwrap(), format!("+84{}7654321", &new[1..]));
        }
    }

    #[test]
    fn unchanged_vietnamese_prefixes_have_no_old_form() {
        let n = PhoneNumber::parse("0912345678", vn()).unwrap();
        assert_eq!(n.search_variants(), ["+84912345678", "84912345678", "0084912345678", "0912345678", "912345678"]);
        assert_eq!(n.digits_patterns(), ["912345678"]);
        // An 11-digit number whose prefix was never converted stays as written.
        assert_eq!(e164("01301234567", vn()), "+841301234567");
    }

    #[test]
    fn renumbered_mobile_variants_include_the_old_forms() {
        let n = PhoneNumber::parse("038 123 4567", vn()).unwrap();
        assert_eq!(
            n.search_variants(),
            [
                "+84381234567",
                "84381234567",
                "0084381234567",
                "0381234567",
                "381234567",
                "+841681234567",
                "841681234567",
                "00841681234567",
                "01681234567",
                "1681234567",
            ]
        );
        assert_eq!(n.digits_pattern(), "381234567");
        assert_eq!(n.digits_patterns(), ["381234567", "1681234567"]);
        // Parsed from the old form, the variants are the same.
        let old = PhoneNumber::parse("0168 123 4567", vn()).unwrap();
        assert_eq!(old.search_variants(), n.search_variants());
        // The new prefix 084 (VinaPhone's old 0124) is also a plausible country code prefix.
        let n = PhoneNumber::parse("0841234567", vn()).unwrap();
        assert_eq!(n.e164(), Some("+84841234567"));
        assert!(n.search_variants().contains(&"01241234567".to_owned()));
        assert!(n.search_variants().contains(&"841234567".to_owned()));
    }

    #[test]
    fn hotlines_and_short_codes_are_service_numbers() {
        for (raw, digits) in [
            ("1900 1234", "19001234"),
            ("1900-6600", "19006600"),
            ("1800 599 920", "1800599920"),
            ("1900.54.54.54", "1900545454"),
        ] {
            let n = PhoneNumber::parse(raw, vn()).unwrap();
            assert_eq!(n.kind(), PhoneKind::Service, "{raw:?}");
            assert!(n.is_service());
            assert_eq!(n.e164(), None);
            assert_eq!(n.as_str(), digits);
            assert_eq!(n.national_number(), digits);
            assert_eq!(n.country_code(), Some(84));
            assert_eq!(n.to_string(), digits);
            assert_eq!(n.search_variants(), [digits]);
            assert_eq!(n.digits_pattern(), digits);
            assert!(n.matches_text(&format!(" {raw} "), vn()));
        }
        // Written internationally it is still a hotline.
        let n = PhoneNumber::parse("+84 1900 1234", None).unwrap();
        assert!(n.is_service());
        assert_eq!(n.search_variants(), ["19001234"]);
        assert!(n.same_number(&PhoneNumber::parse("19001234", vn()).unwrap()));

        for raw in ["113", "115", "1080", "911"] {
            let n = PhoneNumber::parse(raw, vn()).unwrap();
            assert!(n.is_service(), "{raw:?}");
            assert_eq!(n.as_str(), raw);
            assert_eq!(n.search_variants(), [raw]);
        }
        // A short code needs no region to be kept as dialled.
        let short = PhoneNumber::parse("113", None).unwrap();
        assert_eq!(short.country_code(), None);
        assert!(short.same_number(&PhoneNumber::parse("113", vn()).unwrap()));
        assert!(!short.same_number(&PhoneNumber::parse("114", vn()).unwrap()));
        // A hotline needs one: 8 digits are not a short code.
        assert_eq!(err("19001234", None), PhoneError::NoRegion);
        // The same digits in two countries are two numbers.
        assert!(
            !PhoneNumber::parse("112", vn()).unwrap().same_number(&PhoneNumber::parse("112", region("DE")).unwrap())
        );
        // Australia's 1300 numbers.
        assert!(PhoneNumber::parse("1300 123 456", region("AU")).unwrap().is_service());
    }

    #[test]
    fn extensions() {
        for raw in [
            "0912345678 ext. 123",
            "0912345678 ext 123",
            "0912345678 EXT:123",
            "0912345678 extension 123",
            "0912345678 x123",
            "0912345678 X 123",
            "0912345678;ext=123",
            "tel:+84-912-345-678;ext=123",
            "0912345678#123",
            "0912 345 678 # 123",
        ] {
            let n = PhoneNumber::parse(raw, vn()).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
            assert_eq!(n.e164(), Some("+84912345678"), "{raw:?}");
            assert_eq!(n.extension(), Some("123"), "{raw:?}");
            assert_eq!(n.to_string(), "+84912345678;ext=123");
        }
        let n = PhoneNumber::parse("+84912345678;ext=123", None).unwrap();
        assert_eq!(PhoneNumber::parse(&n.to_string(), None).unwrap(), n);
        assert!(n.search_variants().iter().all(|v| v.bytes().all(|b| b.is_ascii_digit() || b == b'+')));
        for bad in ["0912345678 x", "0912345678 ext.", "0912345678 x12345678901", "0912345678 x12-34", "0912345678 x#1"]
        {
            assert_eq!(err(bad, vn()), PhoneError::BadExtension, "{bad:?}");
        }
        assert_eq!(err("0912345678 ext abc", vn()), PhoneError::Letters('a'));
        assert_eq!(err("0912345678 x1x2", vn()), PhoneError::Letters('x'));
        // A hotline hidden behind a trunk or country code is still a hotline.
        assert!(PhoneNumber::parse("01900123456", vn()).unwrap().is_service());
        assert!(PhoneNumber::parse("8419001234", vn()).unwrap().is_service());
    }

    #[test]
    fn anonymous_and_empty_caller_ids() {
        for raw in [
            "anonymous",
            "Anonymous",
            "ANONYMOUS",
            "unknown",
            "Unknown",
            "private",
            "Private Number",
            "restricted",
            "withheld",
            "unavailable",
            "sip:anonymous@anonymous.invalid",
            "+",
            " + ",
            "0",
            "00",
            "0000000000",
            "+000",
            "000-000-0000",
        ] {
            assert_eq!(err(raw, vn()), PhoneError::Anonymous, "{raw:?}");
        }
        for raw in ["", "   ", "\u{a0}", "--", "()", " . "] {
            assert_eq!(err(raw, vn()), PhoneError::Empty, "{raw:?}");
        }
    }

    #[test]
    fn letters_and_symbols_are_refused() {
        assert_eq!(err("1-800-FLOWERS", region("US")), PhoneError::Letters('f'));
        assert_eq!(err("0912 345 678 (home)", vn()), PhoneError::Letters('h'));
        assert_eq!(err("Mobile: 0912345678", vn()), PhoneError::Letters('m'));
        assert_eq!(err("09123a5678", vn()), PhoneError::Letters('a'));
        assert_eq!(err("điện thoại", vn()), PhoneError::Letters('đ'));
        assert_eq!(err("n/a", vn()), PhoneError::Letters('n'));
        assert_eq!(err("0912345678, 0987654321", vn()), PhoneError::InvalidCharacter(','));
        assert_eq!(err("*31#0912345678", vn()), PhoneError::InvalidCharacter('*'));
        assert_eq!(err("0912+345678", vn()), PhoneError::InvalidCharacter('+'));
        assert_eq!(err("++84912345678", vn()), PhoneError::InvalidCharacter('+'));
        let e = err("abc", vn());
        assert!(e.to_string().contains("letters"), "{e}");
    }

    #[test]
    fn lengths_are_checked() {
        // 16 digits is beyond E.164.
        assert_eq!(err("+1234567890123456", None), PhoneError::TooLong { digits: 16, max: 15 });
        assert_eq!(err("+8491234567890123", None), PhoneError::TooLong { digits: 16, max: 15 });
        assert_eq!(err("+8801234567890123", None), PhoneError::TooLong { digits: 16, max: 15 });
        assert!(matches!(err("0084 1234567890123456", None), PhoneError::TooLong { .. }));
        assert!(matches!(err("+998 1234567890123", None), PhoneError::TooLong { .. }));
        assert_eq!(err("091234567890", vn()), PhoneError::TooLong { digits: 11, max: 10 });
        assert_eq!(err("+84 912", None), PhoneError::TooShort { digits: 3, min: 9 });
        assert_eq!(err("0912345", vn()), PhoneError::TooShort { digits: 6, min: 9 });
        assert_eq!(err("+84", None), PhoneError::TooShort { digits: 0, min: 9 });
        assert_eq!(err("+1 212 555 014", None), PhoneError::TooShort { digits: 9, min: 10 });
        assert!(matches!(err("+998 123", None), PhoneError::TooShort { .. }));
        // The limit is on digits after the prefix: a full 15-digit number is fine.
        assert_eq!(e164("+998 123456789012", None), "+998123456789012");
        let e = err("+1234567890123456", None);
        assert!(e.to_string().contains("at most 15"), "{e}");
    }

    #[test]
    fn region_and_country_code_errors() {
        assert_eq!(err("+999 1234 5678", None), PhoneError::UnknownCountryCode);
        assert_eq!(err("+0 912345678", None), PhoneError::UnknownCountryCode);
        let aq = PhoneRegion::parse("AQ").unwrap();
        assert_eq!(err("12345678", Some(aq)), PhoneError::UnsupportedRegion(aq));
        assert!(err("12345678", Some(aq)).to_string().contains("AQ"));
        // `+` still works for a region outside the table, and its short codes are kept.
        assert_eq!(e164("+672 12 3456", Some(aq)), "+672123456");
        assert!(PhoneNumber::parse("911", Some(aq)).unwrap().is_service());
        // The right length but an impossible first digit.
        assert_eq!(err("+1 012 555 0142", None), PhoneError::Invalid { country_code: 1 });
        assert_eq!(err("+44 4123 456789", None), PhoneError::Invalid { country_code: 44 });
    }

    // --- Other countries ---------------------------------------------------------------------

    #[test]
    fn north_america() {
        let us = region("US");
        for raw in
            ["(212) 555-0142", "212-555-0142", "212.555.0142", "1-212-555-0142", "+1 (212) 555-0142", "12125550142"]
        {
            assert_eq!(e164(raw, us), "+12125550142", "{raw:?}");
        }
        let n = PhoneNumber::parse("+1 212 555 0142 x12", None).unwrap();
        assert_eq!(n.e164(), Some("+12125550142"));
        assert_eq!(n.extension(), Some("12"));
        assert_eq!(n.to_string(), "+12125550142;ext=12");
        // 011 is NANP's international prefix.
        assert_eq!(e164("011 44 20 7946 0958", us), "+442079460958");
        assert_eq!(e164("011 44 20 7946 0958", region("CA")), "+442079460958");
        assert_eq!(err("011 44 20 7946 0958", None), PhoneError::NoRegion);
        // All NANP regions share the plan.
        assert_eq!(e164("(416) 555-0199", region("CA")), "+14165550199");
        assert_eq!(e164("876 555 0199", region("JM")), "+18765550199");
        assert_eq!(
            PhoneNumber::parse("(212) 555-0142", us).unwrap().search_variants(),
            ["+12125550142", "12125550142", "0012125550142", "2125550142"]
        );
    }

    #[test]
    fn united_kingdom() {
        let gb = region("GB");
        for raw in [
            "020 7946 0958",
            "(020) 7946 0958",
            "+44 20 7946 0958",
            "+44 (0)20 7946 0958",
            "+44 020 7946 0958",
            "0044 20 7946 0958",
            "442079460958",
        ] {
            assert_eq!(e164(raw, gb), "+442079460958", "{raw:?}");
        }
        assert_eq!(e164("07700 900123", gb), "+447700900123");
        // 0114 is Sheffield, not an international prefix, outside NANP.
        assert_eq!(e164("0114 496 0000", gb), "+441144960000");
        assert_eq!(
            PhoneNumber::parse("020 7946 0958", gb).unwrap().search_variants(),
            ["+442079460958", "442079460958", "00442079460958", "02079460958", "2079460958"]
        );
    }

    #[test]
    fn russia_and_kazakhstan() {
        let ru = region("RU");
        for raw in
            ["8 (495) 123-45-67", "+7 495 123-45-67", "7 495 123 45 67", "+7 (8) 495 123 45 67", "(495) 123-45-67"]
        {
            assert_eq!(e164(raw, ru), "+74951234567", "{raw:?}");
        }
        // Toll-free 8 800: the first 8 is the trunk prefix, the second belongs to the number.
        assert_eq!(e164("8 800 555-35-35", ru), "+78005553535");
        assert_eq!(e164("+7 800 555 35 35", None), "+78005553535");
        // The old Soviet international prefix 8~10.
        assert_eq!(e164("8 10 44 20 7946 0958", ru), "+442079460958");
        // A Kazakh number from Russia (one shared plan).
        assert_eq!(e164("8 701 123 4567", ru), "+77011234567");
        assert_eq!(e164("8 701 123 4567", region("KZ")), "+77011234567");
        let n = PhoneNumber::parse("8 (495) 123-45-67", ru).unwrap();
        assert_eq!(n.search_variants(), ["+74951234567", "74951234567", "0074951234567", "84951234567", "4951234567"]);
    }

    #[test]
    fn germany_drops_the_bracketed_trunk_prefix() {
        let de = region("DE");
        for raw in [
            "+49 (0)30 1234567",
            "+49 (0) 30 1234567",
            "+49 030 1234567",
            "0049 30 1234567",
            "030 1234567",
            "030/1234567",
            "4930 1234567",
        ] {
            assert_eq!(e164(raw, de), "+49301234567", "{raw:?}");
        }
        assert_eq!(e164("+49 (0)30 1234567", None), "+49301234567");
        assert_eq!(e164("+49 (0)30 1234567", vn()), "+49301234567");
    }

    #[test]
    fn countries_without_a_trunk_prefix() {
        let it = region("IT");
        // Italian landlines keep their 0; mobiles start with 3, even 39x.
        assert_eq!(e164("06 1234 5678", it), "+390612345678");
        assert_eq!(e164("+39 06 1234 5678", None), "+390612345678");
        assert_eq!(e164("393 123 4567", it), "+393931234567");
        assert_eq!(e164("39 06 1234 5678", it), "+390612345678");
        assert_eq!(e164("612 345 678", region("ES")), "+34612345678");
        assert_eq!(e164("34 612 345 678", region("ES")), "+34612345678");
        assert_eq!(e164("8123 4567", region("SG")), "+6581234567");
        // Hungary's trunk prefix is 06.
        assert_eq!(e164("06 1 234 5678", region("HU")), "+3612345678");
        assert_eq!(e164("+36 1 234 5678", None), "+3612345678");
    }

    #[test]
    fn asia_pacific_samples() {
        for (raw, r, expected) in [
            ("090-1234-5678", "JP", "+819012345678"),
            ("010-1234-5678", "KR", "+821012345678"),
            ("138 1234 5678", "CN", "+8613812345678"),
            ("098765 43210", "IN", "+919876543210"),
            ("081 234 5678", "TH", "+66812345678"),
            ("0812-3456-789", "ID", "+628123456789"),
            ("0917 123 4567", "PH", "+639171234567"),
            ("012-345 6789", "MY", "+60123456789"),
            ("0412 345 678", "AU", "+61412345678"),
            ("0532 123 45 67", "TR", "+905321234567"),
            ("050 123 4567", "UA", "+380501234567"),
            ("(11) 91234-5678", "BR", "+5511912345678"),
            ("55 1234 5678", "MX", "+525512345678"),
            ("512 345 678", "PL", "+48512345678"),
            ("01 23 45 67 89", "FR", "+33123456789"),
            ("020 123 4567", "NL", "+31201234567"),
        ] {
            assert_eq!(e164(raw, region(r)), expected, "{raw:?} in {r}");
        }
    }

    #[test]
    fn foreign_numbers_list_only_the_variants_their_context_reads_back() {
        // Read for a Vietnamese tenant, "02079460958" would be a Vietnamese number.
        let n = PhoneNumber::parse("+44 20 7946 0958", vn()).unwrap();
        assert_eq!(n.search_variants(), ["+442079460958", "00442079460958"]);
        // With no context the number's own country is assumed.
        let n = PhoneNumber::parse("+44 20 7946 0958", None).unwrap();
        assert_eq!(
            n.search_variants(),
            ["+442079460958", "442079460958", "00442079460958", "02079460958", "2079460958"]
        );
        // A calling code outside the table: international forms only.
        let n = PhoneNumber::parse("+372 5123 4567", None).unwrap();
        assert_eq!(n.country_code(), Some(372));
        assert_eq!(n.national_number(), "51234567");
        assert_eq!(n.search_variants(), ["+37251234567", "0037251234567"]);
    }

    // --- Comparison and serialisation ---------------------------------------------------------

    #[test]
    fn same_number_and_matches_text() {
        let n = PhoneNumber::parse("+84 38 123 4567 ext 9", None).unwrap();
        assert!(n.same_number(&PhoneNumber::parse("0168 123 4567", vn()).unwrap()));
        assert!(n.same_number(&PhoneNumber::parse("0381234567", vn()).unwrap()));
        assert!(!n.same_number(&PhoneNumber::parse("0381234568", vn()).unwrap()));
        assert!(!n.same_number(&PhoneNumber::parse("+44 381234567", None).unwrap()));
        assert!(!n.same_number(&PhoneNumber::parse("1900 1234", vn()).unwrap()));
        for stored in ["0168.123.4567", "+84 38 123 45 67", "84381234567", "038-123-4567 x12", "381234567"] {
            assert!(n.matches_text(stored, vn()), "{stored:?}");
        }
        for stored in ["", "anonymous", "call me", "0381234568", "+84 912 345 678"] {
            assert!(!n.matches_text(stored, vn()), "{stored:?}");
        }
        // National text needs the region.
        assert!(!n.matches_text("0381234567", None));
        // Equality includes the extension, same_number does not.
        let a = PhoneNumber::parse("0912345678 x1", vn()).unwrap();
        let b = PhoneNumber::parse("0912345678 x2", vn()).unwrap();
        assert_ne!(a, b);
        assert!(a.same_number(&b));
        // Equality ignores the region a number was parsed in.
        assert_eq!(PhoneNumber::parse("+84912345678", None).unwrap(), PhoneNumber::parse("0912345678", vn()).unwrap());
    }

    #[test]
    fn serialises_as_its_canonical_text() {
        let n = PhoneNumber::parse("0912 345 678", vn()).unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"+84912345678\"");
        let n = PhoneNumber::parse("+1 212 555 0142 x12", None).unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"+12125550142;ext=12\"");
        let n = PhoneNumber::parse("1900 1234", vn()).unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"19001234\"");
    }

    #[test]
    fn error_messages_say_why() {
        assert_eq!(PhoneError::Empty.to_string(), "no phone number given");
        assert!(PhoneError::NoRegion.to_string().contains("default region"));
        assert!(PhoneError::TooShort { digits: 3, min: 9 }.to_string().contains("at least 9"));
        assert!(PhoneError::Anonymous.to_string().contains("anonymous"));
        assert!(PhoneError::Invalid { country_code: 84 }.to_string().contains("+84"));
    }

    // --- Tables ------------------------------------------------------------------------------

    #[test]
    fn plans_are_consistent() {
        let mut seen = std::collections::HashSet::new();
        for p in PLANS {
            assert!(PhoneRegion::parse(p.region).is_ok(), "{p:?}");
            assert!(seen.insert(p.region), "duplicate region {}", p.region);
            assert!(CALLING_CODES.binary_search(&p.code).is_ok(), "{p:?}");
            assert!(p.min >= MIN_UNKNOWN_NSN_DIGITS && p.min <= p.max, "{p:?}");
            assert!(p.code.to_string().len() + p.max <= E164_MAX_DIGITS, "{p:?}");
            assert!(!p.lead.is_empty() && p.lead.bytes().all(|b| b.is_ascii_digit()), "{p:?}");
            if let Some(trunk) = p.trunk {
                assert!(!trunk.is_empty() && trunk.bytes().all(|b| b.is_ascii_digit()), "{p:?}");
                // Otherwise a national number could not be told from one with a trunk prefix.
                assert!(!p.lead.contains(&trunk[..1]) || p.code == RU_KZ_CODE || p.code == NANP_CODE, "{p:?}");
            }
            // Plans sharing a code share a trunk prefix (`trunk_for_code` relies on it).
            assert_eq!(trunk_for_code(p.code), p.trunk, "{p:?}");
        }
        let nanp_regions = PLANS.iter().filter(|p| p.code == NANP_CODE).count();
        assert_eq!(nanp_regions, 25);
        assert!(PLANS.len() >= 60 + nanp_regions);
        for r in [
            "VN", "US", "GB", "DE", "FR", "RU", "IN", "CN", "JP", "KR", "TH", "ID", "PH", "MY", "SG", "AU", "BR", "MX",
            "ES", "IT", "NL", "PL", "TR", "UA",
        ] {
            assert!(plan_for_region(PhoneRegion::parse(r).unwrap()).is_some(), "{r}");
        }
    }

    #[test]
    fn calling_codes_are_sorted_and_prefix_free() {
        assert!(CALLING_CODES.windows(2).all(|w| w[0] < w[1]));
        for a in CALLING_CODES {
            for b in CALLING_CODES {
                let (a, b) = (a.to_string(), b.to_string());
                assert!(a == b || !b.starts_with(&a), "{a} is a prefix of {b}");
            }
        }
    }

    #[test]
    fn renumbering_table_is_a_bijection() {
        let olds: std::collections::HashSet<_> = VN_2018_RENUMBERING.iter().map(|(o, _)| o).collect();
        let news: std::collections::HashSet<_> = VN_2018_RENUMBERING.iter().map(|(_, n)| n).collect();
        assert_eq!(olds.len(), 21);
        assert_eq!(news.len(), 21);
        for (old, new) in VN_2018_RENUMBERING {
            assert_eq!(old.len(), 3);
            assert_eq!(new.len(), 2);
            let tail = "1234567";
            assert_eq!(vn_new_from_old(&format!("{old}{tail}")), Some(format!("{new}{tail}")));
            assert_eq!(vn_old_from_new(&format!("{new}{tail}")), Some(format!("{old}{tail}")));
        }
    }

    // --- Properties --------------------------------------------------------------------------

    fn any_region() -> impl Strategy<Value = Option<PhoneRegion>> {
        let regions = ["VN", "US", "GB", "RU", "KZ", "DE", "IT", "HU", "AU", "ES", "AQ"];
        prop::option::of(prop::sample::select(regions.to_vec())).prop_map(|r| r.map(|r| PhoneRegion::parse(r).unwrap()))
    }

    /// A realistic national significant number with its calling code and home region.
    fn known_number() -> impl Strategy<Value = (&'static str, u16, String)> {
        prop_oneof![
            // Vietnamese mobiles under every current prefix (renumbered ones included),
            // landlines and pre-2018 mobiles.
            "(3[2-9]|5[689]|7[06-9]|8[1-9]|9[0-9])[0-9]{7}".prop_map(|n| ("VN", 84, n)),
            "2[0-9]{9}".prop_map(|n| ("VN", 84, n)),
            "1(2[0-9]|6[2-9]|8[68]|99)[0-9]{7}".prop_map(|n| ("VN", 84, n)),
            "[2-9][0-9]{2}[2-9][0-9]{6}".prop_map(|n| ("US", 1, n)),
            "(7[0-9]{9}|20[0-9]{8}|1[0-9]{9})".prop_map(|n| ("GB", 44, n)),
            "(9[0-9]{9}|495[0-9]{7}|800[0-9]{7})".prop_map(|n| ("RU", 7, n)),
            "7[0-9]{9}".prop_map(|n| ("KZ", 7, n)),
            "(30[0-9]{7,8}|1[5-7][0-9]{8,9}|40[0-9]{6,8})".prop_map(|n| ("DE", 49, n)),
            "(3[0-9]{9}|0[1-9][0-9]{6,9})".prop_map(|n| ("IT", 39, n)),
            "[67][0-9]{8}".prop_map(|n| ("ES", 34, n)),
            "[1-9][0-9]{8}".prop_map(|n| ("AU", 61, n)),
        ]
    }

    /// Writes digits with a random separator after each digit.
    fn spaced(digits: &str, separators: &[u8]) -> String {
        let mut out = String::new();
        for (i, d) in digits.chars().enumerate() {
            out.push(d);
            match separators.get(i).copied().unwrap_or(0) % 6 {
                1 => out.push(' '),
                2 => out.push('.'),
                3 => out.push('-'),
                4 => out.push('\u{a0}'),
                _ => {}
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_never_panics(raw in any::<String>(), region in any_region()) {
            let _ = PhoneNumber::parse(&raw, region);
        }

        #[test]
        fn parse_never_panics_on_phone_like_text(
            raw in "[0-9０-９+()\\-. x#;ext=/tel:\u{a0}\u{200e}ａ]{0,32}",
            region in any_region(),
        ) {
            if let Ok(n) = PhoneNumber::parse(&raw, region) {
                // Whatever parses has a usable canonical form and at least one variant.
                prop_assert!(!n.search_variants().is_empty(), "{raw:?} → {n:?}");
                prop_assert!(n.as_str().len() <= E164_MAX_DIGITS + 1);
                let _ = n.to_string();
            }
        }

        #[test]
        fn every_variant_parses_back_to_the_same_number(
            (home, code, nsn) in known_number(),
            context in any_region(),
            separators in prop::collection::vec(any::<u8>(), 0..16),
            ext in prop::option::of("[0-9]{1,5}"),
        ) {
            let home = PhoneRegion::parse(home).unwrap();
            let mut raw = format!("+{code} {}", spaced(&nsn, &separators));
            if let Some(ext) = &ext {
                raw.push_str(&format!(" ext. {ext}"));
            }
            let n = PhoneNumber::parse(&raw, context).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
            prop_assert_eq!(n.extension(), ext.as_deref());
            // Formatting does not matter.
            let plain = PhoneNumber::parse(&format!("+{code}{nsn}"), context).unwrap();
            prop_assert!(n.same_number(&plain));

            let variants = n.search_variants();
            prop_assert_eq!(variants.first().map(String::as_str), n.e164(), "E.164 first: {:?}", variants);
            let unique: std::collections::HashSet<_> = variants.iter().collect();
            prop_assert_eq!(unique.len(), variants.len());
            let read_in = context.or(Some(home));
            for v in &variants {
                let back = PhoneNumber::parse(v, read_in);
                prop_assert!(back.as_ref().is_ok_and(|b| b.same_number(&n)), "{v:?} in {read_in:?} → {back:?} (from {raw:?})");
                // The superset patterns find every variant.
                let digits: String = v.chars().filter(char::is_ascii_digit).collect();
                prop_assert!(
                    n.digits_patterns().iter().any(|p| is_subsequence(p, &digits)),
                    "{v:?} not covered by {:?}", n.digits_patterns()
                );
            }

            // Read in its own country, every national form is listed too.
            let domestic = PhoneNumber::parse(&format!("+{code}{nsn}"), Some(home)).unwrap();
            let domestic_variants = domestic.search_variants();
            let national = domestic.national_number().to_owned();
            let with_idd = format!("00{code}{national}");
            prop_assert!(domestic_variants.contains(&with_idd), "{:?}", domestic_variants);
            if let Some(trunk) = trunk_for_code(code) {
                let with_trunk = format!("{trunk}{national}");
                prop_assert!(domestic_variants.contains(&with_trunk), "{:?}", domestic_variants);
            }
        }
    }

    fn is_subsequence(needle: &str, haystack: &str) -> bool {
        let mut hay = haystack.chars();
        needle.chars().all(|c| hay.any(|h| h == c))
    }
}
