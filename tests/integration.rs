//! End-to-end tests of the `redis-ferry` binary against real `redis-server` processes, one folder per
//! subject, each opening with the promises it checks; the helpers they share are in tests/support.
//! Each test starts its own servers on free 127.0.0.1 ports, so tests run in parallel, and nothing is
//! mocked: signals are real signals, a lock is contended by two real processes, a cluster is real
//! `redis-server` nodes joined by `redis-cli`.

mod backup;
mod clocks;
mod cluster;
mod copy;
mod cron;
mod errors;
mod faults;
mod follow;
mod input;
mod kubernetes;
mod replicas;
mod resume;
mod servers;
mod shards;
mod signals;
mod support;
mod throttle;
mod tls;
mod typed;
mod verify;
