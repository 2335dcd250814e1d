//! The Docker/Podman backend of the OS tool: the task's machine is a container, as in
//! AgentBench, instead of the namespace sandbox (which stays the default and needs neither).
//!
//! A container is started detached with no network, memory/swap, process and CPU limits, a
//! tmpfs `/tmp`, `--pull never` (images come from `docker build`/`import`, never a registry),
//! and AgentBench's command (`bash` on the container's tty). The agent's persistent shell is
//! `docker exec -i -t CONTAINER bash --login` started on a pty we own, so the same terminal
//! reader as the namespace sandbox applies (prompt detection, 5 s silence rule, wall clock,
//! output cap: [`super::pty`]). Task scripts are `docker exec -i` runs with the source on
//! stdin where needed, as AgentBench `exec`s init/check scripts in the container.
//!
//! Clean-up: [`Drop`] removes the container (`rm -f`). For the paths where `Drop` does not
//! run (ctrl-c, a kill, `panic = "abort"`), a watchdog process in its own process group holds
//! the read end of a pipe whose write end only this process has: when this process dies the
//! pipe closes and the watchdog runs `rm -f` itself.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pty::{self, PtyShell, ShellLimits, Stuck};
use super::{io_err, random_hex, sys, CommandOutput, OsError, Result, Script, ScriptOutput, ShellSession};
use super::{BASHRC, INPUTRC, PROFILE};

/// The image used when none is named: the equivalent of AgentBench's `local-os/default`
/// (Ubuntu + python3, pip, git, vim, curl, wget, zip/unzip, tree). Build it from
/// `scripts/os-default.Dockerfile`, or import the `edgeact rootfs build` root with
/// [`import_rootfs`].
pub const DEFAULT_IMAGE: &str = "edgeact/os-default";

/// Which container engine runs the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerRuntime {
    /// `docker` (needs a reachable daemon).
    Docker,
    /// `podman` (daemonless).
    Podman,
}

impl ContainerRuntime {
    /// The engine's command name.
    pub fn command_name(self) -> &'static str {
        match self {
            ContainerRuntime::Docker => "docker",
            ContainerRuntime::Podman => "podman",
        }
    }
}

/// Container settings. [`ContainerConfig::new`] gives AgentBench's behaviour plus the same
/// limits as the namespace sandbox's defaults.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// The engine.
    pub runtime: ContainerRuntime,
    /// The engine's executable; `None` = its command name looked up in `PATH`.
    pub program: Option<PathBuf>,
    /// Image to run (must exist locally: nothing is pulled).
    pub image: String,
    /// The shell session's limits and output form; `wall_timeout` and `output_cap` bound
    /// task scripts too.
    pub shell: ShellLimits,
    /// Memory of the container (`--memory`, swap included).
    pub memory_bytes: u64,
    /// Process limit (`--pids-limit`).
    pub max_procs: u64,
    /// CPUs (`--cpus`).
    pub cpus: f64,
    /// Size of the tmpfs mounted on `/tmp`.
    pub tmpfs_bytes: u64,
    /// Hostname; `None` = 12 random hex digits like a Docker container id.
    pub hostname: Option<String>,
    /// Extra arguments for `run`, placed before the image (e.g. `--ulimit` settings).
    pub extra_run_args: Vec<String>,
}

impl ContainerConfig {
    /// Defaults for `runtime` and `image`.
    pub fn new(runtime: ContainerRuntime, image: impl Into<String>) -> Self {
        Self {
            runtime,
            program: None,
            image: image.into(),
            shell: ShellLimits {
                wall_timeout: Duration::from_secs(30),
                silence_timeout: Duration::from_secs(5),
                output_cap: 1 << 20,
                raw_terminal: true,
            },
            memory_bytes: 1 << 30,
            max_procs: 256,
            cpus: 1.0,
            tmpfs_bytes: 512 << 20,
            hostname: None,
            extra_run_args: Vec::new(),
        }
    }

    fn program(&self) -> OsString {
        self.program
            .as_ref()
            .map(|p| p.clone().into_os_string())
            .unwrap_or_else(|| self.runtime.command_name().into())
    }

