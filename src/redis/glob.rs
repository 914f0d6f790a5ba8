//! Redis's glob matching (`stringmatchlen`), for deduplicating the union of several `--match` patterns.
//!
//! Each `--match` pattern is scanned with the server's own `SCAN MATCH`; a key found by pattern *i* is
//! dropped when it also matches an earlier pattern, so the union yields each key once. For that the
//! client must judge a match exactly as the server does: `*`, `?`, `[abc]`, `[^a-z]`, `\` escapes, on bytes.

/// True when `text` matches the Redis glob `pattern` (case-sensitive, bytes).
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // Where to resume after the most recent `*`: (pattern index after it, text index it absorbed up to).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, t));
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    let (hit, next_p) = class(pattern, p, text[t]);
                    if hit {
                        p = next_p;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == text[t] {
                        p += 2;
                        t += 1;
                        continue;
                    }
                }
                c => {
                    if c == text[t] {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        // Mismatch: let the last `*` absorb one more byte, or fail.
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches one byte against the class starting at `pattern[start] == b'['`.
/// Returns whether it matched and the pattern index after the class; an unterminated class runs to
/// the end of the pattern, as in Redis.
fn class(pattern: &[u8], start: usize, c: u8) -> (bool, usize) {
    let mut p = start + 1;
    let negate = pattern.get(p) == Some(&b'^');
    if negate {
        p += 1;
    }
    let mut hit = false;
    while p < pattern.len() && pattern[p] != b']' {
        if pattern[p] == b'\\' && p + 1 < pattern.len() {
            p += 1;
            hit |= pattern[p] == c;
        } else if p + 2 < pattern.len() && pattern[p + 1] == b'-' && pattern[p + 2] != b']' {
            let (mut lo, mut hi) = (pattern[p], pattern[p + 2]);
            if lo > hi {
                std::mem::swap(&mut lo, &mut hi);
            }
            hit |= (lo..=hi).contains(&c);
            p += 2;
        } else {
            hit |= pattern[p] == c;
        }
        p += 1;
    }
    // Step over the closing bracket when there is one.
    let next = if p < pattern.len() { p + 1 } else { p };
    (hit != negate, next)
}

#[cfg(test)]
mod tests {
    use super::matches;

    fn m(p: &str, t: &str) -> bool {
        matches(p.as_bytes(), t.as_bytes())
    }

    #[test]
    fn stars_and_questions() {
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("user:*", "user:1"));
        assert!(!m("user:*", "users:1"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("*:*:end", "a:b:c:end"));
        assert!(!m("a*b", "acbd"));
        assert!(m("a**b", "ab"));
    }

    #[test]
    fn classes_ranges_and_escapes() {
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hallo"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("[\\]]", "]"));
    }

    #[test]
    fn bytes_not_text() {
        assert!(matches(b"k:\xff*", b"k:\xff\x00"));
        assert!(!matches(b"k:\xfe*", b"k:\xff"));
    }
}
