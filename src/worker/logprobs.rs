//! PLACEHOLDER: a helper implements this module.
