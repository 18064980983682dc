//! Where the demos' pictures go, shared by the `why_bn` and `small_batch` demos.

use std::error::Error;
use std::path::PathBuf;

/// Where the pictures go: `target/<name>.svg` (`-quick` in quick mode) and, for the
/// full run under cargo, a copy in `docs/` for docs/demonstration.md.
pub struct Output {
    pub quick: bool,
}

impl Output {
    pub fn write(&self, name: &str, svg: &str) -> Result<(), Box<dyn Error>> {
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || {
                manifest
                    .as_ref()
                    .map_or_else(|| PathBuf::from("target"), |d| d.join("target"))
            },
            PathBuf::from,
        );
        let suffix = if self.quick { "-quick" } else { "" };
        let mut paths = vec![target.join(format!("{name}{suffix}.svg"))];
        if let (false, Some(dir)) = (self.quick, &manifest) {
            paths.push(dir.join("docs").join(format!("{name}.svg")));
        }
        for path in paths {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, svg)?;
            println!("plot: {}", path.display());
        }
        Ok(())
    }
}
