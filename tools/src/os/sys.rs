//! The only `unsafe` of the sandbox: raw Linux calls (fork, unshare, setns, mount, pivot_root,
//! pty set-up) behind small safe functions.
//!
//! Code that runs in a forked child of a possibly multi-threaded process may only make
//! async-signal-safe calls until it execs or exits: no allocation, no locks. So everything the
//! child needs (paths, mount options, argv, file contents) is prepared by the parent as a
//! [`Plan`] of `CString`s and byte buffers, and the child only walks it making syscalls. A
//! failing step is reported to the parent as `(step index, errno)` over a pipe.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One set-up step executed by the sandbox's init before it starts anything.
#[derive(Debug)]
pub enum Op {
    /// `mount(2)`.
    Mount {
        src: CString,
        dst: CString,
        fstype: CString,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// `mkdir(2)`; an existing directory is fine.
    Mkdir { path: CString, mode: libc::mode_t },
    /// Create (or truncate) a file with this content and mode.
    WriteFile {
        path: CString,
        content: Vec<u8>,
        mode: libc::mode_t,
    },
    /// `symlink(2)`; an existing path is fine.
    Symlink { target: CString, link: CString },
    /// Like `Mount`, but skipped silently when `probe` does not exist (optional masks).
    MountIfExists {
        probe: CString,
        src: CString,
        dst: CString,
        fstype: CString,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// `chdir(path); pivot_root(".", "."); umount2(".", MNT_DETACH); chdir("/")`.
    PivotRoot { path: CString },
    /// `sethostname(2)`.
    Hostname { name: CString },
    /// A detached clone of the mount at `src` whose file owners are shifted by the id map of
    /// the user namespace `userns` (an idmapped mount, `mount_setattr(MOUNT_ATTR_IDMAP)`),
    /// attached at `dst`: host uid 0 appears as the sandbox's root.
    IdmappedBind { src: CString, dst: CString, userns: RawFd },
    /// `lchown(2)`.
    Chown {
        path: CString,
        uid: libc::uid_t,
        gid: libc::gid_t,
    },
    /// When `path` exists: bind it onto itself and remount the bind read-only (runc's
    /// "readonly paths" such as `/proc/sys`).
    ReadOnlyIfExists { path: CString },
    /// Makes the mount at `path` and every mount below it read-only and `nodev`
    /// (`mount_setattr(AT_RECURSIVE)`): a recursive bind of the host's `/` brings the host's
    /// submounts (other disks, `/sys`, cgroup trees) with their own, writable, flags.
    ReadOnlyTree { path: CString },
}

/// Everything the forked processes need, prepared before `fork`.
#[derive(Debug)]
pub struct Plan {
    /// Namespaces to create (`CLONE_NEW*`), user namespace excluded.
    pub ns_flags: libc::c_int,
    /// Create a user namespace before the others (unprivileged host user).
    pub userns_early: bool,
    /// Host root: the sandbox's user namespace (made by [`new_user_namespace`], root inside
    /// mapped to an unprivileged host range). The shell joins it after set-up and becomes
    /// its root, so it holds no host capability and no host uid 0.
    pub userns: Option<OwnedFd>,
    /// Set-up steps run by the namespace's init (PID 1).
    pub ops: Vec<Op>,
    /// The sandbox's root directory (the merged overlay, or the read-only bind): the ops' paths
    /// below it are resolved from it with links kept inside (`InRoot`).
    pub root: CString,
    /// `cgroup.procs` files to join (opened by the parent; the child writes "0").
    pub cgroup_procs: Vec<OwnedFd>,
    /// The shell to exec, with its pty slave.
    pub shell: Exec,
    /// What PID 1 becomes once the shell is started: a fresh `bash` that reads
    /// `init_script` from a pipe, so it holds none of edgeact's memory, environment or
    /// descriptors.
    pub init: Exec,
    /// The reaper loop PID 1 runs (bash builtins only).
    pub init_script: Vec<u8>,
    /// Limits applied to the shell and to scripts.
    pub rlimits: Vec<(libc::__rlimit_resource_t, libc::rlim_t)>,
}

/// A program to exec: path, argv, envp (NULL-terminated pointer arrays are built by the
/// parent, pointing into the `CString`s kept here).
#[derive(Debug)]
pub struct Exec {
    _strings: Vec<CString>,
    path: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

// SAFETY: the raw pointers point into `_strings`/`path`, owned by the same struct and never
// mutated; moving the struct moves no heap data.
unsafe impl Send for Exec {}

impl Exec {
    /// Builds an exec description; fails on interior NUL bytes.
    pub fn new(path: &str, args: &[&str], env: &[(&str, &str)]) -> io::Result<Self> {
        let cs =
            |s: &str| CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argument"));
        let path = cs(path)?;
        let mut strings = Vec::new();
        for a in args {
            strings.push(cs(a)?);
        }
        let nargs = strings.len();
        for (k, v) in env {
            strings.push(cs(&format!("{k}={v}"))?);
        }
        let mut argv: Vec<*const libc::c_char> = strings[..nargs].iter().map(|s| s.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = strings[nargs..].iter().map(|s| s.as_ptr()).collect();
        envp.push(std::ptr::null());
        Ok(Self {
            _strings: strings,
            path,
            argv,
            envp,
        })
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Closes `fd` leaving errno as it was: it names the failure a set-up step reports.
fn close_keeping_errno(fd: RawFd) {
    let e = errno();
    // SAFETY: the caller's own descriptor, closed once; errno is thread-local.
    unsafe {
        libc::close(fd);
        *libc::__errno_location() = e;
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A pipe with both ends close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid 2-int buffer.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Opens a new pty pair: (master, slave), both close-on-exec; the master is non-blocking.
pub fn openpty() -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: plain syscalls on descriptors we own; ptsname_r gets a valid buffer.
    unsafe {
        let m = cvt(libc::posix_openpt(
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NONBLOCK,
        ))?;
        let master = OwnedFd::from_raw_fd(m);
        cvt(libc::grantpt(m))?;
        cvt(libc::unlockpt(m))?;
        let mut buf = [0 as libc::c_char; 128];
        let r = libc::ptsname_r(m, buf.as_mut_ptr(), buf.len());
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        let s = cvt(libc::open(
            buf.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ))?;
        let slave = OwnedFd::from_raw_fd(s);
        // A wide terminal so that programs do not wrap lines; docker's default exec pty is 80x24
        // but wrapping only matters for full-screen programs.
        let ws = libc::winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        libc::ioctl(s, libc::TIOCSWINSZ, &ws);
        Ok((master, slave))
    }
}

/// Reads up to `buf.len()` bytes; `Ok(0)` at EOF.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Makes `fd` non-blocking (for [`write_all`]'s timeout to apply).
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes all of `data` (retrying on partial writes and EAGAIN) within `timeout` (a
/// non-blocking `fd`: a blocking one waits in `write` for as long as it takes).
pub fn write_all(fd: RawFd, mut data: &[u8], timeout: std::time::Duration) -> io::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    while !data.is_empty() {
        // SAFETY: `data` is valid for `data.len()` bytes.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => {
                    if std::time::Instant::now() > deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "terminal input is not being read",
                        ));
                    }
                    poll(fd, libc::POLLOUT, 50)?;
                }
                _ => return Err(e),
            }
        } else {
            data = &data[n as usize..];
        }
    }
    Ok(())
}

/// Waits up to `ms` milliseconds for `events` on `fd`; returns the revents (0 on timeout).
pub fn poll(fd: RawFd, events: libc::c_short, ms: i32) -> io::Result<libc::c_short> {
    let mut p = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(if r == 0 { 0 } else { p.revents })
}

/// The foreground process group of the terminal, as a pid of the caller's namespace.
pub fn tcgetpgrp(fd: RawFd) -> Option<libc::pid_t> {
    // SAFETY: plain ioctl wrapper on a descriptor we own.
    let p = unsafe { libc::tcgetpgrp(fd) };
    (p > 0).then_some(p)
}

/// Sends `sig` to a process (`pid > 0`) or a process group (`pid < 0`).
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory effects.
    cvt(unsafe { libc::kill(pid, sig) }).map(|_| ())
}

