//! Identifiers. Server-assigned numbers are plain integers; client-generated
//! operation ids are validated tokens so they can be stored and logged safely.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! number_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                // Digits only: no sign, no spaces, no leading "+".
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(IdError::NotANumber);
                }
                s.parse().map(Self).map_err(|_| IdError::NotANumber)
            }
        }
    };
}

number_id!(
    /// A synced root folder: a user's home or a shared folder.
    NamespaceId
);
number_id!(
    /// A position in a namespace's journal: gap-free, strictly increasing.
    Seq
);
number_id!(
    /// A file version: the journal `seq` of the commit that created it, so
    /// revisions are unique per namespace and ordered like the journal.
    Rev
);
number_id!(
    /// A device (one bearer token per device).
    DeviceId
);

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A numeric id that is not a plain decimal number.
    #[error("not a valid id")]
    NotANumber,
    /// A client or server token that is empty, too long, or not `[A-Za-z0-9_-]`.
    #[error("ids are 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'")]
    BadToken,
}

fn valid_token(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The token as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                if valid_token(&s) { Ok(Self(s)) } else { Err(IdError::BadToken) }
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::try_from(s.to_owned())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

token_id!(
    /// A client-generated operation id: retries of one operation carry the same
    /// id, so the server applies it once (Turtl-style client ids).
    OpId
);
token_id!(
    /// An upload session, named by the server (unguessable).
    UploadId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_tokens() {
        assert_eq!("42".parse::<NamespaceId>(), Ok(NamespaceId(42)));
        for bad in ["", "-1", "+1", " 1", "1e3", "0x10", "18446744073709551616"] {
            assert_eq!(bad.parse::<Seq>(), Err(IdError::NotANumber), "{bad:?}");
        }
        assert!("op-1_A".parse::<OpId>().is_ok());
        for bad in ["", "a b", "é", "a/b", &"x".repeat(65)] {
            assert_eq!(bad.parse::<OpId>(), Err(IdError::BadToken), "{bad:?}");
        }
    }
}
