//! Kernel capability probe, shared by `netsim doctor` and the test helpers.
