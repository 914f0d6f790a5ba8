//! The temporary keys of the type-aware copy: their names (in the key's own hash slot, so the final rename
//! stays on one node), and the registry of those that may exist on the target right now, which the fast
//! exit of a second Ctrl-C deletes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::Duration;

use redis::Value;

use crate::redis::cluster::{hash_tag, key_in_slot, slot};
use crate::redis::conn::Conn;
use crate::redis::endpoint::{Endpoint, Timeouts};

/// Prefix of every temporary key on the target.
pub const TEMP_PREFIX: &[u8] = b"redis-ferry:tmp:";
/// TTL of a temporary key while it is being built, renewed with every page.
pub const SAFETY_TTL_MS: u64 = 600_000;
/// Keys whose name is longer than this are not spelled out inside their temporary key's name.
const MAX_NAME_IN_TEMP: usize = 256;

/// A fresh temporary name in the same hash slot as `key`: `redis-ferry:tmp:{TAG}:<random>`, where TAG
/// is the key's own hash tag, else the key itself (when it is short, not empty, and has no `}`, so
/// that the braces around it make it the tag), else a number whose slot is the key's.
pub fn temp_name(key: &[u8]) -> Vec<u8> {
    let mut name = TEMP_PREFIX.to_vec();
    name.push(b'{');
    match hash_tag(key) {
        Some(tag) => name.extend_from_slice(tag),
        None if !key.is_empty() && key.len() <= MAX_NAME_IN_TEMP && !key.contains(&b'}') => {
            name.extend_from_slice(key)
        }
        None => name.extend_from_slice(&key_in_slot(slot(key))),
    }
    name.extend_from_slice(format!("}}:{:016x}", random()).as_bytes());
    name
}

/// A number that differs between threads, calls and processes (xorshift seeded by the clock, the
/// process id and a counter).
pub fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// The temporary keys that may exist on the target right now (being built, or left by a failed attempt
/// and not deleted yet), and where the target is: what the fast exit of a second Ctrl-C deletes
/// ([`drop_in_flight`]) before the process quits.
pub struct InFlight {
    /// The target, with whether it is a cluster; set when the typed threads start.
    target: OnceLock<(Endpoint, bool)>,
    /// The temporary names.
    names: Mutex<Vec<Vec<u8>>>,
    /// Held (shared) by every typed write while it is sent and answered; true once the fast exit has
    /// closed it: from then on no typed write is sent, so none can make a temporary key after the
    /// fast exit deleted them.
    gate: RwLock<bool>,
}

/// The one registry of the process.
pub static IN_FLIGHT: InFlight =
    InFlight { target: OnceLock::new(), names: Mutex::new(Vec::new()), gate: RwLock::new(false) };

impl InFlight {
    /// Says where the temporary keys are made.
    pub fn aim(&self, target: &Endpoint, cluster: bool) {
        let _ = self.target.set((target.clone(), cluster));
    }

    fn names(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn add(&self, tmp: &[u8]) {
        self.names().push(tmp.to_vec());
    }

    /// Runs a typed write unless the fast exit has begun (`None` then).
    pub(super) fn write<T>(&self, send: impl FnOnce() -> T) -> Option<T> {
        let closed = self.gate.read().unwrap_or_else(|e| e.into_inner());
        (!*closed).then(send)
    }

    pub(super) fn remove(&self, tmp: &[u8]) {
        let mut names = self.names();
        if let Some(i) = names.iter().position(|n| n == tmp) {
            names.swap_remove(i);
        }
    }
}

/// Deletes the temporary keys in [`IN_FLIGHT`] on a connection of its own, giving up after `within` (the
/// caller then quits whatever happened): first no typed write may start (the gate closes once the writes
/// under way are answered), then the names registered are deleted. All of it runs on a thread of its
/// own, so that a target that does not answer costs no more than `within`. Returns how many were
/// deleted, and how many may be left (they expire within [`SAFETY_TTL_MS`]).
pub fn drop_in_flight(within: Duration) -> (usize, usize) {
    let Some((target, cluster)) = IN_FLIGHT.target.get().cloned() else { return (0, 0) };
    let registered = IN_FLIGHT.names().len();
    if registered == 0 {
        return (0, 0);
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        *IN_FLIGHT.gate.write().unwrap_or_else(|e| e.into_inner()) = true;
        let names = IN_FLIGHT.names().clone();
        let timeouts = Timeouts { connect: within / 2, io: within / 2 };
        let conn =
            if cluster { Conn::open_cluster(&target, timeouts) } else { Conn::open(&target, timeouts) };
        let deleted = conn.ok().map_or(0, |mut conn| {
            let units: Vec<usize> = (0..names.len()).collect();
            let (mut replies, _) = conn.round(
                &units,
                |i| Some(&names[i][..]),
                |pipe, i| {
                    pipe.cmd("DEL").arg(&names[i][..]);
                },
            );
            // An error reply (NOPERM, CLUSTERDOWN) deleted nothing.
            (0..names.len()).filter(|&i| matches!(replies.take::<1>(i), Some([Value::Int(_)]))).count()
        });
        let _ = tx.send((deleted, names.len() - deleted));
    });
    rx.recv_timeout(within).unwrap_or((0, registered))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    #[test]
    fn temporary_names_stay_in_the_key_slot() {
        let keys: Vec<&[u8]> = vec![
            b"plain",
            b"{tag}rest",
            b"a{b",
            b"a}b",
            b"a{}b",
            b"}{x}",
            b"",
            b"\xff\x00{\n}",
            b"{",
            b"}",
            b"{}",
        ];
        for key in keys {
            let tmp = temp_name(key);
            assert!(tmp.starts_with(TEMP_PREFIX), "{tmp:?}");
            assert_eq!(slot(&tmp), slot(key), "key {:?} temp {:?}", Key(key.to_vec()), Key(tmp.clone()));
            assert_ne!(temp_name(key), tmp, "two temp names for one key must differ");
        }
        let long = vec![b'x'; 1000];
        let tmp = temp_name(&long);
        assert!(tmp.len() < 64 && slot(&tmp) == slot(&long));
        assert!(temp_name(b"session:42").starts_with(b"redis-ferry:tmp:{session:42}:"));
    }

    #[test]
    fn every_slot_has_a_small_tag() {
        for s in (0..16384).step_by(97) {
            assert_eq!(crate::redis::cluster::slot(&key_in_slot(s)), s);
        }
    }
}
