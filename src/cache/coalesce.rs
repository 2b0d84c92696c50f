//! Request coalescing: at most one origin fetch per key at a time. The
//! first request for a key that must go to the origin becomes its leader
//! and holds a `Lead`; the others wait for it to end, then look in the
//! store again.
//!
//! How a lead ends tells the waiters what to do:
//! - `Stored`: look again; the answer is in the store;
//! - `Uncacheable`: the response could not be shared, so each waiter
//!   goes to the origin itself;
//! - dropped without either (the leader failed, timed out or its client
//!   went away): the lead is free, and the next waiter to ask takes it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Stored,
    Uncacheable,
    Abandoned,
}

#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<String, watch::Receiver<Outcome>>>,
}

/// The right to fetch a key from the origin. Ending it (or dropping it)
/// releases the waiters.
pub struct Lead {
    flights: Arc<Flights>,
    key: String,
    done: watch::Sender<Outcome>,
}

/// A place in line behind another request's fetch.
pub struct Wait {
    rx: watch::Receiver<Outcome>,
}

pub enum Joined {
    Lead(Lead),
    Wait(Wait),
}

impl Flights {
    /// Becomes the leader for `key`, or a waiter if a fetch is running.
    pub fn join(self: &Arc<Self>, key: &str) -> Joined {
        let mut map = match self.map.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(rx) = map.get(key)
            && *rx.borrow() == Outcome::Pending
        {
            return Joined::Wait(Wait { rx: rx.clone() });
        }
        let (done, rx) = watch::channel(Outcome::Pending);
        map.insert(key.to_string(), rx);
        Joined::Lead(Lead {
            flights: Arc::clone(self),
            key: key.to_string(),
            done,
        })
    }

    /// Fetches running now.
    pub fn in_flight(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }
}

impl Lead {
    /// Ends the lead, telling the waiters how.
    pub fn finish(self, outcome: Outcome) {
        self.release(outcome);
    }

    fn release(&self, outcome: Outcome) {
        // Leave the map first: a waiter woken by the send must find the
        // key free when it asks to lead.
        if let Ok(mut map) = self.flights.map.lock()
            && map
                .get(&self.key)
                .is_some_and(|rx| rx.same_channel(&self.done.subscribe()))
        {
            map.remove(&self.key);
        }
        self.done.send_if_modified(|current| {
            if *current == Outcome::Pending {
                *current = outcome;
                true
            } else {
                false
            }
        });
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.release(Outcome::Abandoned);
    }
}

impl Wait {
    /// Waits for the lead to end.
    pub async fn done(mut self) -> Outcome {
        match self.rx.wait_for(|o| *o != Outcome::Pending).await {
            Ok(outcome) => *outcome,
            // The sender went without a word: treat as abandoned.
            Err(_) => Outcome::Abandoned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_second_request_waits_for_the_first() {
        let flights = Arc::new(Flights::default());
        let Joined::Lead(lead) = flights.join("k") else {
            panic!("first must lead")
        };
        let Joined::Wait(wait) = flights.join("k") else {
            panic!("second must wait")
        };
        lead.finish(Outcome::Stored);
        assert_eq!(wait.done().await, Outcome::Stored);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_dropped_leader_hands_the_lead_over() {
        let flights = Arc::new(Flights::default());
        let Joined::Lead(lead) = flights.join("k") else {
            panic!("first must lead")
        };
        let Joined::Wait(wait) = flights.join("k") else {
            panic!("second must wait")
        };
        drop(lead);
        assert_eq!(wait.done().await, Outcome::Abandoned);
        assert!(matches!(flights.join("k"), Joined::Lead(_)));
    }
}