/// Blocking `waitpid`; returns the raw status.
pub fn waitpid(pid: libc::pid_t, nohang: bool) -> io::Result<Option<i32>> {
    let mut st = 0;
    loop {
        // SAFETY: `st` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut st, if nohang { libc::WNOHANG } else { 0 }) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        return Ok(if r == 0 { None } else { Some(st) });
    }
}

/// Exit code of a raw wait status, shell style (128 + signal for a killed process).
pub fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        -1
    }
}

/// A new user namespace, owned by the caller's user, with id maps written by `write_maps`
/// (given the host pid of a process inside it). Made by a short-lived child; the returned
/// descriptor keeps the namespace alive for idmapped mounts and for `setns`.
pub fn new_user_namespace(write_maps: impl FnOnce(libc::pid_t) -> io::Result<()>) -> io::Result<OwnedFd> {
    let (ready_r, ready_w) = pipe()?;
    let (done_r, done_w) = pipe()?;
    // SAFETY: the child only makes async-signal-safe syscalls and ends in `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            let (ready, done) = (ready_w.as_raw_fd(), done_r.as_raw_fd());
            let mut keep = [ready, done];
            keep.sort_unstable();
            close_fds_except(&keep);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let tag: &[u8] = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                b"u"
            } else {
                b"e"
            };
            write_all_raw(ready, tag);
            // Stay in the namespace until the parent has its descriptor (EOF).
            let mut b = [0u8; 1];
            libc::read(done, b.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    drop((ready_w, done_r));
    let result = (|| {
        let mut tag = [0u8; 1];
        let n = read(ready_r.as_raw_fd(), &mut tag)?;
        if n != 1 || tag[0] != b'u' {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "unshare(CLONE_NEWUSER) was refused",
            ));
        }
        write_maps(pid)?;
        let f = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok(OwnedFd::from(f))
    })();
    drop(done_w);
    let _ = waitpid(pid, false);
    result
}

// ---- code below runs in forked children: syscalls only, no allocation ----

/// Reports `(step, errno)` to the parent and exits.
fn child_fail(report: RawFd, step: u32) -> ! {
    let e = errno() as u32;
    let mut msg = [0u8; 9];
    msg[0] = b'E';
    msg[1..5].copy_from_slice(&step.to_le_bytes());
    msg[5..].copy_from_slice(&e.to_le_bytes());
    // SAFETY: async-signal-safe write of a stack buffer, then _exit.
    unsafe {
        libc::write(report, msg.as_ptr().cast(), msg.len());
        libc::_exit(111)
    }
}

