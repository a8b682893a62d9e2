//! Byte offsets and TOML spans as the 1-based line numbers that every
//! file:line error of Kickoff carries (campaigns, runbooks, `aws.toml`).

/// 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

/// The line a TOML parse error points at (1 when it points nowhere).
pub fn toml_error_line(text: &str, e: &toml::de::Error) -> usize {
    e.span().map_or(1, |s| line_of(text, s.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
        let e = toml::from_str::<toml::Table>("a = 1\nb = =\n").unwrap_err();
        assert_eq!(toml_error_line("a = 1\nb = =\n", &e), 2);
    }
}
