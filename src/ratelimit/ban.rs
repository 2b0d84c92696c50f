//! Bans of repeat offenders (like fail2ban): a client refused `after` times
//! within `within` is refused outright for `duration`. The list outlives
//! config reloads, is bounded, and the admin API shows and lifts bans.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// When to ban and for how long (nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanPolicy {
    pub after: u32,
    pub within: u64,
    pub duration: u64,
}

#[derive(Debug, Default)]
pub struct BanList {
    records: Mutex<HashMap<IpAddr, Record>>,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    strikes: u32,
    window_start: u64,
    banned_until: u64,
}

/// Records kept at most; beyond it the stale ones go first.
const MAX_RECORDS: usize = 100_000;

impl BanList {
    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Record>> {
        // Plain numbers: a poisoned lock is still consistent.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_banned(&self, ip: IpAddr, now: u64) -> bool {
        self.records()
            .get(&ip.to_canonical())
            .is_some_and(|r| r.banned_until > now)
    }

    /// Counts one refusal of `ip`; true when that bans it.
    pub fn strike(&self, ip: IpAddr, now: u64, policy: &BanPolicy) -> bool {
        let mut records = self.records();
        if records.len() >= MAX_RECORDS {
            records.retain(|_, r| {
                r.banned_until > now || now.saturating_sub(r.window_start) < policy.within
            });
        }
        if records.len() >= MAX_RECORDS {
            return false;
        }
        let record = records.entry(ip.to_canonical()).or_insert(Record {
            strikes: 0,
            window_start: now,
            banned_until: 0,
        });
        if now.saturating_sub(record.window_start) >= policy.within {
            record.strikes = 0;
            record.window_start = now;
        }
        record.strikes += 1;
        if record.strikes >= policy.after {
            record.strikes = 0;
            record.window_start = now;
            record.banned_until = now.saturating_add(policy.duration);
            return true;
        }
        false
    }

    /// The banned addresses with the nanoseconds each has left.
    pub fn list(&self, now: u64) -> Vec<(IpAddr, u64)> {
        let mut bans: Vec<(IpAddr, u64)> = self
            .records()
            .iter()
            .filter(|(_, r)| r.banned_until > now)
            .map(|(ip, r)| (*ip, r.banned_until - now))
            .collect();
        bans.sort();
        bans
    }

    /// Lifts the ban on `ip` (and forgets its strikes); false if it had none.
    pub fn lift(&self, ip: IpAddr, now: u64) -> bool {
        self.records()
            .remove(&ip.to_canonical())
            .is_some_and(|r| r.banned_until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn strikes_within_the_window_ban_and_the_ban_ends() {
        let policy = BanPolicy {
            after: 3,
            within: 60 * SEC,
            duration: 600 * SEC,
        };
        let bans = BanList::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!bans.strike(ip, 0, &policy));
        assert!(!bans.strike(ip, SEC, &policy));
        // The window passed: counting starts over.
        assert!(!bans.strike(ip, 70 * SEC, &policy));
        assert!(!bans.strike(ip, 71 * SEC, &policy));
        assert!(bans.strike(ip, 72 * SEC, &policy));
        assert!(bans.is_banned(ip, 100 * SEC));
        assert_eq!(bans.list(100 * SEC), vec![(ip, 572 * SEC)]);
        assert!(!bans.is_banned(ip, 672 * SEC), "the ban ends");
        assert!(!bans.strike(ip, 700 * SEC, &policy));
        assert!(!bans.lift(ip, 700 * SEC), "no ban to lift");
    }
}
