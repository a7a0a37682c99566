//! What the sandboxes of several backends share: the egress allowlist proxy
//! and the server relay (`egress`), used by the Docker backend and by the
//! direct backend's bubblewrap sandbox.

pub(crate) mod egress;
