//! The three-valued verdict every checker gives: `true`, `false` or `"unknown"`.

use std::fmt;

use serde::{Serialize, Serializer};

/// A checker's answer. In JSON: `true`, `false`, or the string `"unknown"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid,
    /// The checker could not decide (a time limit, or evidence missing from the history).
    Unknown,
}

impl Verdict {
    /// `Invalid` if any is invalid, else `Unknown` if any is unknown, else `Valid`.
    pub fn combine(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        let mut out = Verdict::Valid;
        for v in verdicts {
            match v {
                Verdict::Invalid => return Verdict::Invalid,
                Verdict::Unknown => out = Verdict::Unknown,
                Verdict::Valid => {}
            }
        }
        out
    }

    /// The process exit code for this verdict: 0 valid, 1 invalid, 2 unknown.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Valid => 0,
            Verdict::Invalid => 1,
            Verdict::Unknown => 2,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Valid => "true",
            Verdict::Invalid => "false",
            Verdict::Unknown => "unknown",
        })
    }
}

impl Serialize for Verdict {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Verdict::Valid => s.serialize_bool(true),
            Verdict::Invalid => s.serialize_bool(false),
            Verdict::Unknown => s.serialize_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_beats_unknown_beats_valid() {
        use Verdict::*;
        assert_eq!(Verdict::combine([Valid, Unknown, Invalid]), Invalid);
        assert_eq!(Verdict::combine([Valid, Unknown]), Unknown);
        assert_eq!(Verdict::combine([Valid, Valid]), Valid);
        assert_eq!(Verdict::combine([]), Valid);
    }

    #[test]
    fn serializes_as_bool_or_unknown() {
        assert_eq!(serde_json::to_string(&Verdict::Valid).unwrap(), "true");
        assert_eq!(serde_json::to_string(&Verdict::Invalid).unwrap(), "false");
        assert_eq!(
            serde_json::to_string(&Verdict::Unknown).unwrap(),
            "\"unknown\""
        );
    }
}
