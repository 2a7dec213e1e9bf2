//! overlay: a Weave-Net-style container overlay router (the system under test).

pub mod odp;
