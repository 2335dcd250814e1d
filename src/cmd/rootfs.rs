//! `edgeact rootfs`: build or locate the Debian root file system used as the read-only lower
//! layer of `eval os` sandboxes (`debootstrap` + the packages of AgentBench's `default` image).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use edgeact_tools::os::rootfs::{self, BuildOptions};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Build the root file system once (needs root, `debootstrap` and the Debian mirror).
    Build {
        /// Target directory (default: $XDG_CACHE_HOME/edgeact/rootfs or ~/.cache/edgeact/rootfs).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Debian suite.
        #[arg(long, default_value = "bookworm")]
        suite: String,
        /// Debian mirror.
        #[arg(long, default_value = "http://deb.debian.org/debian")]
        mirror: String,
        /// Extra packages to include (comma-separated).
        #[arg(long, value_delimiter = ',')]
        include: Vec<String>,
    },
    /// Print the root file system's directory and whether it is built.
    Path {
        /// Directory to inspect (default: the cache location).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    match a.action {
        Action::Build {
            dir,
            suite,
            mirror,
            include,
        } => {
            let dir = dir.unwrap_or_else(rootfs::default_dir);
            if rootfs::is_built(&dir) {
                println!("{} (already built)", dir.display());
                return Ok(ExitCode::SUCCESS);
            }
            let opts = BuildOptions {
                suite,
                mirror,
                extra_packages: include,
            };
            rootfs::build(&dir, &opts).with_context(|| format!("build the root file system in {}", dir.display()))?;
            println!("{}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Action::Path { dir } => {
            let dir = dir.unwrap_or_else(rootfs::default_dir);
            let built = rootfs::is_built(&dir);
            println!("{} ({})", dir.display(), if built { "built" } else { "not built" });
            Ok(if built { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
