//! Where a value is in a TOML file, for error messages: the values of a table read as
//! `toml::Spanned` beside the typed parse, and byte offsets turned into line and column. The
//! runbook's catalog and the config file report a value that parses but is wrong with these.

use std::collections::HashMap;
use toml::Spanned;

/// One table's values by key, each with its place in the file. Unknown keys are the typed
/// parse's business; a table read this way accepts any.
pub(crate) type Fields = HashMap<String, Spanned<toml::Value>>;

/// 1-based line and column (in characters) of a byte offset of `src`.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// Line and column where `value` starts in `src`.
pub(crate) fn position<T>(src: &str, value: &Spanned<T>) -> (usize, usize) {
    line_col(src, value.span().start)
}

/// Where `field` of a table is; when it is absent, where the table's first value is (the
/// nearest place to a missing field).
pub(crate) fn field_or_first(src: &str, table: &Fields, field: &str) -> Option<(usize, usize)> {
    table
        .get(field)
        .or_else(|| table.values().min_by_key(|value| value.span().start))
        .map(|value| position(src, value))
}

/// `":line:column"`, or nothing when the place is unknown (a value missing altogether).
pub(crate) fn suffix(at: &Option<(usize, usize)>) -> String {
    at.map_or_else(String::new, |(line, column)| format!(":{line}:{column}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_count_characters_from_one() {
        let src = "a = 1\n\"bé\" = \"x\"\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, src.rfind('=').unwrap() + 2), (2, 8));
        let table: Fields = toml::from_str(src).unwrap();
        assert_eq!(field_or_first(src, &table, "bé"), Some((2, 8)));
        assert_eq!(field_or_first(src, &table, "missing"), Some((1, 5)));
        assert_eq!(suffix(&Some((2, 6))), ":2:6");
        assert_eq!(suffix(&None), "");
    }
}
