//! What replies and errors mean: the `error` / `message` pair of the error CSV for a failure, which
//! errors are transient (worth a retry) or mean a broken connection, which refusals say a server will not
//! run a command for us at all (so that a key may go another way), and a reply's kind for messages. No
//! I/O.

use redis::{RedisError, Value};

use super::endpoint::Endpoint;

/// Error replies that mean "not now" rather than "never": worth retrying after a pause. MOVED and ASK
/// are here for a cluster whose slots kept moving for longer than [`MAX_HOPS`] redirections: after the
/// pause the slot map has been reloaded.
pub fn is_transient(code: &str) -> bool {
    matches!(code, "OOM" | "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN" | "MOVED" | "ASK")
}

/// The CSV `error` column and `message` for a failure: the server's error code (`NOPERM`, `OOM`, ...)
/// or `IO`, `TIMEOUT`, `PROTOCOL` for failures that are not the server's answer. The message never
/// repeats the code: messages show as `CODE message`.
pub fn classify(err: &RedisError) -> (String, String) {
    let code = if err.is_timeout() {
        "TIMEOUT".to_string()
    } else if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        "IO".to_string()
    } else if let Some(code) = err.code() {
        code.to_string()
    } else {
        "PROTOCOL".to_string()
    };
    (code, one_line(&describe(err)))
}

/// The `error` / `message` pair for an error reply inside a pipeline's results.
pub fn classify_reply(err: &redis::ServerError) -> (String, String) {
    let code = err.code().to_string();
    let message = err.details().unwrap_or(&code).to_string();
    (code, one_line(&message))
}

/// True when the error means the connection itself is unusable (reconnect), rather than one reply
/// being an error.
pub fn is_connection_error(err: &RedisError) -> bool {
    err.is_io_error() || err.is_timeout() || err.is_connection_dropped() || err.is_connection_refusal()
}

/// True when a server failed at the start in a way that may pass by itself, so that trying again later
/// makes sense (exit 5) where a refusal would not (exit 2): the connection (refused, timed out, lost),
/// or a server that answered that it is not ready (`LOADING`, `BUSY`, `MASTERDOWN`, `TRYAGAIN`,
/// `CLUSTERDOWN`, or its `maxclients` reached).
pub fn may_pass(err: &RedisError) -> bool {
    is_connection_error(err)
        || err.code().is_some_and(|c| is_transient(c) && c != "OOM")
        || err.detail().is_some_and(|d| d.contains("max number of clients reached"))
}

/// The error that ends a run at the start because of `err`: exit 5 when it [`may_pass`], else exit 2.
pub fn at_start(err: &RedisError, message: String) -> crate::exit::Fatal {
    match may_pass(err) {
        true => crate::exit::Fatal::unreachable(message),
        false => crate::exit::Fatal::bad_input(message),
    }
}

/// What went wrong, in words, without the error code (see [`classify`]).
pub fn describe(err: &RedisError) -> String {
    if err.is_connection_refusal() {
        return "connection refused (is the server running and the port right?)".into();
    }
    if err.is_timeout() {
        return "timed out".into();
    }
    if err.kind() == redis::ErrorKind::AuthenticationFailed || err.code() == Some("WRONGPASS") {
        return "authentication failed (check the user name and password)".into();
    }
    if matches!(err.kind(), redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType)
        && err.code().is_none()
    {
        return "it does not speak the Redis protocol (is this the port of a Redis server?)".into();
    }
    match (err.code(), err.detail()) {
        (Some(_), Some(detail)) => detail.to_string(),
        _ => err.to_string(),
    }
}

/// [`describe`] for a failure at connecting or at the first command, where the side is known: a
/// server that wants a password says how to give one.
pub fn explain(err: &RedisError, endpoint: &Endpoint) -> String {
    if err.code() == Some("NOAUTH") {
        return format!(
            "it requires a password: give it in the URL (redis://USER:PASSWORD@host:port, or \
             redis://:PASSWORD@host:port for the default user) or in {}",
            endpoint.role.password_var()
        );
    }
    describe(err)
}

