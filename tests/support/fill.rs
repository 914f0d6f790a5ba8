//! Filling a source: strings and hashes in bulk, every core type in several encodings with and without
//! TTLs ([`fill_every_type`]), streams with consumer groups and pending entries, the awkward key names
//! the contract calls out, and incompressible bytes for big values.

use redis::{Connection, ConnectionLike, Value};

use super::{exec_pipe, q, run};

/// Writes `n` string keys `{prefix}{i}` = `value-{i}` through pipelines; returns the keys.
pub fn fill_strings(con: &mut Connection, prefix: &str, n: usize) -> Vec<Vec<u8>> {
    let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("{prefix}{i}").into_bytes()).collect();
    for chunk in keys.chunks(1000) {
        let mut p = redis::pipe();
        for k in chunk {
            p.cmd("SET").arg(k).arg(format!("value-{}", String::from_utf8_lossy(k))).ignore();
        }
        p.exec(con).expect("fill strings");
    }
    keys
}

/// Writes `n` hashes `{prefix}{i}` (a second type, so failures are not all strings).
pub fn fill_hashes(con: &mut Connection, prefix: &str, n: usize) -> Vec<Vec<u8>> {
    let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("{prefix}{i}").into_bytes()).collect();
    for chunk in keys.chunks(1000) {
        let mut p = redis::pipe();
        for k in chunk {
            p.cmd("HSET").arg(k).arg("f").arg("v").ignore();
        }
        p.exec(con).expect("fill hashes");
    }
    keys
}

/// Deterministic bytes that do not compress (xorshift), so a big value really is big on the wire.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The awkward key names the contract calls out: `,` `"` `\n`, byte 0xFF, `\r\n`, a backslash, a space,
/// and the empty key.
pub fn awkward_keys() -> Vec<Vec<u8>> {
    vec![
        b"comma,key".to_vec(),
        b"quote\"key".to_vec(),
        b"new\nline".to_vec(),
        b"\xff\xfe binary \x00 key".to_vec(),
        b"crlf\r\n".to_vec(),
        b"back\\slash".to_vec(),
        b"sp ace".to_vec(),
        b"".to_vec(),
        b"all,of\"them\n\xff".to_vec(),
    ]
}

/// Fills `con` with every core type in several encodings, with and without TTLs, under awkward names.
/// With `big`, adds a 10 MiB string. Returns every key written.
pub fn fill_every_type(con: &mut impl ConnectionLike, big: bool) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    // Strings: plain, empty, integer-encoded, all 256 byte values, with TTLs.
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    run(con, &[b"SET", b"str:plain", b"hello world"]);
    run(con, &[b"SET", b"str:empty", b""]);
    run(con, &[b"SET", b"str:int", b"1234567"]);
    run(con, &[b"SET", b"str:bin", &all_bytes]);
    run(con, &[b"SET", b"str:ttl-px", b"expires later", b"PX", b"600000"]);
    run(con, &[b"SET", b"str:ttl-ex", b"expires in an hour", b"EX", b"3600"]);
    keys.extend([
        b"str:plain".to_vec(),
        b"str:empty".to_vec(),
        b"str:int".to_vec(),
        b"str:bin".to_vec(),
        b"str:ttl-px".to_vec(),
        b"str:ttl-ex".to_vec(),
    ]);
    if big {
        let v = noise(10 * 1024 * 1024, 42);
        run(con, &[b"SET", b"str:big", &v]);
        keys.push(b"str:big".to_vec());
    }

    // Lists: small (listpack) with empty and binary elements, big (quicklist, several nodes), with TTL.
    run(con, &[b"RPUSH", b"list:small", b"a", b"", b"\xff\x00b", b"c,\"d\n"]);
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.cmd("RPUSH").arg("list:big").arg(format!("element-{i}-{}", "x".repeat(i % 50))).ignore();
    }
    exec_pipe(con, &p);
    run(con, &[b"RPUSH", b"list:ttl", b"1", b"2", b"3"]);
    run(con, &[b"PEXPIRE", b"list:ttl", b"900000"]);
    keys.extend([b"list:small".to_vec(), b"list:big".to_vec(), b"list:ttl".to_vec()]);

    // Sets: intset, small strings, big hashtable.
    run(con, &[b"SADD", b"set:int", b"1", b"2", b"3", b"-5", b"9223372036854775807"]);
    run(con, &[b"SADD", b"set:str", b"a", b"b", b"\xff", b""]);
    let mut p = redis::pipe();
    for i in 0..1000 {
        p.cmd("SADD").arg("set:big").arg(format!("member-{i}")).ignore();
    }
    exec_pipe(con, &p);
    run(con, &[b"SADD", b"set:ttl", b"x"]);
    run(con, &[b"EXPIRE", b"set:ttl", b"7200"]);
    keys.extend([b"set:int".to_vec(), b"set:str".to_vec(), b"set:big".to_vec(), b"set:ttl".to_vec()]);

    // Sorted sets: non-integer, negative, tiny and infinite scores; a big skiplist one; with TTL.
    run(
        con,
        &[
            b"ZADD",
            b"zset:small",
            b"1.5",
            b"a",
            b"-2.25",
            b"b",
            b"0",
            b"c",
            b"inf",
            b"d",
            b"-inf",
            b"e",
            b"3.141592653589793",
            b"f",
            b"1e-10",
            b"g",
            b"0.1",
            b"\xffbin",
        ],
    );
    let mut p = redis::pipe();
    for i in 0..500 {
        p.cmd("ZADD").arg("zset:big").arg(i as f64 / 3.0).arg(format!("m{i}")).ignore();
    }
    exec_pipe(con, &p);
    run(con, &[b"ZADD", b"zset:ttl", b"1", b"one", b"2.5", b"two"]);
    run(con, &[b"PEXPIRE", b"zset:ttl", b"800000"]);
    keys.extend([b"zset:small".to_vec(), b"zset:big".to_vec(), b"zset:ttl".to_vec()]);

    // Hashes: small with empty and binary fields/values, big hashtable, with TTL.
    run(
        con,
        &[b"HSET", b"hash:small", b"f1", b"v1", b"empty", b"", b"\xff", b"bin\x00val", b"", b"empty-field"],
    );
    let mut p = redis::pipe();
    for i in 0..1000 {
        p.cmd("HSET").arg("hash:big").arg(format!("field-{i}")).arg(format!("value-{i}")).ignore();
    }
    exec_pipe(con, &p);
    run(con, &[b"HSET", b"hash:ttl", b"a", b"b"]);
    run(con, &[b"EXPIRE", b"hash:ttl", b"5000"]);
    keys.extend([b"hash:small".to_vec(), b"hash:big".to_vec(), b"hash:ttl".to_vec()]);

    // Streams: entries, two consumer groups, pending entries for two consumers, one ack; one with a
    // TTL; and an empty stream that only holds a group.
    fill_stream(con, b"stream:groups", 20);
    fill_stream(con, b"stream:ttl", 5);
    run(con, &[b"PEXPIRE", b"stream:ttl", b"700000"]);
    run(con, &[b"XGROUP", b"CREATE", b"stream:empty", b"g", b"$", b"MKSTREAM"]);
    keys.extend([b"stream:groups".to_vec(), b"stream:ttl".to_vec(), b"stream:empty".to_vec()]);

    // Awkward names, spread over types; one with a TTL.
    for (i, k) in awkward_keys().into_iter().enumerate() {
        match i % 4 {
            0 => run(con, &[b"SET", &k, b"awkward value"]),
            1 => run(con, &[b"RPUSH", &k, b"x", b"y"]),
            2 => run(con, &[b"HSET", &k, b"f", b"v"]),
            _ => run(con, &[b"SADD", &k, b"m1", b"m2"]),
        }
        if i == 2 {
            run(con, &[b"EXPIRE", &k, b"4000"]);
        }
        keys.push(k);
    }
    keys
}

