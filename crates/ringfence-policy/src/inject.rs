//! `credentials.inject` (ringfence's own form of credential injection): header fields the
//! proxy sets on requests to a host. Pure: the template is parsed here; the supervisor reads
//! the variables and files it names.

/// A part of a value template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Text(String),
    /// `${env:NAME}`: a host environment variable.
    Env(String),
    /// `${file:PATH}`: a file's content without its final newline.
    File(String),
}

/// One `credentials.inject` entry of the merged policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderInjection {
    /// `FILE: credentials.inject[N]`.
    pub origin: String,
    pub host: String,
    pub header: String,
    pub value: Vec<TemplatePart>,
}

/// Parses a value template; the error says what is wrong.
pub fn parse_template(s: &str) -> Result<Vec<TemplatePart>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            out.push(TemplatePart::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("\"{s}\": an unclosed \"${{\""))?;
        let inner = &after[..end];
        let part = if let Some(name) = inner.strip_prefix("env:") {
            if name.is_empty() || !name.bytes().all(|b| b == b'_' || b.is_ascii_alphanumeric()) {
                return Err(format!("\"${{{inner}}}\": not a variable name"));
            }
            TemplatePart::Env(name.to_string())
        } else if let Some(path) = inner.strip_prefix("file:") {
            if path.is_empty() {
                return Err("\"${file:}\": a path is needed".into());
            }
            TemplatePart::File(path.to_string())
        } else {
            return Err(format!(
                "\"${{{inner}}}\": write ${{env:NAME}} or ${{file:PATH}}"
            ));
        };
        out.push(part);
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(TemplatePart::Text(rest.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert_eq!(
            parse_template("Bearer ${env:TOKEN}").unwrap(),
            vec![
                TemplatePart::Text("Bearer ".into()),
                TemplatePart::Env("TOKEN".into())
            ]
        );
        assert_eq!(
            parse_template("${file:~/.tok}").unwrap(),
            vec![TemplatePart::File("~/.tok".into())]
        );
        assert!(parse_template("${env:A B}").is_err());
        assert!(parse_template("${secret}").is_err());
        assert!(parse_template("x ${env:A").is_err());
    }
}
