//! hangar-worker (skeleton).