/// Closes every descriptor ≥ 3 except those in `keep` (sorted ascending).
fn close_fds_except(keep: &[RawFd]) {
    let mut from: u32 = 3;
    for &k in keep {
        let k = k as u32;
        if k >= from {
            if k > from {
                // SAFETY: close_range only closes descriptors.
                unsafe { libc::syscall(libc::SYS_close_range, from, k - 1, 0) };
            }
            from = k + 1;
        }
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0) };
}

fn apply_rlimits(limits: &[(libc::__rlimit_resource_t, libc::rlim_t)]) -> bool {
    for &(res, v) in limits {
        // CPU: a hard limit one second above the soft one, so the process first gets SIGXCPU
        // (exit status 152) rather than an unexplained SIGKILL.
        let hard = if res == libc::RLIMIT_CPU {
            v.saturating_add(1)
        } else {
            v
        };
        let r = libc::rlimit {
            rlim_cur: v,
            rlim_max: hard,
        };
        // SAFETY: valid rlimit struct.
        if unsafe { libc::setrlimit(res, &r) } != 0 {
            return false;
        }
    }
    true
}

/// A report-pipe message: a tag byte and a pid, to be written in one `write`.
fn tagged_pid(tag: u8, pid: libc::pid_t) -> [u8; 5] {
    let mut msg = [tag, 0, 0, 0, 0];
    msg[1..].copy_from_slice(&pid.to_le_bytes());
    msg
}

fn write_all_raw(fd: RawFd, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        // SAFETY: data is a valid slice.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n <= 0 {
            return false;
        }
        data = &data[n as usize..];
    }
    true
}

fn join_cgroups(fds: &[OwnedFd]) {
    for fd in fds {
        // Best effort: a cgroup that refuses us leaves only that limit unenforced.
        write_all_raw(fd.as_raw_fd(), b"0");
    }
}

/// `mount(2)` with the plan's C strings; true on success.
fn mount(src: &CStr, dst: &CStr, fstype: &CStr, flags: libc::c_ulong, data: Option<&CString>) -> bool {
    // SAFETY: every pointer comes from a live CString of the plan (or is null for no data).
    unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        ) == 0
    }
}

fn run_op(op: &Op, in_root: &InRoot) -> bool {
    // SAFETY: every pointer comes from a live CString or slice of the plan, or from a stack
    // buffer that outlives the call using it.
    unsafe {
        match op {
            Op::Mount {
                src,
                dst,
                fstype,
                flags,
                data,
            } => in_root.at(dst, libc::O_PATH, |at| mount(src, at, fstype, *flags, data.as_ref())),
            Op::MountIfExists {
                probe,
                src,
                dst,
                fstype,
                flags,
                data,
            } => {
                // A missing optional path is not an error: nothing to mask there.
                !in_root.exists(probe)
                    || in_root.at(dst, libc::O_PATH, |at| mount(src, at, fstype, *flags, data.as_ref()))
            }
            Op::ReadOnlyIfExists { path } => {
                if !in_root.exists(path) {
                    return true;
                }
                let none = c"none";
                // The remount names the bind just made, so the path is resolved again for it.
                in_root.at(path, libc::O_PATH, |at| {
                    libc::mount(
                        at.as_ptr(),
                        at.as_ptr(),
                        none.as_ptr(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ) == 0
                }) && in_root.at(path, libc::O_PATH, |at| {
                    libc::mount(
                        none.as_ptr(),
                        at.as_ptr(),
                        none.as_ptr(),
                        libc::MS_REMOUNT
                            | libc::MS_BIND
                            | libc::MS_RDONLY
                            | libc::MS_NOSUID
                            | libc::MS_NODEV
                            | libc::MS_NOEXEC,
                        std::ptr::null(),
                    ) == 0
                })
            }
            Op::ReadOnlyTree { path } => {
                let attr = MountAttr {
                    attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV,
                    attr_clr: 0,
                    propagation: 0,
                    userns_fd: 0,
                };
                libc::syscall(
                    libc::SYS_mount_setattr,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    AT_RECURSIVE,
                    &attr as *const MountAttr,
                    std::mem::size_of::<MountAttr>(),
                ) == 0
            }
            // As lchown: the last component is not followed.
            Op::Chown { path, uid, gid } => {
                let fd = in_root.open(path, libc::O_PATH | libc::O_NOFOLLOW, 0);
                if fd < 0 {
                    return false;
                }
                let ok = libc::fchownat(fd, c"".as_ptr(), *uid, *gid, libc::AT_EMPTY_PATH) == 0;
                close_keeping_errno(fd);
                ok
            }
            Op::IdmappedBind { src, dst, userns } => idmapped_bind(src, dst, *userns),
            Op::Mkdir { path, mode } => in_root.in_parent(path, |dir, name| {
                libc::mkdirat(dir, name.as_ptr(), *mode) == 0 || errno() == libc::EEXIST
            }),
            Op::Symlink { target, link } => in_root.in_parent(link, |dir, name| {
                libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) == 0 || errno() == libc::EEXIST
            }),
            Op::WriteFile { path, content, mode } => {
                let fd = in_root.open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, *mode);
                if fd < 0 {
                    return false;
                }
                let ok = write_all_raw(fd, content);
                libc::close(fd);
                ok
            }
            Op::PivotRoot { path } => {
                let dot = c".".as_ptr();
                libc::chdir(path.as_ptr()) == 0
                    && libc::syscall(libc::SYS_pivot_root, dot, dot) == 0
                    && libc::umount2(dot, libc::MNT_DETACH) == 0
                    && libc::chdir(c"/".as_ptr()) == 0
            }
            Op::Hostname { name } => libc::sethostname(name.as_ptr(), name.as_bytes().len()) == 0,
        }
    }
}

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// Resolves the set-up's paths below the sandbox's root from the root directory, with every
/// link kept inside it (`openat2(RESOLVE_IN_ROOT)`, as if the root were `/` already): a
/// `--rootfs DIR` whose `etc` is a link to `/home/user` would otherwise have the set-up write
/// `/etc/hosts` into the host's `/home/user`, and under `--rootfs host` a secret behind an
/// absolute link would be masked on the host's path rather than on the one the sandbox sees.
/// Mounts go onto the resolved directory through its `/proc/self/fd` link. Paths outside the
/// root (edgeact's stage directory) are used as they are, and so is every path on kernels
/// without `openat2` (before Linux 5.6: ENOSYS).
///
/// Runs in the forked child: no allocation (stack buffers only).
struct InRoot<'a> {
    root: &'a CString,
}

