//! The lab lifecycle: applies a plan through the kernel adapters and owns teardown.
