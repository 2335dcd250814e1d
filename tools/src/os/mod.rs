//! The OS tool: a persistent root `bash --login` on a pty inside a Linux-namespace sandbox,
//! reproducing what AgentBench's OS tasks showed the model (raw terminal bytes up to the
//! prompt or 5 s of silence), with hard limits the harness lacked.
//!
//! Isolation: new mount, PID, network (loopback only, down), UTS (hostname = 12 hex digits) and
//! IPC namespaces, and a user namespace the shell joins after set-up:
//!
//! - As host root, root inside is an unprivileged host id range: uid/gid 0..65535 inside are
//!   host ids `base..base+65535`, `base` a random 65536-aligned value in
//!   [`SANDBOX_ID_FIRST_BASE`]`..0x7FFE0000` per sandbox (see [`OsSandbox::host_id_base`]).
//!   The session holds no host capability, never host uid 0, cannot undo mounts, and
//!   `RLIMIT_NPROC` applies. The lower layer is mounted idmapped (`MOUNT_ATTR_IDMAP`), so host
//!   root's files still show as root's inside (AgentBench asks about owners), and what root
//!   inside writes lands in the upper layer owned by `base`.
//! - As an unprivileged user, a user namespace mapping root to the caller comes first; after
//!   set-up the init moves into a nested one (root to root) with a new mount namespace, in
//!   which the kernel locks every mount of the set-up, so root inside cannot undo the masks.
//!
//! The root file system is an overlay: the host root (or a prepared root, see `edgeact
//! rootfs`) as read-only lower layer, a tmpfs upper layer thrown away with the task. Fresh
//! `/proc` with runc's masked paths (`/proc/kcore`, `/proc/keys`, `/proc/timer_list`,
//! `/proc/kmsg`, ... behind `/dev/null`; `/proc/acpi`, `/proc/scsi`, `/proc/tty/driver` empty)
//! and read-only paths (`/proc/sys`, `/proc/sysrq-trigger`, `/proc/bus`, `/proc/fs`,
//! `/proc/irq`), a minimal `/dev`, tmpfs `/tmp`. In host-root mode `/root`, `/home`,
//! `/etc/ssl/private` and other private places are empty tmpfs, `/etc/mysql/debian.cnf` is
//! empty, and `/etc/shadow`, `/etc/gshadow` and their `-` backups have their password hashes
//! replaced by `*`.
//!
//! PID 1 is a fresh `bash` (as in AgentBench's containers), exec'd once set-up is done: empty
//! environment, stdio on `/dev/null` and its own script pipe, root of the sandbox's user
//! namespace, running a builtin-only reaper loop; nothing of edgeact (memory, environment,
//! descriptors, command line) is in any process the sandbox can see. Its `/proc/1` is as
//! readable to root inside as a container's PID 1 is (so `find /` meets no "Permission
//! denied"), which shows only that bash. When the sandbox is dropped PID 1 is killed, and the
//! kernel kills every process of the namespace with it. The temp dir and cgroups are removed
//! on drop, on SIGINT/SIGTERM/SIGHUP once [`cleanup_on_signals`] is installed, and otherwise
//! by the next process's first start (see [`sweep_stale`]).
//!
//! Limits: wall clock per command (the foreground job is interrupted, then killed), CPU
//! seconds and address space per process (`RLIMIT_CPU`, `RLIMIT_AS` when no memory cgroup),
//! process count (`RLIMIT_NPROC` in the user namespace and a pids cgroup when writable),
//! memory (cgroup v2 `memory.max` or v1 `memory.limit_in_bytes` when writable), tmpfs sizes,
//! and an output cap after which the command is interrupted and the rest discarded.

mod cleanup;
pub mod container;
mod pty;
pub mod rootfs;
mod sys;
pub mod task;

use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sys::{Exec, NsFds, Op, Plan};

pub use cleanup::{cleanup_on_signals, sweep_stale};
pub use container::{ContainerConfig, ContainerRuntime, ContainerSandbox};
pub use pty::ShellLimits;
use pty::{PtyShell, Stuck};
pub use task::{OsTask, Script, ScriptLanguage};

/// Errors of the OS sandbox.
#[derive(Debug, thiserror::Error)]
pub enum OsError {
    /// The configuration cannot be honoured.
    #[error("sandbox configuration: {0}")]
    Config(String),
    /// A system call of the parent failed.
    #[error("{context}: {cause}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error (part of the message, not a `source`, so `{:#}` prints it once).
        cause: io::Error,
    },
    /// A set-up step inside the new namespaces failed.
    #[error("sandbox set-up failed at {step}: {errno}")]
    Setup {
        /// The step that failed.
        step: String,
        /// The OS error text.
        errno: String,
    },
    /// The agent's shell is gone (exited or killed); the sandbox must be restarted.
    #[error("the sandbox shell has exited")]
    ShellExited,
    /// A task description that cannot be used.
    #[error("task: {0}")]
    Task(String),
    /// The container engine (Docker/Podman) is missing, unreachable or failed.
    #[error("container: {0}")]
    Container(String),
}

/// Result alias for the OS module.
pub type Result<T> = std::result::Result<T, OsError>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> OsError {
    let context = context.into();
    move |cause| OsError::Io { context, cause }
}

/// The lower (read-only) layer of the sandbox's root file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootFs {
    /// The host's root file system, with private places masked.
    HostReadOnly,
    /// A prepared root directory (e.g. built by `edgeact rootfs build`).
    Dir(PathBuf),
}

/// Sandbox settings. `Default` gives AgentBench's behaviour plus safe limits.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Read-only lower layer of `/`.
    pub root: RootFs,
    /// Longest time one command may keep the terminal busy with output before it is
    /// interrupted (silence ends a command after `silence_timeout` anyway).
    pub wall_timeout: Duration,
    /// Silence that ends the collection of a command's output (AgentBench: 5 s).
    pub silence_timeout: Duration,
    /// `RLIMIT_CPU` of every process in the sandbox, seconds.
    pub cpu_seconds: u64,
    /// Memory of the whole sandbox (cgroup) or, without a writable cgroup, address space per
    /// process (`RLIMIT_AS`).
    pub memory_bytes: u64,
    /// Process limit (user-namespace `RLIMIT_NPROC`, and pids cgroup when writable).
    pub max_procs: u64,
    /// Bytes of output kept per command; past it the command is interrupted.
    pub output_cap: usize,
    /// `true` (default): raw terminal bytes as AgentBench showed them; `false`: escapes, `\r`
    /// and the trailing prompt removed.
    pub raw_terminal: bool,
    /// Must stay `false`: the sandbox has no network (loopback only, down).
    pub network: bool,
    /// Size of the writable layer and of `/tmp` (each a tmpfs).
    pub tmpfs_bytes: u64,
    /// Hostname; `None` = 12 random hex digits like a Docker container id.
    pub hostname: Option<String>,
    /// Host-root mode: directories replaced by empty tmpfs (those that exist).
    pub mask_dirs: Vec<PathBuf>,
}

