//! hangar-store (skeleton).