/// Longest set-up path handled below the root (`PATH_MAX`).
const PATH_BYTES: usize = 4096;

impl InRoot<'_> {
    /// `path`'s part below the root (`etc/hosts` of `ROOT/etc/hosts`), or `None` for a path
    /// outside it or the root itself.
    fn below<'p>(&self, path: &'p CString) -> Option<&'p CStr> {
        let (p, r) = (path.as_bytes_with_nul(), self.root.as_bytes());
        let inside = p.len() > r.len() + 2 && p.starts_with(r) && p[r.len()] == b'/';
        inside
            .then(|| CStr::from_bytes_with_nul(&p[r.len() + 1..]).ok())
            .flatten()
    }

    /// `openat2` of `rel` from the root with links inside it; -1 (errno set) on failure. The
    /// root is opened anew each time: set-up steps mount the overlay and the read-only bind
    /// onto the root path itself, so a descriptor taken earlier would name what lies beneath.
    fn open_below(&self, rel: &CStr, flags: libc::c_int, mode: libc::mode_t) -> RawFd {
        // SAFETY: plain syscalls on live C strings and a stack struct.
        unsafe {
            let root = libc::open(self.root.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC);
            if root < 0 {
                return -1;
            }
            let how = OpenHow {
                flags: (flags | libc::O_CLOEXEC) as u64,
                mode: if flags & libc::O_CREAT != 0 { mode as u64 } else { 0 },
                resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
            };
            let fd = libc::syscall(
                libc::SYS_openat2,
                root,
                rel.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            );
            close_keeping_errno(root);
            fd as RawFd
        }
    }

    /// Opens `path` (`open(2)` flags), below the root with links kept inside it.
    fn open(&self, path: &CString, flags: libc::c_int, mode: libc::mode_t) -> RawFd {
        if let Some(rel) = self.below(path) {
            let fd = self.open_below(rel, flags, mode);
            if fd >= 0 || errno() != libc::ENOSYS {
                return fd;
            }
        }
        // SAFETY: a live C string.
        unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) }
    }

    /// Whether `path` exists (below the root: as resolved there; the last component is not
    /// followed, as `lstat`).
    fn exists(&self, path: &CString) -> bool {
        let fd = self.open(path, libc::O_PATH | libc::O_NOFOLLOW, 0);
        if fd < 0 {
            return false;
        }
        // SAFETY: our descriptor.
        unsafe { libc::close(fd) };
        true
    }

    /// Runs `f` with a path naming what `path` resolves to: `/proc/self/fd/N` of a descriptor
    /// opened with `flags` below the root, else `path` itself.
    fn at(&self, path: &CString, flags: libc::c_int, f: impl FnOnce(&CStr) -> bool) -> bool {
        let Some(rel) = self.below(path) else { return f(path) };
        let fd = self.open_below(rel, flags, 0);
        if fd < 0 {
            return errno() == libc::ENOSYS && f(path);
        }
        let mut buf = [0u8; 32];
        let ok = f(fd_path(fd, &mut buf));
        close_keeping_errno(fd);
        ok
    }

    /// Runs `f` with a directory descriptor of `path`'s parent and its last component: the
    /// parent resolved below the root, or `AT_FDCWD` and the whole path.
    fn in_parent(&self, path: &CString, f: impl FnOnce(RawFd, &CStr) -> bool) -> bool {
        let Some(rel) = self.below(path) else {
            return f(libc::AT_FDCWD, path);
        };
        let bytes = rel.to_bytes();
        // "etc/hosts" -> parent "etc" (copied: it needs a NUL of its own), name "hosts" (the
        // tail of the path as it is); "root" -> parent ".", name "root".
        let (dir, name) = match bytes.iter().rposition(|&b| b == b'/') {
            Some(i) => (&bytes[..i], &rel.to_bytes_with_nul()[i + 1..]),
            None => (&b"."[..], rel.to_bytes_with_nul()),
        };
        if dir.len() >= PATH_BYTES {
            // SAFETY: errno is thread-local.
            unsafe { *libc::__errno_location() = libc::ENAMETOOLONG };
            return false;
        }
        let mut parent = [0u8; PATH_BYTES];
        parent[..dir.len()].copy_from_slice(dir);
        let (Ok(dir), Ok(name)) = (CStr::from_bytes_until_nul(&parent), CStr::from_bytes_with_nul(name)) else {
            return false;
        };
        let fd = self.open_below(dir, libc::O_PATH | libc::O_DIRECTORY, 0);
        if fd < 0 {
            return errno() == libc::ENOSYS && f(libc::AT_FDCWD, path);
        }
        let ok = f(fd, name);
        close_keeping_errno(fd);
        ok
    }
}