impl SandboxConfig {
    /// The limits of the agent's shell session.
    pub fn limits(&self) -> ShellLimits {
        ShellLimits {
            wall_timeout: self.wall_timeout,
            silence_timeout: self.silence_timeout,
            output_cap: self.output_cap,
            raw_terminal: self.raw_terminal,
        }
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            root: RootFs::HostReadOnly,
            wall_timeout: Duration::from_secs(30),
            silence_timeout: Duration::from_secs(5),
            cpu_seconds: 600,
            memory_bytes: 1 << 30,
            max_procs: 256,
            output_cap: 1 << 20,
            raw_terminal: true,
            network: false,
            tmpfs_bytes: 512 << 20,
            hostname: None,
            mask_dirs: [
                "/root",
                "/home",
                "/work",
                "/mnt",
                "/media",
                "/srv",
                "/run",
                "/var/tmp",
                "/etc/ssh",
                "/etc/ssl/private",
                "/etc/letsencrypt",
                "/etc/NetworkManager/system-connections",
                "/var/lib/mysql",
                // Debian's daily job keeps unsanitized copies of the shadow files here.
                "/var/backups",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
        }
    }
}

/// Why the collection of a command's output stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The shell printed its prompt.
    Prompt,
    /// No output for `silence_timeout` (the command may still run, as in AgentBench).
    Silence,
    /// The command exceeded `wall_timeout` and was interrupted.
    WallTimeout,
    /// The command exceeded `output_cap` and was interrupted.
    OutputCap,
    /// The shell exited.
    ShellExited,
}

/// The result of one command typed into the shell.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// The observation text: raw terminal bytes (lossy UTF-8) or the cleaned form.
    pub output: String,
    /// Raw bytes as read from the terminal, input echo dropped (capped).
    pub raw: Vec<u8>,
    /// Why collection stopped.
    pub end: EndReason,
}

impl CommandOutput {
    /// Whether AgentBench could have read this output: it decoded the shell's bytes with
    /// Python's strict `bytes.decode("utf-8")`, which raised on anything else (see
    /// [`decode_utf8_strict`]; a character cut in two by our output cap does not count).
    pub fn is_utf8(&self) -> bool {
        decode_utf8_strict(&self.raw, self.end == EndReason::OutputCap).is_some()
    }
}

/// `bytes` as text where Python's strict `bytes.decode("utf-8")` reads them, else `None`
/// (AgentBench's OS task decoded the shell's output and the check scripts' outputs so, and a
/// task whose bytes raised there was counted as failed). `cut`: the bytes end at one of our
/// caps, which AgentBench did not have, so an incomplete character at the very end is left out
/// rather than counted as invalid.
pub fn decode_utf8_strict(bytes: &[u8], cut: bool) -> Option<&str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Some(text),
        // `error_len() == None`: only the end is an incomplete sequence.
        Err(e) if cut && e.error_len().is_none() => std::str::from_utf8(&bytes[..e.valid_up_to()]).ok(),
        Err(_) => None,
    }
}

/// The result of a script run as a separate process in the sandbox.
#[derive(Debug, Clone)]
pub struct ScriptOutput {
    /// Exit code (128 + signal when killed; 124 on timeout).
    pub code: i32,
    /// Combined stdout and stderr (capped).
    pub output: Vec<u8>,
}

impl ScriptOutput {
    /// Whether the script exited with 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// A task's machine as the OS tool uses it, whichever backend runs it (the namespace
/// [`OsSandbox`] or a Docker/Podman [`ContainerSandbox`]).
pub trait ShellSession {
    /// Types `bash_code` into the agent's persistent shell and collects the observation.
    fn run(&mut self, bash_code: &str) -> Result<CommandOutput>;
    /// Runs a task script as a separate process on the machine (not in the agent's shell).
    fn run_script(&mut self, script: &Script, args: &[&str]) -> Result<ScriptOutput>;
    /// The machine's hostname (shown in the prompt).
    fn hostname(&self) -> &str;
    /// The limits of the shell session.
    fn limits(&self) -> ShellLimits;
}

impl ShellSession for OsSandbox {
    fn run(&mut self, bash_code: &str) -> Result<CommandOutput> {
        OsSandbox::run(self, bash_code)
    }
    fn run_script(&mut self, script: &Script, args: &[&str]) -> Result<ScriptOutput> {
        OsSandbox::run_script(self, script, args)
    }
    fn hostname(&self) -> &str {
        OsSandbox::hostname(self)
    }
    fn limits(&self) -> ShellLimits {
        self.cfg.limits()
    }
}

/// Cuts an OS observation as AgentBench does: more than 800 characters → the first 780 +
/// `\n[truncated because the output is too long]`.
pub fn truncate_os_output(s: &str) -> String {
    if s.chars().count() > 800 {
        let end = s.char_indices().nth(780).map_or(s.len(), |(i, _)| i);
        format!("{}\n[truncated because the output is too long]", &s[..end])
    } else {
        s.to_string()
    }
}

/// Whether `chunk` contains the prompt as AgentBench detects it: regex `\x1b.+@.+[#|$] `
/// (`.` excludes newlines).
pub fn contains_prompt(chunk: &[u8]) -> bool {
    for (i, _) in chunk.iter().enumerate().filter(|(_, b)| **b == 0x1b) {
        let line = &chunk[i + 1..];
        let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
        // At least one byte before '@', at least one between '@' and the prompt char.
        let Some(at) = line.iter().skip(1).position(|&b| b == b'@').map(|p| p + 1) else {
            continue;
        };
        let rest = &line[at + 1..];
        if rest
            .windows(2)
            .skip(1)
            .any(|w| matches!(w[0], b'#' | b'|' | b'$') && w[1] == b' ')
        {
            return true;
        }
    }
    false
}

/// The cleaned form of terminal output: ANSI escape sequences (CSI, OSC, two-byte) removed,
/// `\r\n` → `\n`, other `\r` dropped, and the trailing prompt line removed.
pub fn clean_terminal_output(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut it = raw.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\x1b' => match it.next() {
                Some('[') => {
                    // CSI: parameters and intermediates, then one final byte in @..~.
                    for d in it.by_ref() {
                        if ('@'..='~').contains(&d) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    // OSC: up to BEL or ESC \.
                    while let Some(d) = it.next() {
                        if d == '\x07' {
                            break;
                        }
                        if d == '\x1b' {
                            it.next();
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {}
            c => out.push(c),
        }
    }
    // The prompt is the last line and ends with "# " or "$ ".
    if let Some(pos) = out.rfind('\n').map(|p| p + 1).or(Some(0)) {
        let last = &out[pos..];
        if last.contains('@') && (last.ends_with("# ") || last.ends_with("$ ")) {
            out.truncate(pos);
        }
    }
    while out.ends_with('\n') {
        out.pop();
    }
    out
}

pub(crate) const BASHRC: &str = r#"# ~/.bashrc of edgeact sandbox sessions: the interactive settings of Ubuntu's default
# root shell (xterm title + user@host:cwd prompt, colour aliases), which AgentBench showed.
case $- in *i*) ;; *) return ;; esac
HISTCONTROL=ignoreboth
shopt -s histappend checkwinsize
PS1='${debian_chroot:+($debian_chroot)}\u@\h:\w\$ '
case "$TERM" in
xterm*|rxvt*) PS1="\[\e]0;${debian_chroot:+($debian_chroot)}\u@\h: \w\a\]$PS1" ;;
esac
if [ -x /usr/bin/dircolors ]; then
    eval "$(dircolors -b)"
    alias ls='ls --color=auto'
    alias grep='grep --color=auto'
    alias fgrep='fgrep --color=auto'
    alias egrep='egrep --color=auto'
