//! The agent's persistent shell seen through a pty master we own, shared by every OS backend
//! (the namespace sandbox and the Docker/Podman containers): typing a command, collecting its
//! output as AgentBench did (until the prompt or `silence_timeout` without output), the
//! wall-clock limit and output cap with interruption, plus the pieces of running a task
//! script (its command line, collecting its output) that do not depend on where it runs.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::sys;
use super::{clean_terminal_output, contains_prompt, io_err, CommandOutput, EndReason, OsError, Result};
use super::{Script, ScriptLanguage};

/// The limits of one shell session, copied from the backend's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShellLimits {
    /// Longest time one command may keep the terminal busy before it is interrupted.
    pub wall_timeout: Duration,
    /// Silence that ends the collection of a command's output (AgentBench: 5 s).
    pub silence_timeout: Duration,
    /// Bytes of output kept per command; past it the command is interrupted.
    pub output_cap: usize,
    /// Raw terminal bytes (`true`) or the cleaned form.
    pub raw_terminal: bool,
}

/// What to do when ^C does not bring the prompt back.
#[derive(Debug, Clone)]
pub(crate) enum Stuck {
    /// Kill the pty's foreground process group (the shell runs directly on our pty).
    KillForegroundGroup,
    /// Run this command line on the host (the shell is behind a client such as `docker exec`
    /// whose own process is the only one on our pty, so the kill must happen inside).
    Command(Vec<String>),
}

/// A shell on the slave side of `master`.
pub(crate) struct PtyShell {
    pub(crate) master: OwnedFd,
    pub(crate) alive: bool,
    /// Process group of the process on our pty (the shell, or the client in front of it).
    pub(crate) shell_pgid: Option<libc::pid_t>,
    pub(crate) limits: ShellLimits,
    pub(crate) stuck: Stuck,
}

impl PtyShell {
    /// A shell not started yet (`master` is a placeholder until the backend sets it).
    pub(crate) fn new(master: OwnedFd, limits: ShellLimits, stuck: Stuck) -> Self {
        Self {
            master,
            alive: false,
            shell_pgid: None,
            limits,
            stuck,
        }
    }

    /// Marks the shell started: discards its greeting and first prompt (as AgentBench did)
    /// and records the process group of the pty's foreground process.
    pub(crate) fn started(&mut self) -> Result<()> {
        self.alive = true;
        let _ = self.collect(false)?;
        self.shell_pgid = sys::tcgetpgrp(self.master.as_raw_fd());
        Ok(())
    }

