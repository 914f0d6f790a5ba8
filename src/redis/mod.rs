//! Talking to Redis: the bottom floor, which knows nothing of stages, sources or sinks.
//!
//! - [`endpoint`]: where a server is and how to reach it (plain data, the leaf every room uses);
//! - [`connect`]: making one connection (login, db, TLS) and saying why it could not be made; [`wire`],
//!   the connection's socket and its RESP reader; [`pubsub`], a pattern subscription on one;
//! - [`conn`]: the routed connection each thread owns (one server, or every primary of a cluster), made
//!   of links to one server each (`link.rs`, where `--read-from replica` picks and checks a replica);
//!   [`pipe`], the commands of one of its rounds, packed as they are built; [`replies`], what a round
//!   answers;
//! - [`cluster`]: key slots and the slot map (CLUSTER NODES), pure parsing; [`slots`]: sets of slots, shards;
//! - [`server`]: what INFO says a server is; [`memory`]: its memory, summed over a cluster;
//! - [`reply`]: what replies and errors mean (the CSV's error vocabulary, transient errors, refusals);
//! - [`clock`]: time as the servers keep it, and deadlines;
//! - [`glob`]: Redis's own glob matching.

pub mod clock;
pub mod cluster;
pub mod conn;
pub mod connect;
pub mod endpoint;
pub mod glob;
mod link;
pub mod memory;
pub mod pipe;
pub mod pubsub;
pub mod replies;
pub mod reply;
pub mod server;
pub mod slots;
pub mod wire;
