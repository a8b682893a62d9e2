//! User ids as DynamoDB keys: the key's type decides how an id from the
//! user-id file is sent, and a number key's ids are compared in the form
//! DynamoDB writes numbers back in.

use aws_sdk_dynamodb::types::AttributeValue;

/// A user id that cannot be a number key.
#[derive(Debug, thiserror::Error)]
#[error("user id {0:?}: the table's user id key is a number, and this is not an integer")]
pub(super) struct NotInteger(String);

/// User ids for a number key, as DynamoDB writes numbers back (no sign
/// `+`, no leading zeros), repeats dropped: only integers are taken.
pub(super) fn canonical_integers(ids: &[String]) -> Result<Vec<String>, NotInteger> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let (negative, digits) = match id.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, id.strip_prefix('+').unwrap_or(id)),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NotInteger(id.clone()));
        }
        let digits = match digits.trim_start_matches('0') {
            "" => "0",
            d => d,
        };
        let id = if negative && digits != "0" { format!("-{digits}") } else { digits.to_owned() };
        if seen.insert(id.clone()) {
            out.push(id);
        }
    }
    Ok(out)
}

/// The type of the user id key: the ids in the file are sent as it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    /// A string key (S).
    Text,
    /// A number key (N).
    Number,
}

impl Key {
    pub(super) fn value(self, id: &str) -> AttributeValue {
        match self {
            Self::Text => AttributeValue::S(id.to_owned()),
            Self::Number => AttributeValue::N(id.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_ids_take_dynamodbs_form_and_repeats_go() {
        let ids: Vec<String> = ["007", "7", "+12", "-0", "-030", "0"].map(String::from).to_vec();
        assert_eq!(canonical_integers(&ids).unwrap(), ["7", "12", "0", "-30"]);
        let err = canonical_integers(&["user_id".to_owned()]).unwrap_err().to_string();
        assert!(err.contains("\"user_id\"") && err.contains("not an integer"), "{err}");
        assert!(canonical_integers(&["1e3".to_owned()]).is_err());
    }
}
