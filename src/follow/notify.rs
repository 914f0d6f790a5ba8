//! `notify-keyspace-events` on the source: a follow needs the key-event class and the classes of every
//! change ([`NEEDED`]), on every primary. Without them it refuses to start (exit 2, one line that names
//! the missing classes and how to set them) rather than turn into a silent snapshot; with
//! `--enable-notifications` it sets them with `CONFIG SET`, keeping the classes already set, and puts the
//! old value back at the end of the run (also after Ctrl-C or an abort, and on a second Ctrl-C). A source
//! that refuses `CONFIG GET` (a managed service) is refused with how to set the parameter there, unless
//! the operator vouches for it (`--notifications-configured`).

use std::sync::Mutex;

use crate::exit::Fatal;
use crate::redis::connect::connect;
use crate::redis::endpoint::{Endpoint, Timeouts};
use crate::redis::reply;

/// The values this run changed, to put back: (server, its old value).
static CHANGED: Mutex<Vec<(Endpoint, String, Timeouts)>> = Mutex::new(Vec::new());

/// What the run may do about notifications that are off.
#[derive(Debug, Clone, Copy)]
pub struct Permission {
    /// `--enable-notifications`: set what is missing, restore at the end.
    pub enable: bool,
    /// `--notifications-configured`: where CONFIG is refused, trust that they are on.
    pub vouched: bool,
}

/// Checks (and, with permission, sets) the classes on each of `nodes`: the primaries at the start, and a
/// primary that appears later. On a refusal, what this call changed already is put back before it
/// returns.
pub fn prepare(nodes: &[Endpoint], timeouts: Timeouts, may: Permission) -> Result<(), Fatal> {
    let before = changed().len();
    for node in nodes {
        if let Err(e) = prepare_one(node, timeouts, may) {
            let made: Vec<_> = changed().drain(before..).collect();
            put_back(made);
            return Err(e);
        }
    }
    Ok(())
}

fn changed() -> std::sync::MutexGuard<'static, Vec<(Endpoint, String, Timeouts)>> {
    CHANGED.lock().unwrap_or_else(|e| e.into_inner())
}

fn prepare_one(node: &Endpoint, timeouts: Timeouts, may: Permission) -> Result<(), Fatal> {
    let mut con = connect(node, timeouts)
        .map_err(|e| reply::at_start(&e, format!("cannot connect to the source {node}: {e}")))?;
    let got: Result<Vec<String>, _> =
        redis::cmd("CONFIG").arg("GET").arg("notify-keyspace-events").query(&mut con);
    let value = match got {
        Ok(pair) if pair.len() == 2 => pair[1].clone(),
        Ok(_) | Err(_) if may.vouched => {
            log::warn!(
                "the source {node} does not show notify-keyspace-events; trusting --notifications-configured \
                 that it holds at least `{NEEDED}`"
            );
            return Ok(());
        }
        Ok(_) => String::new(),
        Err(e) if reply::is_connection_error(&e) => {
            return Err(reply::at_start(&e, format!("cannot read CONFIG from the source {node}: {e}")))
        }
        Err(e) => {
            return Err(Fatal::bad_input(format!(
                "the source {node} refuses CONFIG GET notify-keyspace-events ({}): on a managed service, set the \
                 parameter notify-keyspace-events to `{NEEDED}` (or `AE`) in its parameter group, then give \
                 --notifications-configured",
                reply::one_line(&e.to_string())
            )))
        }
    };
    let lack = missing(&value);
    if lack.is_empty() {
        return Ok(());
    }
    let wanted = with_needed(&value);
    if !may.enable {
        return Err(Fatal::bad_input(format!(
            "keyspace notifications on the source {node} lack the classes `{lack}` (notify-keyspace-events is \
             `{value}`): a follow would miss changes. Set them (CONFIG SET notify-keyspace-events {wanted}), or \
             give --enable-notifications to have them set now and `{value}` restored at exit"
        )));
    }
    let set: Result<(), _> =
        redis::cmd("CONFIG").arg("SET").arg("notify-keyspace-events").arg(&wanted).query(&mut con);
    if let Err(e) = set {
        return Err(Fatal::bad_input(format!(
            "--enable-notifications: the source {node} refuses CONFIG SET notify-keyspace-events ({}): set the \
             parameter to `{wanted}` where the server is managed, then give --notifications-configured",
            reply::one_line(&e.to_string())
        )));
    }
    log::info!(
        "set notify-keyspace-events to `{wanted}` on the source {node} (was `{value}`; restored at exit)"
    );
    changed().push((node.clone(), value, timeouts));
    Ok(())
}

/// Puts back every value this run changed; returns how many could not be (logged).
pub fn restore() -> usize {
    let all = std::mem::take(&mut *changed());
    put_back(all)
}

/// Puts back the values of `made`; returns how many could not be.
fn put_back(made: Vec<(Endpoint, String, Timeouts)>) -> usize {
    let mut left = 0;
    for (node, value, timeouts) in made {
        let put: Result<(), String> =
            connect(&node, timeouts).map_err(|e| e.to_string()).and_then(|mut c| {
                redis::cmd("CONFIG")
                    .arg("SET")
                    .arg("notify-keyspace-events")
                    .arg(&value)
                    .query(&mut c)
                    .map_err(|e| e.to_string())
            });
        match put {
            Ok(()) => log::info!("restored notify-keyspace-events to `{value}` on the source {node}"),
            Err(e) => {
                left += 1;
                log::error!("cannot restore notify-keyspace-events to `{value}` on the source {node}: {e}");
            }
        }
    }
    left
}

/// The notification classes a follow needs: key-event (`E`), generic (`g`), string (`$`), list (`l`),
/// set (`s`), hash (`h`), sorted set (`z`), stream (`t`), expired (`x`) and evicted (`e`).
pub const NEEDED: &str = "Eg$lshztxe";

/// What `notify-keyspace-events` (a value of it) lacks of [`NEEDED`]; `A` stands for `g$lshztxe` (and
/// `d`, module types).
pub fn missing(value: &str) -> String {
    let all = value.contains('A');
    NEEDED.chars().filter(|&c| !(value.contains(c) || (all && c != 'E'))).collect()
}

/// The value to set so that `value` has every class of [`NEEDED`], keeping the ones it has.
pub fn with_needed(value: &str) -> String {
    format!("{value}{}", missing(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classes_a_follow_needs() {
        assert_eq!(missing(""), "Eg$lshztxe");
        assert_eq!(missing("AE"), "");
        assert_eq!(missing("KEA"), "");
        assert_eq!(missing("A"), "E");
        assert_eq!(missing("Ex"), "g$lshzte");
        assert_eq!(missing("KEg$lshztxe"), "");
        assert_eq!(missing("Eg$lshzxe"), "t", "streams are class t");
        assert_eq!(missing("Kg$lshztxe"), "E");
        assert_eq!(with_needed("Kx"), "KxEg$lshzte");
        assert_eq!(missing(&with_needed("Kx")), "");
    }
}
