//! The `netsim` command line: a thin layer over the library.