fi
alias ll='ls -alF'
alias la='ls -A'
alias l='ls -CF'
"#;

pub(crate) const PROFILE: &str = r#"# ~/.profile of edgeact sandbox sessions.
if [ "$BASH" ]; then
    if [ -f ~/.bashrc ]; then
        . ~/.bashrc
    fi
fi
mesg n 2> /dev/null || true
"#;

/// Bash 5.1+ wraps every prompt in bracketed-paste escapes (`\x1b[?2004h`); the shells of
/// AgentBench's traces did not, so it is switched off.
pub(crate) const INPUTRC: &str = "set enable-bracketed-paste off\n";

const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host uids/gids given to one sandbox (host root mode): root inside is `base`, inside id
/// `n` is `base + n`.
pub const SANDBOX_ID_COUNT: u32 = 65536;
/// Lowest base of a sandbox's id range. Each sandbox takes a random 65536-aligned range in
/// 0x7000_0000..0x7FFE_0000, above systemd's container range (524288..1879048191) and below
/// its "foreign" range, so no host user or other sandbox (but by chance) owns its ids.
pub const SANDBOX_ID_FIRST_BASE: u32 = 0x7000_0000;
const SANDBOX_ID_RANGES: u32 = 4094;

/// The reaper loop the sandbox's PID 1 (`bash`) runs, with builtins only (no process of its
/// own to show in `ps`).
/// `read` waits on the script pipe, whose write end PID 1 keeps open, for one second at a
/// time: between two reads bash reaps its children, orphans re-parented to PID 1 included.
/// SIGALRM stays untrapped: older bash times `read -t` out with it.
const INIT_SCRIPT: &[u8] =
    b"trap '' HUP INT QUIT TERM TSTP TTIN TTOU USR1 USR2 PIPE\nwhile :; do read -r -t 1 _; done\n";

/// `/proc` files hidden behind `/dev/null`, as runc's default masked paths (plus `kmsg`):
/// kernel memory, keyrings, timers and scheduler internals of the host.
const PROC_MASKED_FILES: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/key-users",
    "/proc/kmsg",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/interrupts",
];
/// `/proc` directories hidden behind an empty read-only tmpfs (runc's masked directories).
/// `/proc/tty/driver` too: it is readable by host root only, so root inside (an unprivileged
/// host id) would meet "Permission denied" there in every `find /`.
const PROC_MASKED_DIRS: &[&str] = &["/proc/acpi", "/proc/asound", "/proc/scsi", "/proc/tty/driver"];
/// `/proc` paths made read-only (runc's readonly paths): kernel tunables and triggers.
const PROC_READ_ONLY: &[&str] = &["/proc/sys", "/proc/sysrq-trigger", "/proc/bus", "/proc/fs", "/proc/irq"];
/// Host-root view: files that hold secrets and are replaced by an empty file.
const HOST_SECRET_FILES: &[&str] = &["/etc/mysql/debian.cnf", "/etc/security/opasswd"];
/// Host-root view: shadow files whose password hashes are replaced by `*`.
const HOST_SHADOW_FILES: &[&str] = &["/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-"];

/// `/etc/shadow`-style content with every password field replaced by `*`.
fn sanitize_shadow(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut f: Vec<&str> = line.split(':').collect();
        if f.len() > 1 {
            f[1] = "*";
        }
        out.push_str(&f.join(":"));
        out.push('\n');
    }
    out
}

/// Creates per-sandbox cgroups (v2, else v1 pids + memory) when the hierarchy is writable;
/// returns the directories made. Failures only mean fewer enforced limits.
fn make_cgroups(id: &str, cfg: &SandboxConfig) -> Vec<(PathBuf, Vec<(&'static str, String)>)> {
    let mut made = Vec::new();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
    let wanted: Vec<(PathBuf, Vec<(&'static str, String)>)> = if v2.exists() {
        vec![(
            PathBuf::from(format!("{}/{}{id}", cleanup::CGROUP_PARENTS[0], cleanup::CGROUP_PREFIX)),
            vec![
                ("pids.max", cfg.max_procs.to_string()),
                ("memory.max", cfg.memory_bytes.to_string()),
                ("memory.swap.max", "0".into()),
            ],
        )]
    } else {
        vec![
            (
                PathBuf::from(format!("{}/{}{id}", cleanup::CGROUP_PARENTS[1], cleanup::CGROUP_PREFIX)),
                vec![("pids.max", cfg.max_procs.to_string())],
            ),
            (
                PathBuf::from(format!("{}/{}{id}", cleanup::CGROUP_PARENTS[2], cleanup::CGROUP_PREFIX)),
                vec![("memory.limit_in_bytes", cfg.memory_bytes.to_string())],
            ),
        ]
    };
    for (dir, settings) in wanted {
        if std::fs::create_dir(&dir).is_err() {
            continue;
        }
        let applied: Vec<_> = settings
            .into_iter()
            .filter(|(k, v)| std::fs::write(dir.join(k), v).is_ok())
            .collect();
        made.push((dir, applied));
    }
    made
}

/// A running sandbox with its persistent shell. Dropping it kills everything inside.
///
/// Processes inside die with the thread that called [`OsSandbox::start`] (`PR_SET_PDEATHSIG`
/// follows the creating thread): keep the sandbox on the thread that made it.
pub struct OsSandbox {
    cfg: SandboxConfig,
    shell: PtyShell,
    intermediate: libc::pid_t,
    init: libc::pid_t,
    ns: NsFds,
    /// Host root mode: the sandbox's user namespace and the host id of its root.
    userns: Option<OwnedFd>,
    id_base: Option<u32>,
    stage: PathBuf,
    cgroups: Vec<PathBuf>,
    rlimits: Vec<(libc::__rlimit_resource_t, libc::rlim_t)>,
    hostname: String,
    env: Vec<(String, String)>,
    /// What enforces memory and process limits, for reports.
    enforcement: Vec<String>,
}

impl std::fmt::Debug for OsSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OsSandbox")
            .field("hostname", &self.hostname)
            .field("init", &self.init)
            .finish()
    }
}

fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rand::random_range(0..16u32), 16).unwrap_or('0'))
        .collect()
}

impl OsSandbox {
    /// Starts the sandbox and its shell, and reads the shell's first prompt.
    pub fn start(cfg: SandboxConfig) -> Result<Self> {
        if cfg.network {
            return Err(OsError::Config(
                "network access is not supported: the sandbox has loopback only".into(),
            ));
        }
        if cfg.output_cap == 0 || cfg.max_procs < 4 || cfg.memory_bytes < (32 << 20) {
            return Err(OsError::Config(
                "output_cap > 0, max_procs >= 4 and memory_bytes >= 32 MiB are required".into(),
            ));
        }
        let hostname = cfg.hostname.clone().unwrap_or_else(|| random_hex(12));
        if hostname.is_empty()
            || hostname.len() > 64
            || !hostname.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(OsError::Config(format!("invalid hostname {hostname:?}")));
        }
        let lower = match &cfg.root {
            RootFs::HostReadOnly => PathBuf::from("/"),
            RootFs::Dir(d) => {
                if !d.join("bin/bash").exists() && !d.join("usr/bin/bash").exists() {
                    return Err(OsError::Config(format!(
                        "{} is not a root file system (no bin/bash)",
                        d.display()
                    )));
                }
                d.canonicalize().map_err(io_err(format!("root {}", d.display())))?
            }
        };
        let lower_s = lower.to_str().filter(|s| !s.contains([',', ':'])).ok_or_else(|| {
            OsError::Config(format!(
                "root path {} must be UTF-8 without ',' or ':'",
                lower.display()
            ))
        })?;
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        cleanup::sweep_stale_once();
        // The owner's pid in every host path lets a later start sweep what a killed process
        // left behind.
        let id = format!("{}-{}", std::process::id(), random_hex(16));
        let stage = std::env::temp_dir().join(format!("{}{id}", cleanup::STAGE_PREFIX));
        std::fs::create_dir(&stage).map_err(io_err(format!("create {}", stage.display())))?;

        let env: Vec<(String, String)> = vec![
            ("HOME".into(), "/root".into()),
            ("PATH".into(), PATH_ENV.into()),
            ("TERM".into(), "xterm".into()),
            ("HOSTNAME".into(), hostname.clone()),
        ];
        let cgroups = make_cgroups(&id, &cfg);
        let mut enforcement = Vec::new();
        let has_mem_cg = cgroups
            .iter()
            .any(|(_, s)| s.iter().any(|(k, _)| k.starts_with("memory")));
        let mut rlimits = vec![(libc::RLIMIT_CPU, cfg.cpu_seconds), (libc::RLIMIT_CORE, 0)];
        if has_mem_cg {
            enforcement.push("memory: cgroup".to_string());
        } else {
            rlimits.push((libc::RLIMIT_AS, cfg.memory_bytes));
            enforcement.push("memory: RLIMIT_AS per process".to_string());
        }
        rlimits.push((libc::RLIMIT_NPROC, cfg.max_procs));
        enforcement.push("processes: RLIMIT_NPROC in the user namespace".to_string());
        if cgroups.iter().any(|(_, s)| s.iter().any(|(k, _)| *k == "pids.max")) {
            enforcement.push("processes: pids cgroup".to_string());
        }
        let cgroup_dirs: Vec<PathBuf> = cgroups.into_iter().map(|(d, _)| d).collect();
        cleanup::register(&stage, &cgroup_dirs);

