//! Helpers for the root tests that run `podplane run` against Linux in network
//! namespaces the test creates: capability checks, `ip`, a cleanup guard, bounded
//! waits, and TCP inside a namespace (a thread that joins it with `setns`).

#![allow(dead_code)] // each test file uses its own subset
#![allow(unreachable_pub)] // shared by several test crates
#![allow(clippy::disallowed_methods)] // real processes on real time: waits are bounded by the wall clock

pub mod kernel;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Why the root tests cannot run here, if they cannot.
pub fn can_run(tools: &[&str]) -> Result<(), String> {
    let uid = Command::new("id").arg("-u").output().map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not root".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err("no /dev/net/tun".into());
    }
    for tool in tools {
        // `--version` first: some tools read `-V` as an option that starts work
        // (`tshark -V` captures), and every tool here answers one of the two.
        let answers = |flag: &str| Command::new(tool).arg(flag).stdin(std::process::Stdio::null()).output().is_ok();
        if !answers("--version") && !answers("-V") {
            return Err(format!("no `{tool}` command"));
        }
    }
    Ok(())
}

/// Fail under `CI=true`, say SKIPPED otherwise.
pub fn skip(test: &str, why: &str) {
    assert!(std::env::var("CI").as_deref() != Ok("true"), "root test {test} cannot run under CI: {why}");
    eprintln!("SKIPPED {test}: {why}");
}

/// Run `ip` with `args`; panics with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Run a command inside namespace `ns`; panics on failure.
pub fn in_ns(ns: &str, cmd: &[&str]) {
    let out = Command::new("ip").args(["netns", "exec", ns]).args(cmd).output().unwrap();
    assert!(out.status.success(), "{ns}: {cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Deletes the namespaces and stops the child processes, whatever happens.
pub struct Guard {
    pub netns: Vec<String>,
    pub children: Vec<Child>,
    pub dir: PathBuf,
}

impl Guard {
    /// A guard over scratch directory `dir` (created).
    pub fn new(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        Guard { netns: Vec::new(), children: Vec::new(), dir }
    }

    /// Create namespace `name` (removed on drop).
    pub fn netns(&mut self, name: &str) {
        ip(&["netns", "add", name]);
        self.netns.push(name.to_string());
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value of the first Prometheus line of `text` that starts with `line_start`
/// (0 when there is none).
pub fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Wait (at most `secs`) until `f` holds.
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `ping -c 3` from namespace `ns`: success and the output.
pub fn ping(ns: &str, dst: &str) -> (bool, String) {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "1", dst])
        .output()
        .unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned())
}

/// True when network device `dev` exists in the root namespace.
pub fn link_exists(dev: &str) -> bool {
    Command::new("ip").args(["link", "show", dev]).output().is_ok_and(|o| o.status.success())
}

/// Run `f` on a thread that has joined namespace `ns` (its sockets live there).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on this thread only, with a namespace file descriptor we own.
        let rc = unsafe { libc::setns(std::os::unix::io::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// The byte at position `i` of a test transfer (a pattern that catches reordering).
pub fn pattern(i: usize) -> u8 {
    u8::try_from((i * 7 + i / 251) % 256).unwrap_or(0)
}

/// Start `podplane run --config node ARGS --metrics 127.0.0.1:<free port>`, its
/// stderr in `dir/run.log`, the process held by `g`, and wait (10 s at most) until
/// the TAPs `taps` exist. Returns the metrics address and the log's path.
pub fn start_run(g: &mut Guard, node: &Path, args: &[&str], taps: &[&str]) -> (String, PathBuf) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let log = g.dir.join("run.log");
    let child = Command::new(env!("CARGO_BIN_EXE_podplane"))
        .args(["run", "--config"])
        .arg(node)
        .args(args)
        .args(["--metrics", &addr])
        .stderr(std::process::Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    g.children.push(child);
    let created = wait_for(10, || taps.iter().all(|t| link_exists(t)));
    assert!(created, "TAPs not created:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    (addr, log)
}

/// Serve one TCP connection on `addr` inside `ns`: read it to the end, return how
/// many bytes matched [`pattern`] before the first mismatch and the total.
pub fn tcp_sink(ns: &str, addr: SocketAddr) -> std::thread::JoinHandle<(usize, usize)> {
    in_netns(ns, move || {
        let l = TcpListener::bind(addr).unwrap();
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let (mut total, mut good, mut buf) = (0usize, None, vec![0u8; 65536]);
        loop {
            let n = c.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            for (k, b) in buf[..n].iter().enumerate() {
                if good.is_none() && *b != pattern(total + k) {
                    good = Some(total + k);
                }
            }
            total += n;
        }
        (good.unwrap_or(total), total)
    })
}

/// Send `len` pattern bytes to `addr` from inside `ns` (retrying the connect for a
/// few seconds while routes and neighbours settle).
pub fn tcp_send(ns: &str, addr: SocketAddr, len: usize) -> std::thread::JoinHandle<std::io::Result<()>> {
    in_netns(ns, move || {
        let mut c = None;
        wait_for(10, || {
            c = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok();
            c.is_some()
        });
        let mut c = c.ok_or_else(|| std::io::Error::other(format!("no connection to {addr}")))?;
        let data: Vec<u8> = (0..len).map(pattern).collect();
        c.write_all(&data)?;
        c.shutdown(std::net::Shutdown::Write)
    })
}

/// `n` TCP flows at once from `from_ns` to ports `first_port..` of `ip` in `to_ns`,
/// 256 KiB each: every send must succeed and every sink get every byte in order.
/// `context` is printed with a failure (logs, counters).
pub fn tcp_flows(from_ns: &str, to_ns: &str, ip: &str, first_port: u16, n: u16, context: &dyn Fn() -> String) {
    const LEN: usize = 256 << 10;
    let flows: Vec<_> = (0..n)
        .map(|k| {
            let dst: SocketAddr = format!("{ip}:{}", first_port + k).parse().unwrap();
            (tcp_sink(to_ns, dst), dst)
        })
        .collect();
    let senders: Vec<_> = flows.iter().map(|(_, dst)| (tcp_send(from_ns, *dst, LEN), *dst)).collect();
    for (s, dst) in senders {
        let sent = s.join().unwrap();
        assert!(sent.is_ok(), "{dst}: {sent:?}\n{}", context());
    }
    for (sink, dst) in flows {
        assert_eq!(sink.join().unwrap(), (LEN, LEN), "{dst}");
    }
}
