//! Layer0 question matching. PLACEHOLDER: helper-2 implements this file.