    /// The `run` command line (after the program name) for a container with `hostname`.
    pub fn run_args(&self, hostname: &str) -> Vec<String> {
        let mut a: Vec<String> = [
            "run",
            "--detach",
            "--interactive",
            "--tty",
            "--rm",
            "--pull",
            "never",
            "--network",
            "none",
            "--label",
            "edgeact.sandbox=1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend([
            "--hostname".into(),
            hostname.into(),
            "--memory".into(),
            self.memory_bytes.to_string(),
            // Equal to --memory: no swap on top of the limit.
            "--memory-swap".into(),
            self.memory_bytes.to_string(),
            "--pids-limit".into(),
            self.max_procs.to_string(),
            "--cpus".into(),
            format!("{}", self.cpus),
            "--tmpfs".into(),
            format!("/tmp:rw,nosuid,nodev,size={},mode=1777", self.tmpfs_bytes),
        ]);
        a.extend(self.extra_run_args.iter().cloned());
        // AgentBench's container command: bash on the container's tty (stdin kept open), so
        // PID 1 stays alive and reaps orphans.
        a.extend([self.image.clone(), "bash".into()]);
        a
    }

    fn validate(&self) -> Result<()> {
        if self.shell.output_cap == 0 || self.max_procs < 4 || self.memory_bytes < (32 << 20) {
            return Err(OsError::Config(
                "output_cap > 0, max_procs >= 4 and memory_bytes >= 32 MiB are required".into(),
            ));
        }
        if !(self.cpus.is_finite() && self.cpus > 0.0) {
            return Err(OsError::Config(format!("cpus must be positive, not {}", self.cpus)));
        }
        if self.image.is_empty() || self.image.starts_with('-') || self.image.chars().any(char::is_whitespace) {
            return Err(OsError::Config(format!("invalid image name {:?}", self.image)));
        }
        Ok(())
    }
}

/// Kills, inside the container, the foreground job of every terminal session that is not its
/// session leader (the agent's shell): what ^C did not stop. Fields after the command name in
/// `/proc/PID/stat`: state ppid pgrp session tty_nr tpgid.
const KILL_FOREGROUND: &str = r#"for d in /proc/[0-9]*; do
  s=$(cat "$d/stat" 2>/dev/null) || continue
  p=${d#/proc/}; s=${s##*) }; set -- $s
  if [ "$5" != 0 ] && [ "$3" = "$6" ] && [ "$p" != "$4" ]; then kill -9 "$p" 2>/dev/null; fi
done
true"#;

/// A running container with the agent's shell. Dropping it removes the container.
pub struct ContainerSandbox {
    cfg: ContainerConfig,
    id: String,
    hostname: String,
    shell: PtyShell,
    client: Option<Child>,
    watchdog: Option<(Child, OwnedFd)>,
}

impl std::fmt::Debug for ContainerSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerSandbox")
            .field("runtime", &self.cfg.runtime)
            .field("id", &self.id)
            .field("hostname", &self.hostname)
            .finish()
    }
}

/// Runs the engine with `args` to completion; `Ok((status ok, stdout, stderr))`. A missing
/// executable is reported as such.
fn engine(cfg: &ContainerConfig, args: &[&str]) -> Result<(bool, String, String)> {
    let out = Command::new(cfg.program())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| missing_or_io(cfg, e))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    ))
}

fn missing_or_io(cfg: &ContainerConfig, e: std::io::Error) -> OsError {
    let prog = cfg.program().to_string_lossy().into_owned();
    if e.kind() == std::io::ErrorKind::NotFound {
        OsError::Container(format!(
            "`{prog}` not found: install {} or use the namespace backend (the default)",
            cfg.runtime.command_name()
        ))
    } else {
        io_err(format!("run {prog}"))(e)
    }
}

/// Turns an engine failure's stderr into a clear error.
fn engine_failure(cfg: &ContainerConfig, what: &str, stderr: &str) -> OsError {
    let name = cfg.runtime.command_name();
    let low = stderr.to_ascii_lowercase();
    if low.contains("cannot connect to the docker daemon")
        || low.contains("is the docker daemon running")
        || low.contains("connection refused")
        || low.contains("unable to connect to podman")
        || low.contains("permission denied while trying to connect")
    {
        OsError::Container(format!("the {name} daemon is not reachable ({what}): {stderr}"))
    } else if low.contains("no such image")
        || low.contains("image not known")
        || low.contains("unable to find image")
        || low.contains("failed to find image")
        || low.contains("pull access denied")
    {
        image_missing(cfg)
    } else {
        OsError::Container(format!("{name} {what} failed: {stderr}"))
    }
}

fn image_missing(cfg: &ContainerConfig) -> OsError {
    let name = cfg.runtime.command_name();
    OsError::Container(format!(
        "image {:?} is not present in {name}: build it (`{name} build -t {DEFAULT_IMAGE} -f scripts/os-default.Dockerfile scripts`) \
         or import the debootstrap root (`edgeact rootfs build`, then the backend imports it as {DEFAULT_IMAGE})",
        cfg.image
    ))
}

