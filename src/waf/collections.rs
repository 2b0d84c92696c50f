//! Persistent collections (`IP`, `GLOBAL`, `SESSION`, `USER`, `RESOURCE`):
//! kept in memory across transactions, opened with `initcol`, written back
//! when the transaction ends, forgotten `SecCollectionTimeout` seconds after
//! their last write. Variables can expire on their own (`expirevar`).
//!
//! The store is bounded: past `max_records` it drops expired records, and
//! if none are, it stops creating new ones rather than grow (a client
//! cannot exhaust memory by varying the key).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::waf::seclang::ast::Var;

/// One stored variable.
#[derive(Debug, Clone)]
pub struct StoredVar {
    pub value: Vec<u8>,
    pub expires: Option<Instant>,
}

#[derive(Debug)]
struct Record {
    vars: HashMap<String, StoredVar>,
    expires: Instant,
}

#[derive(Debug)]
pub struct CollectionStore {
    records: Mutex<HashMap<(Var, String), Record>>,
    max_records: usize,
}

impl CollectionStore {
    pub fn new(max_records: usize) -> CollectionStore {
        CollectionStore {
            records: Mutex::new(HashMap::new()),
            max_records,
        }
    }

    /// The live variables of record (`collection`, `key`).
    pub fn load(&self, collection: Var, key: &str, now: Instant) -> HashMap<String, StoredVar> {
        let Ok(records) = self.records.lock() else {
            return HashMap::new();
        };
        match records.get(&(collection, key.to_string())) {
            Some(record) if record.expires > now => record
                .vars
                .iter()
                .filter(|(_, v)| v.expires.is_none_or(|e| e > now))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            _ => HashMap::new(),
        }
    }

    /// Replaces record (`collection`, `key`), alive for `timeout`.
    pub fn store(
        &self,
        collection: Var,
        key: &str,
        vars: HashMap<String, StoredVar>,
        timeout: Duration,
        now: Instant,
    ) {
        let Ok(mut records) = self.records.lock() else {
            return;
        };
        let id = (collection, key.to_string());
        if !records.contains_key(&id) && records.len() >= self.max_records {
            records.retain(|_, r| r.expires > now);
            if records.len() >= self.max_records {
                return;
            }
        }
        records.insert(
            id,
            Record {
                vars,
                expires: expiry(now, timeout),
            },
        );
    }

    pub fn len(&self) -> usize {
        self.records.lock().map_or(0, |r| r.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `now + after`, with `after` capped at ten years: timeouts come from
/// rule files and request-influenced macros, and an `Instant` that
/// overflows panics.
pub fn expiry(now: Instant, after: Duration) -> Instant {
    const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 86_400);
    now.checked_add(after.min(TEN_YEARS)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_variables_expire_and_the_store_stays_bounded() {
        let store = CollectionStore::new(2);
        let now = Instant::now();
        let mut vars = HashMap::new();
        vars.insert(
            "hits".to_string(),
            StoredVar {
                value: b"3".to_vec(),
                expires: None,
            },
        );
        vars.insert(
            "flag".to_string(),
            StoredVar {
                value: b"1".to_vec(),
                expires: Some(now + Duration::from_secs(5)),
            },
        );
        store.store(Var::Ip, "1.2.3.4", vars, Duration::from_secs(60), now);
        let later = now + Duration::from_secs(10);
        let loaded = store.load(Var::Ip, "1.2.3.4", later);
        assert_eq!(
            loaded.get("hits").map(|v| v.value.as_slice()),
            Some(&b"3"[..])
        );
        assert!(!loaded.contains_key("flag"), "expirevar'd variable is gone");
        assert!(
            store
                .load(Var::Ip, "1.2.3.4", now + Duration::from_secs(61))
                .is_empty()
        );

        store.store(Var::Ip, "b", HashMap::new(), Duration::from_secs(60), now);
        store.store(Var::Ip, "c", HashMap::new(), Duration::from_secs(60), now);
        assert_eq!(store.len(), 2, "full: no new record");
        store.store(
            Var::Ip,
            "d",
            HashMap::new(),
            Duration::from_secs(1),
            now + Duration::from_secs(120),
        );
        assert_eq!(store.len(), 1, "expired records make room");
    }
}