        let placeholder = OwnedFd::from(std::fs::File::open("/dev/null").map_err(io_err("open /dev/null"))?);
        let shell = PtyShell::new(placeholder, cfg.limits(), Stuck::KillForegroundGroup);
        let mut sb = Self {
            cfg,
            shell,
            intermediate: 0,
            init: 0,
            ns: NsFds { fds: Vec::new() },
            userns: None,
            id_base: None,
            stage,
            cgroups: cgroup_dirs,
            rlimits,
            hostname,
            env,
            enforcement,
        };
        sb.launch(lower_s, euid == 0)?;
        Ok(sb)
    }

    fn stage_dir(&self) -> Result<&str> {
        self.stage
            .to_str()
            .ok_or_else(|| OsError::Config("temp dir path is not UTF-8".into()))
    }

    /// Where the sandbox's root is assembled (in the stage directory).
    fn root_dir(&self) -> Result<String> {
        Ok(format!("{}/root", self.stage_dir()?))
    }

    /// The set-up steps of the sandbox's PID 1. `ids`: host root mode, the sandbox's id base
    /// and user namespace; the lower layer is then mounted idmapped (host uid 0 shows as
    /// root inside) and everything set-up creates is owned by the sandbox's root.
    fn build_ops(&self, lower: &str, overlay: bool, ids: Option<(u32, &OwnedFd)>) -> Result<Vec<Op>> {
        let c = |s: &str| sys::cstr(s).map_err(io_err("path"));
        let st = self.stage_dir()?;
        let root = self.root_dir()?;
        let r = |p: &str| format!("{root}{p}");
        let none = || c("none");
        let tmpfs = || c("tmpfs");
        // `/dev/null` bound over an optional path: it reads as empty and cannot be written.
        let null_over_if_exists = |path: &str| -> Result<Op> {
            Ok(Op::MountIfExists {
                probe: c(&r(path))?,
                src: c("/dev/null")?,
                dst: c(&r(path))?,
                fstype: none()?,
                flags: libc::MS_BIND,
                data: None,
            })
        };
        let base = ids.map(|(b, _)| b);
        // tmpfs options: the mount's root directory belongs to the sandbox's root.
        let owned = |opts: String| match base {
            Some(b) => format!("{opts},uid={b},gid={b}"),
            None => opts,
        };
        // Ownership of a file set-up wrote, as the lower layer's file had it (root otherwise).
        let chown_like_lower = |ops: &mut Vec<Op>, path: &str| -> Result<()> {
            use std::os::unix::fs::MetadataExt;
            let Some(b) = base else { return Ok(()) };
            let (uid, gid) = std::fs::symlink_metadata(format!("{}{path}", lower.trim_end_matches('/')))
                .map(|m| (m.uid(), m.gid()))
                .unwrap_or((0, 0));
            let shift = |id: u32| if id < SANDBOX_ID_COUNT { b + id } else { b };
            ops.push(Op::Chown {
                path: c(&r(path))?,
                uid: shift(uid),
                gid: shift(gid),
            });
            Ok(())
        };
        let mut ops = vec![
            Op::Mount {
                src: none()?,
                dst: c("/")?,
                fstype: none()?,
                flags: libc::MS_REC | libc::MS_PRIVATE,
                data: None,
            },
            Op::Mount {
                src: tmpfs()?,
                dst: c(st)?,
                fstype: tmpfs()?,
                flags: libc::MS_NOSUID | libc::MS_NODEV,
                data: Some(c(&format!("size={},mode=755", self.cfg.tmpfs_bytes))?),
            },
            Op::Mkdir {
                path: c(&format!("{st}/upper"))?,
                mode: 0o755,
            },
            Op::Mkdir {
                path: c(&format!("{st}/work"))?,
                mode: 0o755,
            },
            Op::Mkdir {
                path: c(&root)?,
                mode: 0o755,
            },
        ];
        let lower_layer = match ids {
            Some((b, userns)) => {
                // The merged root directory takes its owner from the upper one.
                ops.push(Op::Chown {
                    path: c(&format!("{st}/upper"))?,
                    uid: b,
                    gid: b,
                });
                let shifted = format!("{st}/lower");
                ops.push(Op::Mkdir {
                    path: c(&shifted)?,
                    mode: 0o755,
                });
                ops.push(Op::IdmappedBind {
                    src: c(lower)?,
                    dst: c(&shifted)?,
                    userns: userns.as_raw_fd(),
                });
                shifted
            }
            None => lower.to_string(),
        };
        // `nodev` on the root: a device node stored on the lower layer outside `/dev` (a chroot,
        // container storage under /var/lib) would otherwise open the host's device.
        if overlay {
            ops.push(Op::Mount {
                src: c("overlay")?,
                dst: c(&root)?,
                fstype: c("overlay")?,
                flags: libc::MS_NODEV,
                data: Some(c(&format!(
                    "lowerdir={lower_layer},upperdir={st}/upper,workdir={st}/work"
                ))?),
            });
        } else {
            // Fallback without overlayfs: the lower layer bound read-only with every mount
            // below it; only the tmpfs mounts below (and the masks) are writable.
            ops.push(Op::Mount {
                src: c(&lower_layer)?,
                dst: c(&root)?,
                fstype: none()?,
                flags: libc::MS_BIND | libc::MS_REC,
                data: None,
            });
            ops.push(Op::ReadOnlyTree { path: c(&root)? });
        }
        ops.push(Op::Mount {
            src: c("proc")?,
            dst: c(&r("/proc"))?,
            fstype: c("proc")?,
            flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data: None,
        });
        for f in PROC_MASKED_FILES {
            ops.push(null_over_if_exists(f)?);
        }
        for d in PROC_MASKED_DIRS {
            ops.push(Op::MountIfExists {
                probe: c(&r(d))?,
                src: tmpfs()?,
                dst: c(&r(d))?,
                fstype: tmpfs()?,
                flags: libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                data: Some(c(&owned("size=4k,mode=555".into()))?),
            });
        }
        for p in PROC_READ_ONLY {
            ops.push(Op::ReadOnlyIfExists { path: c(&r(p))? });
        }
        ops.push(Op::Mount {
            src: tmpfs()?,
            dst: c(&r("/dev"))?,
            fstype: tmpfs()?,
            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
            data: Some(c(&owned("size=1m,mode=755".into()))?),
        });
        for d in ["null", "zero", "full", "random", "urandom", "tty"] {
            ops.push(Op::WriteFile {
                path: c(&r(&format!("/dev/{d}")))?,
                content: Vec::new(),
                mode: 0o666,
            });
            ops.push(Op::Mount {
                src: c(&format!("/dev/{d}"))?,
                dst: c(&r(&format!("/dev/{d}")))?,
                fstype: none()?,
                flags: libc::MS_BIND,
                data: None,
            });
        }
        ops.push(Op::Mkdir {
            path: c(&r("/dev/pts"))?,
            mode: 0o755,
        });
        ops.push(Op::Mount {
            src: c("devpts")?,
            dst: c(&r("/dev/pts"))?,
            fstype: c("devpts")?,
            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
            data: Some(c("newinstance,ptmxmode=0666,mode=620")?),
        });
        ops.push(Op::Symlink {
            target: c("pts/ptmx")?,
            link: c(&r("/dev/ptmx"))?,
        });
        ops.push(Op::Symlink {
            target: c("/proc/self/fd")?,
            link: c(&r("/dev/fd"))?,
        });
        for (i, n) in ["stdin", "stdout", "stderr"].iter().enumerate() {
            ops.push(Op::Symlink {
                target: c(&format!("/proc/self/fd/{i}"))?,
                link: c(&r(&format!("/dev/{n}")))?,
            });
        }
        ops.push(Op::Mkdir {
            path: c(&r("/dev/shm"))?,
            mode: 0o1777,
        });
        ops.push(Op::Mount {
            src: tmpfs()?,
            dst: c(&r("/dev/shm"))?,
            fstype: tmpfs()?,
            flags: libc::MS_NOSUID | libc::MS_NODEV,
            data: Some(c(&owned("size=64m,mode=1777".into()))?),
        });
        ops.push(Op::Mount {
            src: tmpfs()?,
            dst: c(&r("/tmp"))?,
            fstype: tmpfs()?,
            flags: libc::MS_NOSUID | libc::MS_NODEV,
            data: Some(c(&owned(format!("size={},mode=1777", self.cfg.tmpfs_bytes)))?),
        });
        let host = self.cfg.root == RootFs::HostReadOnly;
        if host || !overlay {
            for d in &self.cfg.mask_dirs {
                let d = d
                    .to_str()
                    .filter(|d| d.starts_with('/'))
                    .ok_or_else(|| OsError::Config(format!("mask directory {} must be absolute UTF-8", d.display())))?;
                let mode = match d {
                    "/root" => "700",
                    "/tmp" | "/var/tmp" => "1777",
                    _ => "755",
                };
                ops.push(Op::MountIfExists {
                    probe: c(&r(d))?,
                    src: tmpfs()?,
                    dst: c(&r(d))?,
                    fstype: tmpfs()?,
                    flags: libc::MS_NOSUID | libc::MS_NODEV,
                    data: Some(c(&owned(format!("size={},mode={mode}", self.cfg.tmpfs_bytes)))?),
                });
            }
        }
        if host {
            for f in HOST_SHADOW_FILES {
                if let Ok(text) = std::fs::read_to_string(f) {
                    if overlay {
                        ops.push(Op::WriteFile {
                            path: c(&r(f))?,
                            content: sanitize_shadow(&text).into_bytes(),
                            mode: 0o640,
                        });
                    } else {
                        ops.push(Op::Mount {
                            src: c("/dev/null")?,
                            dst: c(&r(f))?,
                            fstype: none()?,
                            flags: libc::MS_BIND,
                            data: None,
                        });
                    }
                }
            }
            for f in HOST_SECRET_FILES {
                ops.push(null_over_if_exists(f)?);
            }
        }
        if overlay {
            ops.push(Op::WriteFile {
                path: c(&r("/etc/hostname"))?,
                content: format!("{}\n", self.hostname).into_bytes(),
                mode: 0o644,
            });
            chown_like_lower(&mut ops, "/etc/hostname")?;
            let hosts = format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
                self.hostname
            );
            ops.push(Op::WriteFile {
                path: c(&r("/etc/hosts"))?,
                content: hosts.into_bytes(),
                mode: 0o644,
            });
            chown_like_lower(&mut ops, "/etc/hosts")?;
        }
        ops.push(Op::Mkdir {
            path: c(&r("/root"))?,
            mode: 0o700,
        });
        for (name, content) in [(".bashrc", BASHRC), (".profile", PROFILE), (".inputrc", INPUTRC)] {
            let path = format!("/root/{name}");
            ops.push(Op::WriteFile {
                path: c(&r(&path))?,
                content: content.as_bytes().to_vec(),
                mode: 0o644,
            });
            if let Some(b) = base {
                ops.push(Op::Chown {
                    path: c(&r(&path))?,
                    uid: b,
                    gid: b,
                });
            }
        }
        ops.push(Op::Hostname {
            name: c(&self.hostname)?,
        });
        ops.push(Op::PivotRoot { path: c(&root)? });
        Ok(ops)
    }

    fn launch(&mut self, lower: &str, host_root: bool) -> Result<()> {
        // Host root: a user namespace whose root is an unprivileged host id range. Created
        // before set-up because the lower layer's idmapped mount needs it.
        if host_root {
            let base = SANDBOX_ID_FIRST_BASE + rand::random_range(0..SANDBOX_ID_RANGES) * SANDBOX_ID_COUNT;
            let userns = sys::new_user_namespace(|pid| write_id_maps(pid, Some(base)))
                .map_err(io_err("create the sandbox's user namespace"))?;
            self.id_base = Some(base);
            self.userns = Some(userns);
            self.enforcement.push(format!(
                "privilege: root inside is host uid {base}..{} (user namespace)",
                base as u64 + SANDBOX_ID_COUNT as u64 - 1
            ));
        }
        let attempt = |this: &mut Self, overlay: bool| -> Result<()> {
            let idmapped = this.launch_with(lower, overlay, true);
            match idmapped {
                Err(OsError::Setup { ref step, ref errno })
                    if this.userns.is_some() && step.starts_with("idmapped") =>
                {
                    // A lower file system without idmapped-mount support: the sandbox stays
                    // unprivileged, but host-owned files show as nobody inside.
                    this.enforcement.push(format!(
                        "file owners: host ids unmapped (idmapped mount refused: {errno})"
                    ));
                    this.launch_with(lower, overlay, false)
                }
                other => other,
            }
        };
        match attempt(self, true) {
            Err(OsError::Setup { ref step, .. }) if step.contains("overlay") => {
                self.enforcement.push("root: read-only bind (overlayfs refused)".into());
                attempt(self, false)
            }
            other => other,
        }
    }

    fn launch_with(&mut self, lower: &str, overlay: bool, idmap: bool) -> Result<()> {
        let host_root = self.userns.is_some();
        // The copy the sandbox's processes keep open (the one the idmapped mount names).
        let userns = match &self.userns {
            Some(u) => Some(u.try_clone().map_err(io_err("user namespace descriptor"))?),
            None => None,
        };
        let ids = match (&userns, self.id_base) {
            (Some(u), Some(b)) if idmap => Some((b, u)),
            _ => None,
        };
        let ops = self.build_ops(lower, overlay, ids)?;
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let shell = Exec::new("/bin/bash", &["bash", "--login"], &env).map_err(io_err("shell arguments"))?;
        let init = Exec::new("/bin/bash", &["bash"], &[]).map_err(io_err("init arguments"))?;
        let mut cg_fds = Vec::new();
        for d in &self.cgroups {
            if let Ok(f) = std::fs::OpenOptions::new().write(true).open(d.join("cgroup.procs")) {
                cg_fds.push(OwnedFd::from(f));
            }
        }
        let plan = Plan {
            ns_flags: libc::CLONE_NEWNS
                | libc::CLONE_NEWPID
                | libc::CLONE_NEWNET
                | libc::CLONE_NEWUTS
                | libc::CLONE_NEWIPC,
            userns_early: !host_root,
            userns,
            ops,
            root: sys::cstr(&self.root_dir()?).map_err(io_err("path"))?,
            cgroup_procs: cg_fds,
            shell,
            init,
            init_script: INIT_SCRIPT.to_vec(),
            rlimits: self.rlimits.clone(),
        };
        let (master, slave) = sys::openpty().map_err(io_err("open a pty"))?;
        let (report_r, report_w) = sys::pipe().map_err(io_err("pipe"))?;
        let (go_r, go_w) = sys::pipe().map_err(io_err("pipe"))?;
        let fds = sys::StartFds {
            report_w: report_w.as_raw_fd(),
            go_r: go_r.as_raw_fd(),
            slave: slave.as_raw_fd(),
        };
        let pid = sys::spawn_sandbox(&plan, &fds).map_err(io_err("fork"))?;
        drop((report_w, go_r, slave));
        self.intermediate = pid;
        self.init = 0;
        self.shell.master = master;
        let mut report = std::fs::File::from(report_r);
        let fail = |this: &mut Self, e: OsError| {
            this.kill_all();
            Err(e)
        };
        let mut read_exact = |buf: &mut [u8]| report.read_exact(buf);
        // The intermediate (`I`, its child's pid) and the init (`R` when the shell runs) write
        // concurrently, so `R` may come first; the sandbox is ready once both have come.
        let mut shell_ready = false;
        loop {
            let mut tag = [0u8; 1];
            if read_exact(&mut tag).is_err() {
                return fail(
                    self,
                    OsError::Setup {
                        step: "start".into(),
                        errno: "sandbox process exited early".into(),
                    },
                );
            }
            match tag[0] {
                b'I' | b'M' => {
                    let mut p = [0u8; 4];
                    if read_exact(&mut p).is_err() {
                        return fail(
                            self,
                            OsError::Setup {
                                step: "start".into(),
                                errno: "short message".into(),
                            },
                        );
                    }
                    let p = i32::from_le_bytes(p);
                    if tag[0] == b'I' {
                        self.init = p;
                        if shell_ready {
                            break;
                        }
                        continue;
                    }
                    // Id maps for the early user namespace (unprivileged mode).
                    if let Err(e) = write_id_maps(p, None) {
                        return fail(self, io_err("write the sandbox's id maps")(e));
                    }
                    if sys::write_all(go_w.as_raw_fd(), b"g", Duration::from_secs(5)).is_err() {
                        return fail(
                            self,
                            OsError::Setup {
                                step: "user namespace".into(),
                                errno: "child gone".into(),
                            },
                        );
                    }
                }
                b'E' => {
                    let mut m = [0u8; 8];
                    let _ = read_exact(&mut m);
                    let step = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
                    let errno = u32::from_le_bytes([m[4], m[5], m[6], m[7]]) as i32;
                    let step = describe_step(&plan.ops, step);
                    return fail(
                        self,
                        OsError::Setup {
                            step,
                            errno: sys::errno_text(errno),
                        },
                    );
                }
                b'R' if self.init > 0 => break,
                b'R' => shell_ready = true,
                other => {
                    return fail(
                        self,
                        OsError::Setup {
                            step: "start".into(),
                            errno: format!("unexpected message {other}"),
                        },
                    );
                }
            }
        }
        cleanup::set_pids(&self.stage, &[self.init, self.intermediate]);
        let intermediate = (!host_root).then_some(self.intermediate);
        self.ns =
            NsFds::open(self.init, self.userns.as_ref(), intermediate).map_err(io_err("open sandbox namespaces"))?;
        self.shell.started()
    }

    /// The sandbox's hostname.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The configuration in use.
    pub fn config(&self) -> &SandboxConfig {
        &self.cfg
    }

    /// The sandbox's temp dir on the host (removed when the sandbox is dropped).
    pub fn temp_dir(&self) -> &Path {
        &self.stage
    }

    /// The sandbox's cgroup directories (removed when the sandbox is dropped).
    pub fn cgroup_dirs(&self) -> &[PathBuf] {
        &self.cgroups
    }

    /// Host root mode: the host uid (and gid) of root inside the sandbox, the first of
    /// [`SANDBOX_ID_COUNT`] ids; `None` in unprivileged mode (root inside is the caller).
    pub fn host_id_base(&self) -> Option<u32> {
        self.id_base
    }

    /// What enforces each limit on this machine (e.g. "memory: cgroup").
    pub fn enforcement(&self) -> &[String] {
        &self.enforcement
    }

    /// Types `bash_code` + `\n` into the persistent shell (one write, as the harness did) and
    /// collects the output until the prompt, `silence_timeout` without output, the wall-clock
    /// limit or the output cap. The echo of the input is dropped.
    pub fn run(&mut self, bash_code: &str) -> Result<CommandOutput> {
        self.shell.run(bash_code)
    }

    /// Runs a script as a separate process inside the sandbox (not in the agent's shell):
    /// task `init` and `check` scripts. `args` follow AgentBench: bash gets `bash -c code --
    /// args…`, python `python3 -c code args…`, C/C++ are compiled with gcc/g++ inside the
    /// sandbox and run with `args`. Bounded by `wall_timeout` and `output_cap`.
    pub fn run_script(&mut self, script: &Script, args: &[&str]) -> Result<ScriptOutput> {
        let (argv, stdin) = pty::script_command(script, args);
        let mut full = vec!["/usr/bin/env".to_string(), "env".to_string()];
        full.extend(argv);
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args_ref: Vec<&str> = full[1..].iter().map(|s| s.as_str()).collect();
        let exec = Exec::new(&full[0], &args_ref, &env).map_err(|e| OsError::Task(format!("script arguments: {e}")))?;
        let cg_fds: Vec<OwnedFd> = self
            .cgroups
            .iter()
            .filter_map(|d| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.procs"))
                    .ok()
            })
            .map(OwnedFd::from)
            .collect();
        let (in_r, in_w) = sys::pipe().map_err(io_err("pipe"))?;
        let (out_r, out_w) = sys::pipe().map_err(io_err("pipe"))?;
        let (rep_r, rep_w) = sys::pipe().map_err(io_err("pipe"))?;
        let fds = sys::ScriptFds {
            stdin_r: in_r.as_raw_fd(),
            out_w: out_w.as_raw_fd(),
            report_w: rep_w.as_raw_fd(),
        };
        let pid = sys::spawn_in_sandbox(&self.ns, &cg_fds, &self.rlimits, &exec, &fds).map_err(io_err("fork"))?;
        drop((in_r, out_w, rep_w));
        let feeder = pty::spawn_stdin_feeder(in_w, stdin, self.cfg.wall_timeout);
        let deadline = Instant::now() + self.cfg.wall_timeout;
        let got = pty::collect_script_output(&out_r, deadline, self.cfg.output_cap, &mut || {
            sys::waitpid(pid, true).map_err(io_err("wait for script"))
        })?;
        if got.stopped {
            let _ = sys::kill(pid, libc::SIGKILL);
        }
        let (output, timed_out) = (got.output, got.timed_out);
        let status = got.status;
        let status = match status {
            Some(s) => s,
            None => sys::waitpid(pid, false)
                .map_err(io_err("wait for script"))?
                .unwrap_or(0),
        };
        let _ = feeder.join();
        // Set-up failures are reported before the script's processes exit; whatever else still
        // holds the pipe is not waited for.
        let rep = sys::read_ready(rep_r.as_raw_fd());
        if rep.first() == Some(&b'E') && rep.len() >= 9 {
            let errno = i32::from_le_bytes([rep[5], rep[6], rep[7], rep[8]]);
            return Err(OsError::Setup {
                step: "entering the sandbox for a script".into(),
                errno: sys::errno_text(errno),
            });
        }
        let code = if timed_out { 124 } else { sys::exit_code(status) };
        Ok(ScriptOutput { code, output })
    }

    fn kill_all(&mut self) {
        if self.init > 0 {
            // The intermediate process reaps the init, which exits only once the kernel has
            // killed every process of its namespace: when it is gone, the sandbox is empty.
            let _ = sys::kill(self.init, libc::SIGKILL);
        } else if self.intermediate > 0 {
            let _ = sys::kill(self.intermediate, libc::SIGKILL);
        }
        if self.intermediate > 0 {
            let _ = sys::waitpid(self.intermediate, false);
            self.intermediate = 0;
        }
        self.init = 0;
        self.shell.alive = false;
    }
}

