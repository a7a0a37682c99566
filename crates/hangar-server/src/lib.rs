//! hangar-server (skeleton).
