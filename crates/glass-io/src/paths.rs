//! Paths that manifests and users name, kept inside the directory they belong to: a
//! manifest entry is a relative path with no `..`, no root and no drive, so a forged
//! manifest cannot make a loader read (and "verify") a file elsewhere.

use std::path::{Component, Path};

/// True when `rel` is a relative path that stays inside the directory it is joined to:
/// no root, drive prefix, `..` or `.` component, and not empty.
pub fn is_inside(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.contains('\\')
        && !rel.contains('\0')
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}
