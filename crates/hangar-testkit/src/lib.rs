//! hangar-testkit (skeleton).