/// Collapses any line breaks so a message is one CSV cell / log line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The kind of a reply, for messages (never the payload itself, which may be megabytes).
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Int(_) => "integer",
        Value::BulkString(_) => "bulk string",
        Value::Array(_) => "array",
        Value::SimpleString(_) => "simple string",
        Value::Okay => "OK",
        Value::ServerError(_) => "error",
        _ => "other",
    }
}

/// True when a DUMP error reply means "this server will not DUMP for us" (ACL, renamed or disabled
/// command), so that the key may go type-aware.
pub fn dump_refused(err: &redis::ServerError) -> bool {
    err.code() == "NOPERM" || unknown_command(err)
}

/// True when a RESTORE error reply means the target will not take this payload (an RDB version it
/// does not know, a format it cannot read) or RESTORE at all (ACL, renamed or disabled command).
pub fn restore_refused(err: &redis::ServerError) -> bool {
    let details = err.details().unwrap_or("");
    err.code() == "NOPERM"
        || unknown_command(err)
        || details.contains("payload version or checksum are wrong")
        || details.contains("Bad data format")
}

fn unknown_command(err: &redis::ServerError) -> bool {
    err.code() == "ERR" && err.details().unwrap_or("").starts_with("unknown command")
}

/// NOPERM about the command itself (not about the keys or channels it names), or an unknown command.
pub fn command_denied(err: &redis::ServerError) -> bool {
    (err.code() == "NOPERM" && err.details().unwrap_or("").contains("run the")) || unknown_command(err)
}

/// The results of one MULTI/EXEC from its replies (`+OK`, `+QUEUED`..., the EXEC reply), or the
/// error that kept it from running (the first refused command's, which says why better than
/// EXECABORT).
pub fn transaction(group: Vec<Value>) -> Result<Vec<Value>, (String, String)> {
    let first_error = group.iter().find_map(|v| match v {
        Value::ServerError(e) => Some(classify_reply(e)),
        _ => None,
    });
    match group.last() {
        Some(Value::Array(_)) => match group.into_iter().last() {
            Some(Value::Array(results)) => Ok(results),
            _ => unreachable!("checked just above"),
        },
        Some(Value::ServerError(e)) => Err(first_error.unwrap_or_else(|| classify_reply(e))),
        Some(Value::Nil) => Err(("PROTOCOL".into(), "EXEC was aborted".into())),
        Some(other) => Err(first_error
            .unwrap_or_else(|| ("PROTOCOL".into(), format!("unexpected EXEC reply: {}", kind(other))))),
        None => Err(("PROTOCOL".into(), "no reply to EXEC".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line() {
        assert_eq!(one_line("a\nb\r\n  c"), "a b c");
    }

    #[test]
    fn transient_errors_are_retried() {
        assert!(is_transient("OOM") && is_transient("LOADING") && !is_transient("NOPERM"));
    }

    #[test]
    fn refusals_that_fall_back() {
        let make = |text: &str| -> redis::ServerError {
            match redis::parse_redis_value(format!("-{text}\r\n").as_bytes()).unwrap() {
                Value::ServerError(e) => e,
                other => panic!("{other:?}"),
            }
        };
        assert!(dump_refused(&make("NOPERM User u has no permissions to run the 'dump' command")));
        assert!(dump_refused(&make("ERR unknown command 'DUMP', with args beginning with: 'k'")));
        assert!(!dump_refused(&make("OOM command not allowed")));
        assert!(restore_refused(&make("ERR DUMP payload version or checksum are wrong")));
        assert!(restore_refused(&make("ERR Bad data format")));
        assert!(!restore_refused(&make("BUSYKEY Target key name already exists.")));
        assert!(command_denied(&make("NOPERM this user has no permissions to run the 'restore' command")));
        assert!(!command_denied(&make(
            "NOPERM this user has no permissions to access one of the keys used as arguments"
        )));
    }
}
