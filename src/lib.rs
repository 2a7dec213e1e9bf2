//! Cross-crate integration suite: see tests/.
