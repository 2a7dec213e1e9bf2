//! Helpers for tests that need kernel features (skip with a reason, or fail in the kernel lane).
