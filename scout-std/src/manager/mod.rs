//! Management of Scout's downloaded core agent: download, verify, extract, launch.