/// Writes the id maps of the user namespace of process `pid`. `base`: host root mode, root
/// inside is host id `base` (65536 ids); `None`: unprivileged mode, root inside is the caller.
fn write_id_maps(pid: libc::pid_t, base: Option<u32>) -> io::Result<()> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let w = |f: &str, s: &str| std::fs::write(dir.join(f), s);
    match base {
        Some(b) => {
            w("uid_map", &format!("0 {b} {SANDBOX_ID_COUNT}\n"))?;
            w("gid_map", &format!("0 {b} {SANDBOX_ID_COUNT}\n"))?;
        }
        None => {
            // SAFETY: getuid/getgid have no preconditions.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            w("setgroups", "deny")?;
            w("uid_map", &format!("0 {uid} 1\n"))?;
            w("gid_map", &format!("0 {gid} 1\n"))?;
        }
    }
    Ok(())
}

fn describe_step(ops: &[Op], step: u32) -> String {
    match step {
        sys::STEP_UNSHARE => "creating namespaces (unshare)".into(),
        sys::STEP_USERNS => "creating the user namespace".into(),
        sys::STEP_FORK => "fork".into(),
        sys::STEP_SHELL => "starting the shell".into(),
        sys::STEP_LOCK_MOUNTS => "locking the mounts (nested user namespace)".into(),
        i => match ops.get(i as usize) {
            Some(Op::Mount { dst, fstype, .. }) => {
                format!("mount {} on {}", fstype.to_string_lossy(), dst.to_string_lossy())
            }
            Some(Op::MountIfExists { dst, .. }) => format!("mask {}", dst.to_string_lossy()),
            Some(Op::ReadOnlyIfExists { path }) => format!("read-only {}", path.to_string_lossy()),
            Some(Op::ReadOnlyTree { path }) => format!("read-only tree {}", path.to_string_lossy()),
            Some(Op::Chown { path, .. }) => format!("chown {}", path.to_string_lossy()),
            Some(Op::IdmappedBind { src, .. }) => format!("idmapped mount of {}", src.to_string_lossy()),
            Some(Op::Mkdir { path, .. }) => format!("mkdir {}", path.to_string_lossy()),
            Some(Op::WriteFile { path, .. }) => format!("write {}", path.to_string_lossy()),
            Some(Op::Symlink { link, .. }) => format!("symlink {}", link.to_string_lossy()),
            Some(Op::PivotRoot { .. }) => "pivot_root".into(),
            Some(Op::Hostname { .. }) => "sethostname".into(),
            None => format!("step {i}"),
        },
    }
}