/// `/proc/self/fd/N` for descriptor `fd`, written into `buf`.
fn fd_path(fd: RawFd, buf: &mut [u8; 32]) -> &CStr {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let (mut n, mut len) = (fd.max(0) as u32, 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    buf[PREFIX.len() + len] = 0;
    // SAFETY: the bytes up to and including the NUL just written hold no other NUL.
    unsafe { CStr::from_bytes_with_nul_unchecked(&buf[..=PREFIX.len() + len]) }
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const AT_RECURSIVE: libc::c_int = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `open_tree(OPEN_TREE_CLONE)` + `mount_setattr(MOUNT_ATTR_IDMAP)` + `move_mount`: the
/// single mount at `src` (no submounts, as overlayfs sees a lower layer) attached at `dst`
/// with owners shifted by `userns`'s id map.
fn idmapped_bind(src: &CString, dst: &CString, userns: RawFd) -> bool {
    // SAFETY: raw syscalls with pointers to live CStrings and a stack struct.
    unsafe {
        let tree = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        );
        if tree < 0 {
            return false;
        }
        let tree = tree as RawFd;
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns as u64,
        };
        let ok = libc::syscall(
            libc::SYS_mount_setattr,
            tree,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ) == 0
            && libc::syscall(
                libc::SYS_move_mount,
                tree,
                c"".as_ptr(),
                libc::AT_FDCWD,
                dst.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            ) == 0;
        close_keeping_errno(tree);
        ok
    }
}

