//! Identifier newtypes. Strings on the wire, distinct types inside.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        // Hash and Eq are the string's, so maps keyed by the id are looked
        // up with a `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }
    };
}

string_id!(
    /// A run (the Oz API also calls it a task). A UUID v7, so ids sort by creation.
    RunId
);
string_id!(
    /// One execution (assignment) of a run on a worker.
    ExecutionId
);
string_id!(
    /// A worker's self-chosen id; runs route to it by exact `worker_host` match.
    WorkerId
);

impl RunId {
    /// A fresh, time-ordered run id.
    pub fn generate() -> Self {
        RunId(uuid::Uuid::now_v7().to_string())
    }
}

impl ExecutionId {
    /// A fresh, time-ordered execution id.
    pub fn generate() -> Self {
        ExecutionId(uuid::Uuid::now_v7().to_string())
    }
}