/// Whether `cfg.image` exists locally. `Err` when the engine is missing or unreachable.
pub fn image_present(cfg: &ContainerConfig) -> Result<bool> {
    let (ok, _, err) = engine(cfg, &["image", "inspect", &cfg.image])?;
    if ok {
        return Ok(true);
    }
    match engine_failure(cfg, "image inspect", &err) {
        OsError::Container(m) if m.contains("is not present") => Ok(false),
        // An unclassified failure of `image inspect` means the image is absent (docker says
        // "No such image", podman "image not known", but wording differs between versions).
        OsError::Container(m) if !m.contains("not reachable") => Ok(false),
        e => Err(e),
    }
}

/// Imports a root directory (e.g. the one `edgeact rootfs build` made) as image `cfg.image`:
/// `tar -C dir -c . | ENGINE import - IMAGE`, with AgentBench's default command (`bash`).
pub fn import_rootfs(cfg: &ContainerConfig, dir: &Path) -> Result<()> {
    if !dir.join("bin/bash").exists() && !dir.join("usr/bin/bash").exists() {
        return Err(OsError::Config(format!(
            "{} is not a root file system (no bin/bash)",
            dir.display()
        )));
    }
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["--numeric-owner", "-c", "."])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("run tar"))?;
    let Some(tar_out) = tar.stdout.take() else {
        return Err(OsError::Container("tar has no stdout".into()));
    };
    let import = Command::new(cfg.program())
        .args(["import", "--change", "CMD [\"bash\"]", "-", &cfg.image])
        .stdin(Stdio::from(tar_out))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let tar_status = tar.wait().map_err(io_err("wait for tar"))?;
    let import = import.map_err(|e| missing_or_io(cfg, e))?;
    if !import.status.success() {
        return Err(engine_failure(
            cfg,
            "import",
            String::from_utf8_lossy(&import.stderr).trim(),
        ));
    }
    if !tar_status.success() {
        return Err(OsError::Container(format!("tar of {} failed", dir.display())));
    }
    Ok(())
}