/// Signal state a fresh program expects: nothing blocked, every disposition at its default.
/// An ignored disposition survives `execve`: Rust ignores SIGPIPE, and a host that started
/// edgeact with SIGINT ignored (a background job of a non-interactive shell, `nohup`-style
/// wrappers) would otherwise hand that to the sandbox, where a timeout's ^C then cannot stop
/// `while :; do sleep 0.1; done`.
pub(crate) fn reset_signals() {
    // SAFETY: plain async-signal-safe syscalls on a stack sigset; `signal` fails harmlessly
    // (EINVAL) for SIGKILL, SIGSTOP and the numbers libc reserves.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..=64 {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Becomes root of the user namespace just joined (`setns`): the process's host uid 0 is not
/// mapped there, so it takes the namespace's uid/gid 0 (an unprivileged host id).
fn become_namespace_root() -> bool {
    // SAFETY: plain syscalls. setgroups fails where the namespace denies it (unprivileged
    // mode, which has one mapped group only): harmless there.
    unsafe {
        libc::setgroups(0, std::ptr::null());
        libc::setresgid(0, 0, 0) == 0 && libc::setresuid(0, 0, 0) == 0
    }
}

/// Gives the process a new, empty session keyring: the one inherited from edgeact may hold
/// keys (Kerberos tickets, say) that its possessor can read and clear whatever its ids, and no
/// namespace or id change replaces it. `ENOSYS` (no keyrings) and `EPERM` (keyctl blocked by a
/// seccomp filter, which then binds the sandbox too) leave nothing to reach: success.
fn leave_session_keyring() -> bool {
    // SAFETY: a raw syscall with a null name (an anonymous keyring).
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            libc::KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    r >= 0 || matches!(errno(), libc::ENOSYS | libc::EPERM)
}

/// Step numbers reported for failures outside `plan.ops`.
pub const STEP_UNSHARE: u32 = 1_000_000;
/// Failure while creating the user namespace or waiting for its id maps.
pub const STEP_USERNS: u32 = 1_000_001;
/// Failure while forking.
pub const STEP_FORK: u32 = 1_000_002;
/// Failure while preparing the shell (setsid, controlling tty, limits, exec).
pub const STEP_SHELL: u32 = 1_000_003;
/// Failure while locking the set-up's mounts (unprivileged mode, [`lock_mounts`]).
pub const STEP_LOCK_MOUNTS: u32 = 1_000_004;

/// Pipes and descriptors shared by the parent and the sandbox's first processes.
pub struct StartFds {
    /// Child → parent messages: `I` + host pid (LE u32) of the init; `M` + host pid (0: the
    /// init) of a process whose new user namespace waits for its id maps; `E` + step + errno
    /// (LE u32 each) on failure; `R` once the shell is started.
    pub report_w: RawFd,
    /// Parent → child: one byte after the id maps are written.
    pub go_r: RawFd,
    /// The pty slave for the shell.
    pub slave: RawFd,
}

/// Forks the sandbox: the returned pid is the intermediate process whose only child is the
/// namespace's init; the init's host pid is the first message on the report pipe.
pub fn spawn_sandbox(plan: &Plan, fds: &StartFds) -> io::Result<libc::pid_t> {
    // SAFETY: the child branch only makes async-signal-safe calls on pre-built data (see the
    // module doc) and always ends in `_exit` or `execve`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        return Ok(pid);
    }
    // Intermediate process (host pid namespace).
    // SAFETY: see above; all calls are raw syscalls on plan data.
    unsafe {
        // A session of its own, so that no process of the sandbox (PID 1 above all, which root
        // inside may ptrace) has edgeact's controlling terminal: with it, TIOCSTI typed
        // commands into the user's shell outside.
        libc::setsid();
        let mut keep = [fds.report_w, fds.go_r, fds.slave];
        keep.sort_unstable();
        // The cgroup fds must survive too.
        let mut keep_all = [0 as RawFd; 16];
        let mut n = 0;
        for k in keep
            .iter()
            .copied()
            .chain(plan.cgroup_procs.iter().map(|f| f.as_raw_fd()))
            .chain(plan.userns.iter().map(|f| f.as_raw_fd()))
        {
            if n < keep_all.len() {
                keep_all[n] = k;
                n += 1;
            }
        }
        keep_all[..n].sort_unstable();
        close_fds_except(&keep_all[..n]);
        // Die with the parent thread: the whole namespace follows (see OsSandbox docs).
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        join_cgroups(&plan.cgroup_procs);
        if plan.userns_early {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                child_fail(fds.report_w, STEP_USERNS);
            }
            // Our own pid here is the host pid: tell the parent to write the id maps.
            let me = libc::getpid();
            if !write_all_raw(fds.report_w, &tagged_pid(b'M', me)) {
                libc::_exit(112);
            }
            let mut b = [0u8; 1];
            if libc::read(fds.go_r, b.as_mut_ptr().cast(), 1) != 1 {
                child_fail(fds.report_w, STEP_USERNS);
            }
        }
        if libc::unshare(plan.ns_flags) != 0 {
            child_fail(fds.report_w, STEP_UNSHARE);
        }
        let init = libc::fork();
        if init < 0 {
            child_fail(fds.report_w, STEP_FORK);
        }
        if init > 0 {
            // One write: the init reports on the same pipe (`R`, `E`), and a message split
            // over two writes could take its bytes in between (a pipe write of at most
            // PIPE_BUF bytes is atomic).
            if !write_all_raw(fds.report_w, &tagged_pid(b'I', init)) {
                libc::kill(init, libc::SIGKILL);
            }
            // Keep no end of the pty or the pipes: the parent detects the shell's end by EOF.
            libc::close(fds.slave);
            libc::close(fds.report_w);
            libc::close(fds.go_r);
            let mut st = 0;
            while libc::waitpid(init, &mut st, 0) < 0 && errno() == libc::EINTR {}
            libc::_exit(0);
        }
        sandbox_init(plan, fds)
    }
}

/// PID 1 of the sandbox: set up the file system, start the shell, then reap forever.
fn sandbox_init(plan: &Plan, fds: &StartFds) -> ! {
    // SAFETY: raw syscalls on plan data only (see module doc).
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let in_root = InRoot { root: &plan.root };
        for (i, op) in plan.ops.iter().enumerate() {
            if !run_op(op, &in_root) {
                child_fail(fds.report_w, i as u32);
            }
        }
        if plan.userns_early && !lock_mounts() {
            child_fail(fds.report_w, STEP_LOCK_MOUNTS);
        }
        let shell = libc::fork();
        if shell < 0 {
            child_fail(fds.report_w, STEP_FORK);
        }
        if shell == 0 {
            exec_in_terminal(plan, fds);
        }
        write_all_raw(fds.report_w, b"R");
        become_minimal_init(plan)
    }
}

/// Unprivileged mode: the mounts of the set-up were made in a mount namespace owned by the
/// sandbox's own user namespace, whose root (the shell) could unmount them (`umount /home`
/// shows the host's homes under `--rootfs host`'s mask) or remount them read-write. The init
/// moves into a nested user namespace (root mapped to root) with a new mount namespace: copied
/// into a mount namespace of a less privileged user namespace, every mount is locked by the
/// kernel, as a whole tree, with its read-only and `nosuid`/`nodev`/`noexec` flags
/// (`mount_namespaces(7)`, "Restrictions on mount namespaces"). The shell, PID 1 and the
/// scripts (which join the init's namespaces) live there. Host root mode needs none of this:
/// its mounts belong to the host's user namespace, where root inside holds no capability.
fn lock_mounts() -> bool {
    // SAFETY: raw syscalls on static paths and stack buffers.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
            return false;
        }
        // One id each way, root to root: the only map a process may write for itself (the
        // outer namespace maps one id too). `setgroups` must be denied before the gid map.
        write_proc_self(c"/proc/self/setgroups", b"deny");
        write_proc_self(c"/proc/self/uid_map", b"0 0 1\n") && write_proc_self(c"/proc/self/gid_map", b"0 0 1\n")
    }
}

