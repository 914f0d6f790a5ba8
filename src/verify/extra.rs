//! `--check-extra`: keys the target holds that the source does not.
//!
//! A second scanner walks the target with the same `--match` / `--type` filters (a source of
//! `copy`, handed a target connection), and one thread checks each of its batches with one pipeline of
//! EXISTS on the source. A key the source lacks is looked up once more on the target: if it is gone
//! there too, it expired during the check (a copy carries the source's deadline) and is not extra.
//! Keys present on both sides are the main comparison's business and get no verdict here.

use redis::Value;

use crate::config::{Keys, VerifyConfig};
use crate::exit::Fatal;
use crate::key::Key;
use crate::redis::conn::Conn;
use crate::redis::reply;
use crate::source::{self, Source};

use super::compare::{Kind, Verdict};

/// The extra-key checker's own connections.
pub struct Extra {
    /// Connection to the source, for EXISTS.
    pub source: Conn,
    /// Connection to the target, for the second look.
    pub target: Conn,
}

impl Extra {
    /// The verdicts of the target keys of `keys` that are extra or could not be checked, with their
    /// index in the batch. `Err` only when a connection failed.
    pub fn batch(&mut self, keys: &[Key]) -> redis::RedisResult<Vec<(usize, Verdict)>> {
        let on_source = exists(&mut self.source, &keys.iter().collect::<Vec<_>>())?;
        let mut out = Vec::new();
        let mut absent = Vec::new();
        for (i, reply) in on_source.into_iter().enumerate() {
            match reply {
                Value::Int(0) => absent.push(i),
                Value::Int(_) => {}
                Value::ServerError(e) => {
                    let (code, message) = reply::classify_reply(&e);
                    out.push((i, Verdict::Error(code, message)));
                }
                other => {
                    out.push((i, Verdict::Error("PROTOCOL".into(), format!("EXISTS replied {other:?}"))))
                }
            }
        }
        if absent.is_empty() {
            return Ok(out);
        }
        let on_target = exists(&mut self.target, &absent.iter().map(|&i| &keys[i]).collect::<Vec<_>>())?;
        for (i, reply) in absent.into_iter().zip(on_target) {
            match reply {
                Value::Int(0) => log::debug!("{}: gone from the target during the check", keys[i]),
                Value::ServerError(e) => {
                    let (code, message) = reply::classify_reply(&e);
                    out.push((i, Verdict::Error(code, message)));
                }
                _ => out.push((i, Verdict::Differs(Kind::Extra, "not on the source".into()))),
            }
        }
        Ok(out)
    }

    /// Reconnects both sides after a connection error.
    pub fn reconnect(&mut self) -> Result<(), crate::redis::connect::ConnectError> {
        self.source.reconnect()?;
        self.target.reconnect()
    }
}

fn exists(conn: &mut Conn, keys: &[&Key]) -> redis::RedisResult<Vec<Value>> {
    let replies = conn.query(
        keys.len(),
        |u| Some(keys[u].as_bytes()),
        |pipe, u| {
            pipe.cmd("EXISTS").arg(keys[u].as_bytes());
        },
    )?;
    Ok(replies.into_values())
}

/// The scan of the target: its own connection (and one per primary of a cluster), checked to allow SCAN,
/// with the filters of the main scan. `--keys-from` never gets here (config refuses it with
/// `--check-extra`).
pub fn target_scan(cfg: &VerifyConfig, conn: Conn) -> Result<Box<dyn Source>, Fatal> {
    if let Keys::File(_) = &cfg.keys {
        return Err(Fatal::bad_input("--check-extra cannot be combined with --keys-from"));
    }
    source::open(&cfg.keys, None, conn, cfg.timeouts, cfg.slots())
        .map_err(|e| Fatal { message: format!("--check-extra: {}", e.message), ..e })
}
