//! The screen pop: who is calling, looked up the moment the phone rings.
//!
//! A queue rings several agents at once and a platform may repeat `call.started`, so lookups
//! are shared: concurrent pops for one number of one connection wait for a single CRM lookup
//! (single flight), and its answer is reused for the channel's `screen_pop_cache_secs`. A
//! failed lookup is not kept: the next pop tries again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crmhub_core::call::ANONYMOUS;
use crmhub_core::crm::{ContactSummary, Crm, CrmError};
use crmhub_core::phone::PhoneNumber;
use crmhub_core::{ConnectionId, PhoneRegion, TenantId};
use serde::Serialize;
use tokio::sync::OnceCell;

/// Numbers remembered at most; beyond it, expired entries are dropped, then everything.
const MAX_ENTRIES: usize = 10_000;

type Key = (TenantId, ConnectionId, String);

struct Entry {
    /// The lookup's answer and when it arrived.
    answer: OnceCell<(Instant, Arc<Vec<ContactSummary>>)>,
}

impl Entry {
    fn usable(&self, ttl: Duration) -> bool {
        self.answer.get().is_none_or(|(at, _)| at.elapsed() < ttl)
    }
}

/// Lookups by number, shared per connection.
#[derive(Clone, Default)]
pub struct ScreenPops {
    entries: Arc<Mutex<HashMap<Key, Arc<Entry>>>>,
}

/// How the lookup went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A CRM lookup made for this pop (or one it waited for).
    Crm,
    /// A recent lookup's answer.
    Cache,
    /// No lookup: the caller id is withheld.
    Withheld,
}

impl Source {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Crm => "crm",
            Self::Cache => "cache",
            Self::Withheld => "withheld",
        }
    }
}

impl ScreenPops {
    /// The contacts with `number`, and where the answer came from.
    pub async fn lookup(
        &self,
        owner: (TenantId, ConnectionId),
        number: &PhoneNumber,
        ttl: Duration,
        crm: &dyn Crm,
    ) -> Result<(Arc<Vec<ContactSummary>>, Source), CrmError> {
        let key = (owner.0, owner.1, number.as_str().to_owned());
        let entry = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            match entries.get(&key).filter(|e| e.usable(ttl)) {
                Some(entry) => entry.clone(),
                None => {
                    if entries.len() >= MAX_ENTRIES {
                        entries.retain(|_, e| e.usable(ttl));
                        if entries.len() >= MAX_ENTRIES {
                            entries.clear();
                        }
                    }
                    let entry = Arc::new(Entry { answer: OnceCell::new() });
                    entries.insert(key, entry.clone());
                    entry
                }
            }
        };
        let mut looked_up = false;
        let (_, contacts) = entry
            .answer
            .get_or_try_init(|| async {
                looked_up = true;
                let contacts = crm.find_by_phone(number).await?;
                Ok::<_, CrmError>((Instant::now(), Arc::new(contacts)))
            })
            .await?;
        Ok((contacts.clone(), if looked_up { Source::Crm } else { Source::Cache }))
    }

    /// Forgets every answer for a connection (after it changed).
    pub fn forget(&self, connection: ConnectionId) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).retain(|(_, c, _), _| *c != connection);
    }
}

/// The number to look up, or `None` for a withheld caller id. The number was checked when the
/// event was read, so a parse failure here is only a withheld one.
pub fn lookup_number(raw: Option<&str>, region: Option<PhoneRegion>) -> Option<PhoneNumber> {
    PhoneNumber::parse(raw.filter(|r| *r != ANONYMOUS)?, region).ok()
}