/// Writes `data` to a `/proc/self` file in one `write`, as id maps must be written.
fn write_proc_self(path: &std::ffi::CStr, data: &[u8]) -> bool {
    // SAFETY: open/write/close on a static path and a borrowed buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let ok = libc::write(fd, data.as_ptr().cast(), data.len()) == data.len() as isize;
        libc::close(fd);
        ok
    }
}

/// PID 1 after set-up: drops everything it inherited from edgeact (descriptors, memory,
/// environment, host privilege, signal state) and execs a fresh `bash` reading the reaper loop from a pipe, so
/// `ps` inside shows `bash` as PID 1, as AgentBench's containers did. Bash reaps every child,
/// orphans included (see `INIT_SCRIPT` in the module above).
fn become_minimal_init(plan: &Plan) -> ! {
    // SAFETY: raw syscalls on plan data only (see module doc).
    unsafe {
        reset_signals();
        if let Some(userns) = &plan.userns {
            // Host root becomes the sandbox's root, like the shell: no host privilege, and
            // `/proc/1` is as readable to the shell as a container's PID 1 is to root in it
            // (`find /` meets no "Permission denied"). After the exec it holds nothing of
            // edgeact worth reading.
            if libc::setns(userns.as_raw_fd(), libc::CLONE_NEWUSER) != 0 || !become_namespace_root() {
                libc::_exit(113);
            }
        }
        if !leave_session_keyring() {
            libc::_exit(113);
        }
        // Script pipe: fd 0 is its read end, fd 3 its write end, held open so that the loop's
        // `read` blocks instead of seeing EOF; fds 1 and 2 are /dev/null. Everything is first
        // copied above 9 so that the dup2s below cannot clobber each other.
        let mut p = [0; 2];
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null < 0 || libc::pipe(p.as_mut_ptr()) != 0 {
            libc::_exit(114);
        }
        let r = libc::fcntl(p[0], libc::F_DUPFD, 10);
        let w = libc::fcntl(p[1], libc::F_DUPFD, 10);
        let n = libc::fcntl(null, libc::F_DUPFD, 10);
        if r < 0
            || w < 0
            || n < 0
            || !write_all_raw(w, &plan.init_script)
            || libc::dup2(r, 0) < 0
            || libc::dup2(n, 1) < 0
            || libc::dup2(n, 2) < 0
            || libc::dup2(w, 3) < 0
        {
            libc::_exit(114);
        }
        close_fds_except(&[3]);
        // A credential change clears the parent-death signal: set it again.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        libc::execve(
            plan.init.path.as_ptr(),
            plan.init.argv.as_ptr(),
            plan.init.envp.as_ptr(),
        );
        // Fail closed: PID 1 never goes on as a copy of edgeact. Its exit ends the namespace.
        libc::_exit(115)
    }
}

fn exec_in_terminal(plan: &Plan, fds: &StartFds) -> ! {
    // SAFETY: raw syscalls; argv/envp are NULL-terminated arrays of live CStrings.
    unsafe {
        if libc::setsid() < 0 || libc::ioctl(fds.slave, libc::TIOCSCTTY, 0) < 0 {
            child_fail(fds.report_w, STEP_SHELL);
        }
        if let Some(userns) = &plan.userns {
            if libc::setns(userns.as_raw_fd(), libc::CLONE_NEWUSER) != 0 || !become_namespace_root() {
                child_fail(fds.report_w, STEP_USERNS);
            }
        }
        if !leave_session_keyring() {
            child_fail(fds.report_w, STEP_USERNS);
        }
        // Set after the credential change, which clears it.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        reset_signals();
        for t in 0..3 {
            if libc::dup2(fds.slave, t) < 0 {
                child_fail(fds.report_w, STEP_SHELL);
            }
        }
        if !apply_rlimits(&plan.rlimits) {
            child_fail(fds.report_w, STEP_SHELL);
        }
        let report = fds.report_w;
        close_fds_except(&[report]);
        // report_w is close-on-exec: it closes by itself when execve succeeds.
        libc::execve(
            plan.shell.path.as_ptr(),
            plan.shell.argv.as_ptr(),
            plan.shell.envp.as_ptr(),
        );
        child_fail(report, STEP_SHELL)
    }
}

/// Namespaces of a running sandbox, opened by the parent for [`spawn_in_sandbox`].
#[derive(Debug)]
pub struct NsFds {
    /// In join order: (unprivileged mode: the outer user namespace), ipc, uts, net, pid, mnt,
    /// then the user namespace the script becomes root of.
    pub fds: Vec<(OwnedFd, libc::c_int)>,
}

