//! Mounts as snapshotters describe them, and performing them (for `kura mount` and tests).

use anyhow::{bail, Result};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub r#type: String,
    pub source: String,
    pub options: Vec<String>,
}

impl Mount {
    pub fn bind(dir: &Path, ro: bool) -> Mount {
        Mount {
            r#type: "bind".into(),
            source: dir.display().to_string(),
            options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
        }
    }

    /// Mounts onto `target` (must exist).
    pub fn mount(&self, target: &Path) -> Result<()> {
        use nix::mount::{mount, MsFlags};
        let ro = self.options.iter().any(|o| o == "ro");
        if self.r#type == "bind" {
            mount(
                Some(Path::new(&self.source)),
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            if ro {
                mount(
                    None::<&str>,
                    target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                )?;
            }
            return Ok(());
        }
        if self.r#type != "overlay" {
            bail!("unsupported mount type {}", self.r#type);
        }
        let data: Vec<&str> = self
            .options
            .iter()
            .map(String::as_str)
            .filter(|o| *o != "ro" && *o != "rw")
            .collect();
        let mut flags = MsFlags::empty();
        if ro {
            flags |= MsFlags::MS_RDONLY;
        }
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            flags,
            Some(data.join(",").as_str()),
        )
        .map_err(|e| anyhow::anyhow!("mount overlay on {}: {e}", target.display()))?;
        Ok(())
    }
}
