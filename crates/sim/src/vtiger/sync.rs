//! `sync` as it behaves once the two stock-PHP-8 defects are patched (contract §7). On a stock
//! install the server answers HTTP 500 before getting here.

use super::error::{self, Failure, WsResult};
use super::json::Out;
use super::modules;
use super::records::{Store, render};

/// Distinct `modifiedtime` values taken per call.
const DISTINCT_TIMES_PER_CALL: usize = 100;

pub(crate) struct SyncRequest<'a> {
    pub(crate) modified_time: Option<&'a str>,
    pub(crate) element_type: Option<&'a str>,
    pub(crate) sync_type: Option<&'a str>,
    pub(crate) user_id: u64,
}

pub(crate) fn sync(store: &Store, req: &SyncRequest<'_>) -> WsResult<Out> {
    // Without a module (or for Emails) sync dies even on patched installs.
    let element_type = req.element_type.ok_or(Failure::Fatal)?;
    if element_type == "Emails" {
        return Err(Failure::Fatal);
    }
    let schema = modules::by_name(element_type).filter(|s| s.writable).ok_or_else(error::denied)?;
    // "0" and missing arrive here alike (PHP falsy), i.e. from the beginning.
    let since = req.modified_time.and_then(|t| t.trim().parse::<i64>().ok()).unwrap_or(0);
    // Observed on 8.2.0: without `syncType`, with `user`, or with any unknown value, only records
    // the caller owns come back; `userandgroup` adds groups the caller belongs to (the simulated
    // admin belongs to none, as on a fresh install, so a record assigned to 20x2 is left out);
    // `application` returns everyone's.
    let owners: Option<Vec<String>> = match req.sync_type {
        Some("application") => None,
        _ => Some(vec![format!("19x{}", req.user_id)]),
    };
    let mut changed: Vec<(i64, u64, bool)> = store
        .all_of(schema)
        .filter(|(_, r)| r.modified_at > since)
        .filter(|(_, r)| {
            owners.as_ref().is_none_or(|o| r.fields.get("assigned_user_id").is_some_and(|a| o.contains(a)))
        })
        .map(|(id, r)| (r.modified_at, id, r.deleted))
        .collect();
    changed.sort_unstable();
    let mut times: Vec<i64> = changed.iter().map(|(t, _, _)| *t).collect();
    times.dedup();
    let more = times.len() > DISTINCT_TIMES_PER_CALL;
    let last = times.get(DISTINCT_TIMES_PER_CALL.min(times.len()).saturating_sub(1)).copied().unwrap_or(since);
    let mut updated = Vec::new();
    let mut deleted = Vec::new();
    for (t, crmid, is_deleted) in changed {
        if t > last {
            break;
        }
        if is_deleted {
            deleted.push(Out::Str(format!("{}x{crmid}", schema.prefix)));
        } else if let Some(record) = store.get(crmid) {
            updated.push(render(schema, crmid, &record.fields, false));
        }
    }
    Ok(Out::obj([
        ("updated", Out::Arr(updated)),
        ("deleted", Out::Arr(deleted)),
        ("more", Out::Bool(more)),
        ("lastModifiedTime", Out::Int(last)),
    ]))
}