impl NsFds {
    /// Opens `/proc/<pid>/ns/*` of the sandbox's init (ipc, uts, net, pid, mnt), with the user
    /// namespaces a script passes through:
    ///
    /// - host root mode (`userns`: the sandbox's user namespace, not the init's): joined last,
    ///   after which the script becomes the namespace's root;
    /// - unprivileged mode (`intermediate`: the host pid of the process that made the user
    ///   namespace owning the others): that namespace first, for the capabilities to join the
    ///   rest, and the init's own last: the nested one of [`lock_mounts`], which owns its mount
    ///   namespace.
    pub fn open(
        init_pid: libc::pid_t,
        userns: Option<&OwnedFd>,
        intermediate: Option<libc::pid_t>,
    ) -> io::Result<Self> {
        let open = |pid: libc::pid_t, name: &str| -> io::Result<OwnedFd> {
            Ok(OwnedFd::from(std::fs::File::open(format!("/proc/{pid}/ns/{name}"))?))
        };
        let mut fds = Vec::new();
        if let Some(pid) = intermediate {
            fds.push((open(pid, "user")?, libc::CLONE_NEWUSER));
        }
        for (name, flag) in [
            ("ipc", libc::CLONE_NEWIPC),
            ("uts", libc::CLONE_NEWUTS),
            ("net", libc::CLONE_NEWNET),
            ("pid", libc::CLONE_NEWPID),
            ("mnt", libc::CLONE_NEWNS),
        ] {
            fds.push((open(init_pid, name)?, flag));
        }
        if let Some(u) = userns {
            fds.push((u.try_clone()?, libc::CLONE_NEWUSER));
        }
        if intermediate.is_some() {
            fds.push((open(init_pid, "user")?, libc::CLONE_NEWUSER));
        }
        Ok(Self { fds })
    }

    fn joins_user(&self) -> bool {
        self.fds.iter().any(|(_, flag)| *flag == libc::CLONE_NEWUSER)
    }
}

/// What `fd` holds now, read without waiting for its writers to close it (a script's process
/// that a process inside stopped before its exec holds the report pipe open for good).
pub fn read_ready(fd: RawFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    while poll(fd, libc::POLLIN, 0).is_ok_and(|ev| ev & libc::POLLIN != 0) {
        match read(fd, &mut buf) {
            Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    out
}

/// Pipes of a script process: its stdin (read end), combined stdout/stderr (write end), and
/// a report pipe for set-up failures.
pub struct ScriptFds {
    /// Becomes fd 0.
    pub stdin_r: RawFd,
    /// Becomes fds 1 and 2.
    pub out_w: RawFd,
    /// Set-up failures `(step, errno)`.
    pub report_w: RawFd,
}

/// Forks a process that joins the sandbox's namespaces and runs `exec` there as a separate
/// process (not in the shell). The returned pid exits with the script's exit code (or 128 +
/// signal).
pub fn spawn_in_sandbox(
    ns: &NsFds,
    cgroup_procs: &[OwnedFd],
    rlimits: &[(libc::__rlimit_resource_t, libc::rlim_t)],
    exec: &Exec,
    fds: &ScriptFds,
) -> io::Result<libc::pid_t> {
    // SAFETY: the child only makes async-signal-safe syscalls on pre-built data.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        return Ok(pid);
    }
    // SAFETY: as above.
    unsafe {
        // No controlling terminal (see `spawn_sandbox`); the script's process below makes a
        // session of its own again.
        libc::setsid();
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // Not dumpable until the exec (which resets it): the process below enters the
        // sandbox's PID namespace as a copy of edgeact (its memory, its descriptors until
        // `close_fds_except`), and root inside, holding CAP_SYS_PTRACE in the sandbox's user
        // namespace, could otherwise attach to it (ptrace, /proc/PID/mem, pidfd_getfd) before
        // the credential change below makes it non-dumpable. The child inherits this.
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
        join_cgroups(cgroup_procs);
        for (i, (fd, flag)) in ns.fds.iter().enumerate() {
            if libc::setns(fd.as_raw_fd(), *flag) != 0 {
                child_fail(fds.report_w, 2_000_000 + i as u32);
            }
        }
        let child = libc::fork();
        if child < 0 {
            child_fail(fds.report_w, STEP_FORK);
        }
        if child > 0 {
            // Hold no copy of the script's pipes (the write end of its stdin above all, or it
            // would never see EOF).
            close_fds_except(&[]);
            let mut st = 0;
            while libc::waitpid(child, &mut st, 0) < 0 && errno() == libc::EINTR {}
            let code = if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else if libc::WIFSIGNALED(st) {
                128 + libc::WTERMSIG(st)
            } else {
                255
            };
            libc::_exit(code);
        }
        // At once (a process inside may stop this one by its predictable pid: it must still
        // die with its parent), and again after the credential change, which clears it.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if (ns.joins_user() && !become_namespace_root()) || !leave_session_keyring() {
            child_fail(fds.report_w, STEP_USERNS);
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        reset_signals();
        if libc::setsid() < 0
            || libc::dup2(fds.stdin_r, 0) < 0
            || libc::dup2(fds.out_w, 1) < 0
            || libc::dup2(fds.out_w, 2) < 0
            || libc::chdir(c"/".as_ptr()) != 0
            || !apply_rlimits(rlimits)
        {
            child_fail(fds.report_w, STEP_SHELL);
        }
        let report = fds.report_w;
        close_fds_except(&[report]);
        libc::execve(exec.path.as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr());
        child_fail(report, STEP_SHELL)
    }
}

/// A `CString` from a path or text; interior NUL bytes are an error.
pub fn cstr(s: impl AsRef<[u8]>) -> io::Result<CString> {
    CString::new(s.as_ref().to_vec())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path or text contains a NUL byte"))
}

/// Human-readable text of an errno.
pub fn errno_text(e: i32) -> String {
    io::Error::from_raw_os_error(e).to_string()
}