impl ContainerSandbox {
    /// Starts the container and its shell, and reads the shell's first prompt.
    pub fn start(cfg: ContainerConfig) -> Result<Self> {
        cfg.validate()?;
        let hostname = cfg.hostname.clone().unwrap_or_else(|| random_hex(12));
        if hostname.is_empty()
            || hostname.len() > 63
            || !hostname.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(OsError::Config(format!("invalid hostname {hostname:?}")));
        }
        if !image_present(&cfg)? {
            return Err(image_missing(&cfg));
        }
        let args = cfg.run_args(&hostname);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, stdout, stderr) = engine(&cfg, &refs)?;
        if !ok {
            return Err(engine_failure(&cfg, "run", &stderr));
        }
        // The id is the last line (podman may print pull/progress lines before it).
        let id = stdout.lines().last().unwrap_or("").trim().to_string();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(OsError::Container(format!("unexpected output of run: {stdout:?}")));
        }
        let program = cfg.program().to_string_lossy().into_owned();
        let stuck = Stuck::Command(vec![
            program,
            "exec".into(),
            id.clone(),
            "bash".into(),
            "-c".into(),
            KILL_FOREGROUND.into(),
        ]);
        let placeholder = OwnedFd::from(std::fs::File::open("/dev/null").map_err(io_err("open /dev/null"))?);
        let shell = PtyShell::new(placeholder, cfg.shell, stuck);
        let mut sb = ContainerSandbox {
            cfg,
            id,
            hostname,
            shell,
            client: None,
            watchdog: None,
        };
        // From here on `sb` removes the container when dropped, also on the errors below.
        sb.watchdog = Some(sb.spawn_watchdog()?);
        sb.install_shell_files()?;
        sb.spawn_shell()?;
        Ok(sb)
    }

    /// The container's id as the engine printed it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's hostname.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The configuration in use.
    pub fn config(&self) -> &ContainerConfig {
        &self.cfg
    }

    fn spawn_watchdog(&self) -> Result<(Child, OwnedFd)> {
        let (r, w) = sys::pipe().map_err(io_err("pipe"))?;
        let mut rm: Vec<String> = vec!["rm".into(), "-f".into()];
        if self.cfg.runtime == ContainerRuntime::Podman {
            rm.extend(["--time".into(), "0".into()]);
        }
        let child = Command::new("sh")
            .arg("-c")
            .arg("read _ignored; exec \"$@\" >/dev/null 2>&1")
            .arg("edgeact-container-watchdog")
            .arg(self.cfg.program())
            .args(&rm)
            .arg(&self.id)
            .stdin(Stdio::from(r))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a ctrl-c at the terminal must not kill it with us.
            .process_group(0)
            .spawn()
            .map_err(io_err("start the container watchdog"))?;
        Ok((child, w))
    }

    /// Writes the interactive shell settings AgentBench's Ubuntu image had (prompt with the
    /// xterm title, which the prompt detection needs; no bracketed paste).
    fn install_shell_files(&mut self) -> Result<()> {
        let cmd = "mkdir -p /root && cat > /root/.bashrc && printf %s \"$1\" > /root/.profile && printf %s \"$2\" > /root/.inputrc";
        let argv: Vec<String> = ["sh", "-c", cmd, "sh", PROFILE, INPUTRC]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = self.exec_collect(&argv, BASHRC.as_bytes().to_vec(), Duration::from_secs(30))?;
        if out.code != 0 {
            return Err(OsError::Container(format!(
                "could not write the shell settings into the container (exit {}): {}",
                out.code,
                String::from_utf8_lossy(&out.output).trim()
            )));
        }
        Ok(())
    }

    fn spawn_shell(&mut self) -> Result<()> {
        let (master, slave) = sys::openpty().map_err(io_err("open a pty"))?;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(io_err("dup the pty"));
        let (s_in, s_out, s_err) = (dup(&slave)?, dup(&slave)?, slave);
        let mut cmd = Command::new(self.cfg.program());
        cmd.args([
            "exec",
            "--interactive",
            "--tty",
            "--env",
            "TERM=xterm",
            "--workdir",
            "/",
        ])
        .arg(&self.id)
        .args(["bash", "--login"])
        .stdin(Stdio::from(s_in))
        .stdout(Stdio::from(s_out))
        .stderr(Stdio::from(s_err));
        // SAFETY: only async-signal-safe calls between fork and exec: default signal state, a
        // new session, then the pty slave (already on fd 0) becomes its controlling terminal,
        // as a login shell's.
        unsafe {
            cmd.pre_exec(|| {
                sys::reset_signals();
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| missing_or_io(&self.cfg, e))?;
        self.shell.master = master;
        self.client = Some(child);
        self.shell.started()?;
        if !self.shell.alive {
            let msg = self
                .client
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .map_or("no prompt".to_string(), |s| format!("exit status {s}"));
            return Err(OsError::Container(format!(
                "the shell in container {} did not start ({msg})",
                self.id
            )));
        }
        Ok(())
    }

    /// Types `bash_code` into the agent's shell and collects the observation (see
    /// [`super::OsSandbox::run`]; same rules).
    pub fn run(&mut self, bash_code: &str) -> Result<CommandOutput> {
        self.shell.run(bash_code)
    }

    /// Runs a task script in the container as a separate `exec` (not in the agent's shell),
    /// bounded by `wall_timeout` (exit code 124 when it ran out) and `output_cap`.
    pub fn run_script(&mut self, script: &Script, args: &[&str]) -> Result<ScriptOutput> {
        let (argv, stdin) = pty::script_command(script, args);
        self.exec_collect(&argv, stdin, self.cfg.shell.wall_timeout)
    }

    /// `ENGINE exec -i ID timeout … argv` with `stdin`, stdout and stderr combined.
    fn exec_collect(&mut self, argv: &[String], stdin: Vec<u8>, limit: Duration) -> Result<ScriptOutput> {
        let secs = limit.as_secs().max(1).to_string();
        let (in_r, in_w) = sys::pipe().map_err(io_err("pipe"))?;
        let (out_r, out_w) = sys::pipe().map_err(io_err("pipe"))?;
        let out_w2 = out_w.try_clone().map_err(io_err("dup a pipe"))?;
        // `timeout` inside the container stops the script itself: killing the client would
        // leave it running there.
        let mut child = Command::new(self.cfg.program())
            .args(["exec", "--interactive", &self.id, "timeout", "--kill-after=2", &secs])
            .args(argv)
            .stdin(Stdio::from(in_r))
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(out_w2))
            .spawn()
            .map_err(|e| missing_or_io(&self.cfg, e))?;
        let feeder = pty::spawn_stdin_feeder(in_w, stdin, limit + Duration::from_secs(5));
        // A grace period past `timeout`'s own deadline for the engine's round trip.
        let deadline = Instant::now() + limit + Duration::from_secs(5);
        let got = pty::collect_script_output(&out_r, deadline, self.cfg.shell.output_cap, &mut || {
            child
                .try_wait()
                .map(|s| s.map(|s| s.into_raw()))
                .map_err(io_err("wait for the script"))
        });
        let got = match got {
            Ok(g) => g,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        if got.stopped {
            let _ = child.kill();
        }
        let status = match got.status {
            Some(s) => s,
            None => child.wait().map_err(io_err("wait for the script"))?.into_raw(),
        };
        let _ = feeder.join();
        let code = if got.timed_out { 124 } else { sys::exit_code(status) };
        Ok(ScriptOutput {
            code,
            output: got.output,
        })
    }

    fn remove(&mut self) {
        if let Some(mut c) = self.client.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.shell.alive = false;
        let mut args: Vec<&str> = vec!["rm", "-f"];
        if self.cfg.runtime == ContainerRuntime::Podman {
            args.extend(["--time", "0"]);
        }
        args.push(&self.id);
        let _ = Command::new(self.cfg.program())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some((mut w, pipe)) = self.watchdog.take() {
            // Removed already: the watchdog must not act (its `rm` would only fail).
            let _ = w.kill();
            let _ = w.wait();
            drop(pipe);
        }
    }
}

impl ShellSession for ContainerSandbox {
    fn run(&mut self, bash_code: &str) -> Result<CommandOutput> {
        ContainerSandbox::run(self, bash_code)
    }
    fn run_script(&mut self, script: &Script, args: &[&str]) -> Result<ScriptOutput> {
        ContainerSandbox::run_script(self, script, args)
    }
    fn hostname(&self) -> &str {
        ContainerSandbox::hostname(self)
    }
    fn limits(&self) -> ShellLimits {
        self.cfg.shell
    }
}

impl Drop for ContainerSandbox {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_arguments_disable_network_and_set_limits() {
        let mut cfg = ContainerConfig::new(ContainerRuntime::Podman, "img:1");
        cfg.memory_bytes = 256 << 20;
        cfg.max_procs = 64;
        cfg.cpus = 0.5;
        cfg.extra_run_args = vec!["--ulimit".into(), "nofile=1024:1024".into()];
        let a = cfg.run_args("abc123");
        let pair = |k: &str| a.iter().position(|x| x == k).map(|i| a[i + 1].as_str());
        assert_eq!(pair("--network"), Some("none"));
        assert_eq!(pair("--memory"), Some("268435456"));
        assert_eq!(pair("--memory-swap"), Some("268435456"));
        assert_eq!(pair("--pids-limit"), Some("64"));
        assert_eq!(pair("--cpus"), Some("0.5"));
        assert_eq!(pair("--hostname"), Some("abc123"));
        assert_eq!(pair("--pull"), Some("never"));
        assert_eq!(pair("--ulimit"), Some("nofile=1024:1024"));
        assert!(a.contains(&"--rm".to_string()) && a.contains(&"--detach".to_string()));
        // The image and its command come last, after every option.
        assert_eq!(&a[a.len() - 2..], &["img:1".to_string(), "bash".to_string()]);
    }

    #[test]
    fn bad_configs_are_refused_before_running_anything() {
        let mut cfg = ContainerConfig::new(ContainerRuntime::Docker, "-rf");
        cfg.program = Some("/nonexistent/docker".into());
        assert!(matches!(ContainerSandbox::start(cfg.clone()), Err(OsError::Config(_))));
        cfg.image = "ok".into();
        cfg.cpus = 0.0;
        assert!(matches!(ContainerSandbox::start(cfg.clone()), Err(OsError::Config(_))));
        cfg.cpus = 1.0;
        cfg.hostname = Some("bad host".into());
        assert!(matches!(ContainerSandbox::start(cfg), Err(OsError::Config(_))));
    }

    #[test]
    fn missing_engine_is_named() {
        let mut cfg = ContainerConfig::new(ContainerRuntime::Docker, "img");
        cfg.program = Some("/nonexistent/docker".into());
        let e = ContainerSandbox::start(cfg).unwrap_err().to_string();
        assert!(e.contains("not found") && e.contains("namespace backend"), "{e}");
    }

    #[test]
    fn engine_errors_are_classified() {
        let cfg = ContainerConfig::new(ContainerRuntime::Docker, "img");
        let e = engine_failure(
            &cfg,
            "run",
            "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
        );
        assert!(e.to_string().contains("daemon is not reachable"), "{e}");
        let e = engine_failure(&cfg, "run", "Error: No such image: img");
        assert!(e.to_string().contains("is not present"), "{e}");
        let e = engine_failure(&cfg, "run", "something else");
        assert!(e.to_string().contains("docker run failed: something else"), "{e}");
    }
}
