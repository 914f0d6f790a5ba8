//! Test support for the integration suite, one file per kind of help: real `redis-server` processes
//! (`server.rs`) and Redis Clusters of them (`cluster.rs`), running the `redis-ferry` binary with a hard
//! time limit (`ferry.rs`), parsers for its summary lines (`summary.rs`) and its CSV files (`csv.rs`),
//! asking a server (`query.rs`), filling a source (`fill.rs`), comparing keys between two servers
//! (`compare.rs`), and a source/target pair with the fixtures built on it (`pair.rs`).
//!
//! It does not mock anything: every helper talks to a real server, and every server started here is
//! killed and reaped by its own `Child` handle when its `RedisServer` is dropped. The helpers that
//! talk to servers take any `redis::ConnectionLike`, so they work on a cluster connection too.

mod cluster;
mod compare;
mod csv;
mod ferry;
mod fill;
mod pair;
mod query;
mod server;
mod summary;

pub use self::csv::*;
pub use cluster::*;
pub use compare::*;
pub use ferry::*;
pub use fill::*;
pub use pair::*;
pub use query::*;
pub use server::*;
pub use summary::*;