/// A stream with `n` entries, group g1 (7 delivered to alice and bob, one acked) and group g2 at `$`.
pub fn fill_stream(con: &mut impl ConnectionLike, key: &[u8], n: usize) {
    let mut ids: Vec<Vec<u8>> = Vec::new();
    for i in 0..n {
        let id: Vec<u8> = q(con, &[b"XADD", key, b"*", b"n", i.to_string().as_bytes(), b"bin", b"\xff\x00"]);
        ids.push(id);
    }
    let _: Value = q(con, &[b"XGROUP", b"CREATE", key, b"g1", b"0"]);
    let _: Value = q(con, &[b"XGROUP", b"CREATE", key, b"g2", b"$"]);
    let _: Value = q(con, &[b"XREADGROUP", b"GROUP", b"g1", b"alice", b"COUNT", b"4", b"STREAMS", key, b">"]);
    let _: Value = q(con, &[b"XREADGROUP", b"GROUP", b"g1", b"bob", b"COUNT", b"3", b"STREAMS", key, b">"]);
    let _: Value = q(con, &[b"XACK", key, b"g1", &ids[0]]);
}

/// Keys with hash tags: several in one slot (`{user:1000}`, every type, one with a TTL), the empty
/// tag `{}` (the whole key is hashed), only the first tag counts (`{a}{b}`), a `}` before the `{`, a
/// binary tag, and a key that is only a tag. Returns the keys written.
pub fn fill_hash_tag_keys(con: &mut impl ConnectionLike) -> Vec<Vec<u8>> {
    run(con, &[b"SET", b"{user:1000}:name", b"Ada"]);
    run(con, &[b"RPUSH", b"{user:1000}:visits", b"mon", b"tue", b"\xff"]);
    run(con, &[b"PEXPIRE", b"{user:1000}:visits", b"900000"]);
    run(con, &[b"SADD", b"{user:1000}:roles", b"admin", b"dev"]);
    run(con, &[b"ZADD", b"{user:1000}:scores", b"1.5", b"a", b"-3", b"b"]);
    run(con, &[b"HSET", b"{user:1000}:profile", b"lang", b"en", b"\x00", b"\xff"]);
    fill_stream(con, b"{user:1000}:events", 4);
    run(con, &[b"SET", b"{user:1000}", b"the tag alone"]);
    run(con, &[b"SET", b"{}empty-tag", b"hashed whole"]);
    run(con, &[b"HSET", b"{a}{b}", b"f", b"first tag counts"]);
    run(con, &[b"SET", b"no}tag{here}", b"v"]);
    run(con, &[b"SET", b"bin{\xff\x00,\"\n}tag", b"binary tag", b"EX", b"3600"]);
    [
        &b"{user:1000}:name"[..],
        b"{user:1000}:visits",
        b"{user:1000}:roles",
        b"{user:1000}:scores",
        b"{user:1000}:profile",
        b"{user:1000}:events",
        b"{user:1000}",
        b"{}empty-tag",
        b"{a}{b}",
        b"no}tag{here}",
        b"bin{\xff\x00,\"\n}tag",
    ]
    .iter()
    .map(|k| k.to_vec())
    .collect()
}
