//! hangar-agent (skeleton).