impl Drop for OsSandbox {
    fn drop(&mut self) {
        self.kill_all();
        // The cgroups empty once the kernel has reaped the namespace's processes.
        for d in &self.cgroups {
            cleanup::remove_cgroup(d, true);
        }
        let _ = std::fs::remove_dir_all(&self.stage);
        cleanup::unregister(&self.stage);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_truncation_rule() {
        let s = "a".repeat(800);
        assert_eq!(truncate_os_output(&s), s);
        let s = "b".repeat(801);
        assert_eq!(
            truncate_os_output(&s),
            format!("{}\n[truncated because the output is too long]", "b".repeat(780))
        );
    }

    #[test]
    fn strict_utf8_as_python_decodes() {
        assert_eq!(decode_utf8_strict("ok é 😀".as_bytes(), false), Some("ok é 😀"));
        // Invalid bytes, a surrogate, an overlong form: Python raised on each.
        for bad in [&b"a\xffb"[..], b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"] {
            assert_eq!(decode_utf8_strict(bad, false), None, "{bad:?}");
            assert_eq!(decode_utf8_strict(bad, true), None, "{bad:?}");
        }
        // A character cut in two at the end: invalid as it is, left out where our cap cut it.
        let cut = &"xé".as_bytes()[..2];
        assert_eq!(decode_utf8_strict(cut, false), None);
        assert_eq!(decode_utf8_strict(cut, true), Some("x"));
        let output = |raw: &[u8], end| CommandOutput {
            output: String::from_utf8_lossy(raw).into_owned(),
            raw: raw.to_vec(),
            end,
        };
        assert!(output(b"fine\r\n", EndReason::Prompt).is_utf8());
        assert!(!output(b"\x89PNG\r\n", EndReason::Prompt).is_utf8());
        assert!(!output(cut, EndReason::Silence).is_utf8());
        assert!(output(cut, EndReason::OutputCap).is_utf8());
    }

    #[test]
    fn prompt_detection_matches_agentbench_regex() {
        assert!(contains_prompt(
            b"3\r\n\x1b]0;root@708762f582f8: /\x07root@708762f582f8:/# \x1b[K"
        ));
        assert!(contains_prompt(b"\x1b]0;user@h: ~\x07user@h:~$ "));
        assert!(!contains_prompt(b"root@host:/# "), "needs an escape before");
        assert!(!contains_prompt(b"\x1b[0m@x\n# "), "same line only");
        assert!(
            !contains_prompt(b"\x1b]0;root@h: /\x07root@h:/#"),
            "needs the trailing space"
        );
    }

    #[test]
    fn cleaning_removes_escapes_and_prompt() {
        let raw = "\x1b[0m\x1b[01;34mdir\x1b[0m  file\r\n\x1b]0;root@abc: /\x07root@abc:/# \x1b[K";
        assert_eq!(clean_terminal_output(raw), "dir  file");
        assert_eq!(clean_terminal_output("\x1b]0;root@abc: /\x07root@abc:/# "), "");
    }

    #[test]
    fn shadow_is_sanitized() {
        assert_eq!(
            sanitize_shadow("root:$6$abc:19000:0:::\nbin:*:1::::\n"),
            "root:*:19000:0:::\nbin:*:1::::\n"
        );
    }
}
