//! Structured masking of a credential file (`credentials.files` with `extract`): the regex's
//! group 1 picks each value; only those spans are replaced by placeholders, so that the file
//! still parses inside. Pure: the caller makes the placeholders and keeps the real values.

/// `content` with every span of `pattern`'s group 1 replaced by the placeholder `placeholder`
/// gives for its value (called once per distinct value, in first-seen order), and the values
/// with their placeholders. With `duplicates`, verbatim copies of a value outside the matched
/// spans are replaced too (longest value first, spans against the original text, so that a
/// placeholder is never matched again). `Ok(None)`: the pattern matched no non-empty value.
/// An error: a match without group 1 (an optional group that did not take part).
pub fn mask_spans<E>(
    content: &str,
    pattern: &str,
    duplicates: bool,
    placeholder: &mut dyn FnMut(&str) -> Result<String, E>,
) -> Result<Option<Masked>, MaskError<E>> {
    let pattern = regex::Regex::new(pattern).map_err(|e| MaskError::Pattern(e.to_string()))?;
    let mut values: Vec<(String, String)> = Vec::new();
    let mut spans: Vec<(usize, usize, usize)> = Vec::new();
    for c in pattern.captures_iter(content) {
        let Some(m) = c.get(1) else {
            let at = c.get(0).map_or(0, |m| m.start());
            return Err(MaskError::NoGroup(at));
        };
        if m.as_str().is_empty() {
            continue;
        }
        let i = match values.iter().position(|(v, _)| v == m.as_str()) {
            Some(i) => i,
            None => {
                let p = placeholder(m.as_str()).map_err(MaskError::Placeholder)?;
                values.push((m.as_str().to_string(), p));
                values.len() - 1
            }
        };
        spans.push((m.start(), m.end(), i));
    }
    if values.is_empty() {
        return Ok(None);
    }
    if duplicates {
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|a, b| values[*b].0.len().cmp(&values[*a].0.len()));
        for i in order {
            let v = values[i].0.as_str();
            let mut from = 0;
            while let Some(off) = content[from..].find(v) {
                let (start, end) = (from + off, from + off + v.len());
                if !spans.iter().any(|&(s, e, _)| start < e && s < end) {
                    spans.push((start, end, i));
                }
                // The next occurrence may start inside this one.
                from = start + content[start..].chars().next().map_or(1, char::len_utf8);
            }
        }
        spans.sort_by_key(|&(s, _, _)| s);
    }
    let mut out = String::with_capacity(content.len());
    let mut pos = 0;
    for (s, e, i) in spans {
        out.push_str(&content[pos..s]);
        out.push_str(&values[i].1);
        pos = e;
    }
    out.push_str(&content[pos..]);
    Ok(Some(Masked { text: out, values }))
}

/// What [`mask_spans`] made of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked {
    /// The text with placeholders, as the sandbox reads it.
    pub text: String,
    /// Each distinct value and its placeholder.
    pub values: Vec<(String, String)>,
}

/// Why [`mask_spans`] failed.
#[derive(Debug)]
pub enum MaskError<E> {
    /// A match at this byte offset without group 1.
    NoGroup(usize),
    /// The pattern does not compile (checked at load already).
    Pattern(String),
    Placeholder(E),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(content: &str, pattern: &str, dupes: bool) -> Option<(String, Vec<(String, String)>)> {
        let mut n = 0;
        mask_spans::<()>(content, pattern, dupes, &mut |_| {
            n += 1;
            Ok(format!("P{n}"))
        })
        .unwrap()
        .map(|m| (m.text, m.values))
    }

    #[test]
    fn only_captured_spans_are_replaced() {
        let text = "machine a login me password s3cret\nmachine b password other\nnote s3cret\n";
        let (out, values) = run(text, r"password (\S+)", false).unwrap();
        assert_eq!(
            out,
            "machine a login me password P1\nmachine b password P2\nnote s3cret\n"
        );
        assert_eq!(values[0], ("s3cret".to_string(), "P1".to_string()));
        // The same value twice has one placeholder.
        let (out, values) = run("k=x k=x", r"k=(\w)", false).unwrap();
        assert_eq!((out.as_str(), values.len()), ("k=P1 k=P1", 1));
        assert!(run("nothing here", r"password (\S+)", false).is_none());
        assert!(run("password ", r"password (\S*)", false).is_none());
    }

    #[test]
    fn duplicates_are_masked_longest_first() {
        let text = "password s3cret\nnote s3cret and s3\npassword s3\n";
        let (out, _) = run(text, r"password (\S+)", true).unwrap();
        assert_eq!(out, "password P1\nnote P1 and P2\npassword P2\n");
    }

    #[test]
    fn a_match_without_group_one_is_an_error() {
        let r = mask_spans::<()>("ac", r"a(b)?", false, &mut |_| Ok("P".into()));
        assert!(matches!(r, Err(MaskError::NoGroup(0))));
    }
}