    /// Types `bash_code` + `\n` into the shell (one write, as the harness did) and collects the
    /// output until the prompt, `silence_timeout` without output, the wall-clock limit or the
    /// output cap. The echo of the input is dropped.
    pub(crate) fn run(&mut self, bash_code: &str) -> Result<CommandOutput> {
        if !self.alive {
            return Err(OsError::ShellExited);
        }
        // Output that arrived after the previous observation ended (a command that outlived
        // the silence rule) is shown first, but must not be taken for this command's echo
        // or prompt.
        let mut leftover = Vec::new();
        let mut buf = vec![0u8; 65536];
        while leftover.len() < self.limits.output_cap {
            match self.read_chunk(&mut buf, Duration::ZERO)? {
                Some(n) if n > 0 => leftover.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        let mut input = bash_code.as_bytes().to_vec();
        input.push(b'\n');
        sys::write_all(self.master.as_raw_fd(), &input, self.limits.wall_timeout)
            .map_err(io_err("write to the shell"))?;
        let mut out = self.collect(true)?;
        if !leftover.is_empty() {
            leftover.extend_from_slice(&out.raw);
            // One cap for the observation, leftover included (and saying so when it cut).
            if leftover.len() > self.limits.output_cap {
                leftover.truncate(self.limits.output_cap);
                out.end = EndReason::OutputCap;
            }
            out.raw = leftover;
            out.output = self.render(&out.raw);
        }
        Ok(out)
    }

    fn render(&self, raw: &[u8]) -> String {
        let text = String::from_utf8_lossy(raw).into_owned();
        if self.limits.raw_terminal {
            text
        } else {
            clean_terminal_output(&text)
        }
    }

    fn read_chunk(&mut self, buf: &mut [u8], wait: Duration) -> Result<Option<usize>> {
        let ms = wait.as_millis().min(i32::MAX as u128) as i32;
        let ev = sys::poll(self.master.as_raw_fd(), libc::POLLIN, ms).map_err(io_err("poll the shell"))?;
        if ev == 0 {
            return Ok(None);
        }
        match sys::read(self.master.as_raw_fd(), buf) {
            Ok(0) => Ok(Some(0)),
            Ok(n) => Ok(Some(n)),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(None),
            // EIO: every slave descriptor is closed, i.e. the shell and its children are gone.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(Some(0)),
            Err(e) => Err(io_err("read from the shell")(e)),
        }
    }

    /// Interrupts the foreground job (^C), then kills it if the prompt does not come back;
    /// discards what it prints meanwhile.
    ///
    /// The ^C is repeated (up to 3 times, 0.7 s apart): one can be lost when it lands just as
    /// a loop's child exits on its own, before the shell takes the terminal back (nobody is in
    /// the foreground group then, and `while :; do echo y; sleep 0.1; done` carries on; under
    /// load that window is wide). A ^C that reaches an idle prompt only prints a new prompt,
    /// which the final short drain swallows.
    fn interrupt(&mut self) -> Result<bool> {
        for _ in 0..3 {
            let _ = sys::write_all(self.master.as_raw_fd(), b"\x03", Duration::from_secs(1));
            if self.drain_until_prompt(Duration::from_millis(700))? {
                self.drain_quiet(Duration::from_millis(150))?;
                return Ok(true);
            }
        }
        match &self.stuck {
            Stuck::KillForegroundGroup => {
                if let (Some(fg), Some(shell)) = (sys::tcgetpgrp(self.master.as_raw_fd()), self.shell_pgid) {
                    if fg != shell {
                        let _ = sys::kill(-fg, libc::SIGKILL);
                    }
                }
            }
            Stuck::Command(argv) => {
                if let Some((prog, args)) = argv.split_first() {
                    // Bounded: a client that hangs must not hang the agent.
                    if let Ok(mut child) = std::process::Command::new(prog)
                        .args(args)
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                    {
                        let end = Instant::now() + Duration::from_secs(10);
                        while Instant::now() < end && matches!(child.try_wait(), Ok(None)) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                }
            }
        }
        self.drain_until_prompt(Duration::from_secs(2))
    }

    /// Discards output until the shell has been quiet for `quiet` (at most 1 s): a second
    /// prompt from a repeated ^C.
    fn drain_quiet(&mut self, quiet: Duration) -> Result<()> {
        let end = Instant::now() + Duration::from_secs(1);
        let mut buf = vec![0u8; 65536];
        while Instant::now() < end {
            match self.read_chunk(&mut buf, quiet)? {
                None => return Ok(()),
                Some(0) => {
                    self.alive = false;
                    return Ok(());
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn drain_until_prompt(&mut self, limit: Duration) -> Result<bool> {
        let end = Instant::now() + limit;
        let mut buf = vec![0u8; 65536];
        let mut tail: Vec<u8> = Vec::new();
        while Instant::now() < end {
            match self.read_chunk(&mut buf, end.saturating_duration_since(Instant::now()))? {
                Some(0) => {
                    self.alive = false;
                    return Ok(false);
                }
                Some(n) => {
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 4096 {
                        tail.drain(..tail.len() - 4096);
                    }
                    if contains_prompt(&tail) {
                        return Ok(true);
                    }
                }
                None => {}
            }
        }
        Ok(false)
    }

    pub(crate) fn collect(&mut self, drop_echo: bool) -> Result<CommandOutput> {
        let start = Instant::now();
        let mut raw: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 65536];
        let mut first = drop_echo;
        let mut echo: Vec<u8> = Vec::new();
        let mut held: Vec<u8>;
        let mut total = 0usize;
        let mut last_data = Instant::now();
        let end = loop {
            let left = self.limits.wall_timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                self.interrupt()?;
                break EndReason::WallTimeout;
            }
            let quiet_left = self.limits.silence_timeout.saturating_sub(last_data.elapsed());
            if quiet_left.is_zero() {
                // Background jobs may keep the terminal open after the shell died.
                if self.shell_pgid.is_some_and(|p| sys::kill(p, 0).is_err()) {
                    self.alive = false;
                    break EndReason::ShellExited;
                }
                break EndReason::Silence;
            }
            match self.read_chunk(&mut buf, left.min(quiet_left))? {
                None => continue,
                Some(0) => {
                    self.alive = false;
                    break EndReason::ShellExited;
                }
                Some(n) => {
                    last_data = Instant::now();
                    let mut chunk = &buf[..n];
                    if first {
                        // The harness dropped the first frame it read after sending, which held
                        // the echo of the typed line. Frames split differently here, so drop
                        // exactly the echo: everything up to the first "\r\n".
                        echo.extend_from_slice(chunk);
                        match echo.windows(2).position(|w| w == b"\r\n") {
                            Some(p) => {
                                first = false;
                                held = echo.split_off(p + 2);
                                chunk = &held;
                            }
                            None => continue,
                        }
                    }
                    total += chunk.len();
                    let room = self.limits.output_cap.saturating_sub(raw.len());
                    raw.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if total > self.limits.output_cap {
                        self.interrupt()?;
                        break EndReason::OutputCap;
                    }
                    let tail_from = raw.len().saturating_sub(chunk.len() + 256);
                    if contains_prompt(&raw[tail_from..]) {
                        break EndReason::Prompt;
                    }
                }
            }
        };
        let output = self.render(&raw);
        Ok(CommandOutput { output, raw, end })
    }
}

/// The command line and standard input of a task script, as AgentBench ran them: bash gets
/// `bash -c code -- args…`, python `python3 -c code args…`, C/C++ are compiled with gcc/g++
/// where they run and started with `args` (the source arrives on stdin).
pub(crate) fn script_command(script: &Script, args: &[&str]) -> (Vec<String>, Vec<u8>) {
    let mut argv: Vec<String> = Vec::new();
    let mut stdin: Vec<u8> = Vec::new();
    match script.language {
        ScriptLanguage::Bash => {
            argv.extend(["bash".into(), "-c".into(), script.code.clone()]);
            if !args.is_empty() {
                argv.push("--".into());
            }
        }
        ScriptLanguage::Python => argv.extend(["python3".into(), "-c".into(), script.code.clone()]),
        ScriptLanguage::C | ScriptLanguage::Cpp => {
            let (cc, ext) = if script.language == ScriptLanguage::C {
                ("gcc", "c")
            } else {
                ("g++", "cpp")
            };
            let build = format!(
                "d=$(mktemp -d) && cat > \"$d/main.{ext}\" && {cc} -o \"$d/main\" \"$d/main.{ext}\" && \"$d/main\" \"$@\""
            );
            argv.extend(["bash".into(), "-c".into(), build, "--".into()]);
            stdin = script.code.clone().into_bytes();
        }
    }
    argv.extend(args.iter().map(|s| s.to_string()));
    (argv, stdin)
}

/// Writes a script's stdin from a thread, so that a script that does not read it cannot block
/// the caller, giving up after `limit` (a stopped script, or a process of a container engine
/// that holds stdin open, never reads it).
pub(crate) fn spawn_stdin_feeder(stdin_w: OwnedFd, stdin: Vec<u8>, limit: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if sys::set_nonblocking(stdin_w.as_raw_fd()).is_ok() {
            let _ = sys::write_all(stdin_w.as_raw_fd(), &stdin, limit);
        }
    })
}

/// How a script's output collection ended.
pub(crate) struct Collected {
    /// stdout and stderr together, at most `cap` bytes.
    pub(crate) output: Vec<u8>,
    /// The raw wait status, when the script exited on its own.
    pub(crate) status: Option<i32>,
    /// The deadline passed (the caller kills the script).
    pub(crate) timed_out: bool,
    /// Collection stopped early (deadline or output cap): the caller must kill the script.
    pub(crate) stopped: bool,
}

/// Reads a script's combined output from the non-blocking pipe `out` until EOF, `deadline`, or
/// more than `cap` bytes; `exited` polls the script process (raw wait status once it has
/// exited), so that a background process holding the pipe open does not hold us.
pub(crate) fn collect_script_output(
    out: &OwnedFd,
    deadline: Instant,
    cap: usize,
    exited: &mut dyn FnMut() -> Result<Option<i32>>,
) -> Result<Collected> {
    let fd = out.as_raw_fd();
    sys::set_nonblocking(fd).map_err(io_err("make the script's output non-blocking"))?;
    let mut output = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut status = None;
    let mut timed_out = false;
    let mut stopped = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || output.len() > cap {
            timed_out = left.is_zero();
            stopped = true;
            break;
        }
        let ev = sys::poll(fd, libc::POLLIN, left.as_millis().min(100) as i32).map_err(io_err("poll"))?;
        if ev == 0 {
            if let Some(st) = exited()? {
                status = Some(st);
                while let Ok(n) = sys::read(fd, &mut buf) {
                    if n == 0 || output.len() > cap {
                        break;
                    }
                    output.extend_from_slice(&buf[..n]);
                }
                break;
            }
            continue;
        }
        match sys::read(fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => output.extend_from_slice(&buf[..n]),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
            Err(e) => return Err(io_err("read script output")(e)),
        }
    }
    output.truncate(cap);
    Ok(Collected {
        output,
        status,
        timed_out,
        stopped,
    })
}
