//! Network namespaces for multi-process tests, so that one broker can be cut off from the
//! other brokers while clients still reach it (a network partition, Jepsen's `partition`
//! nemesis), which one 127.0.0.1 cannot do.
//!
//! A [`Fabric`] is a Linux bridge in the test's own namespace with address `.254` of a /24
//! from 198.18.0.0/15 (the benchmarking range, never routed), and one network namespace per
//! node joined to it by a veth pair, the node's address being `.<node + 1>`. Clients in the
//! test process reach every node through the bridge; nodes reach each other through it too.
//! [`Fabric::isolate`] adds blackhole routes (`ip route add blackhole ADDR/32`) in the
//! node's namespace for every other node and in every other node's namespace for it:
//! packets between them are dropped silently (new connections fail, open ones stall), while
//! the bridge address (the clients) stays reachable. [`Fabric::cut`] does the same for one
//! pair of nodes only (a partial partition). [`Fabric::heal`] removes them.
//!
//! Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and the `ip` tool; [`Fabric::create`] fails
//! otherwise and the caller reports the test as skipped. Names carry the test process id and
//! a counter (`fsh<pid>x<n>...`), so parallel tests do not collide; dropping the fabric
//! deletes the namespaces (and with them the veth pairs) and the bridge. A test process
//! killed with SIGKILL leaves them behind: `ip netns list | grep ^fsh` finds them.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Fabrics made by this process so far (part of each one's names and subnet).
static FABRICS: AtomicU32 = AtomicU32::new(0);

/// A bridge and one network namespace per node; see the module doc.
pub struct Fabric {
    /// Name prefix of the bridge, namespaces and veths.
    id: String,
    /// First three octets of the /24, e.g. `198.18.7`.
    subnet: String,
    nodes: usize,
    /// (from, to) node pairs currently blackholed.
    cut: BTreeSet<(usize, usize)>,
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Fabric {
    /// Creates the bridge and `nodes` namespaces (deleted again if any step fails).
    pub fn create(nodes: usize) -> io::Result<Fabric> {
        assert!((1..=9).contains(&nodes), "1..=9 nodes per fabric");
        let n = FABRICS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names have at most 15 bytes: "fsh" + 8 hex digits + "v<node>h".
        let tag = (pid.wrapping_mul(2_654_435_761) ^ n.wrapping_mul(40_503)) & 0x1ff;
        let fabric = Fabric {
            id: format!("fsh{:05x}{:03x}", pid & 0xfffff, n & 0xfff),
            subnet: format!("198.{}.{}", 18 + (tag >> 8), tag & 0xff),
            nodes,
            cut: BTreeSet::new(),
        };
        // On failure `fabric` is dropped, which deletes whatever was made.
        fabric.build()?;
        Ok(fabric)
    }

    fn bridge(&self) -> String {
        format!("{}b", self.id)
    }

    fn build(&self) -> io::Result<()> {
        let bridge = self.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.254/24", self.subnet),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for node in 0..self.nodes {
            let ns = self.namespace(node);
            let (outer, inner) = (
                format!("{}v{node}h", self.id),
                format!("{}v{node}n", self.id),
            );
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &outer, "master", &bridge])?;
            ip(&["link", "set", &outer, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.host(node)),
                "dev",
                &inner,
            ])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
        }
        Ok(())
    }

    /// `node`'s network namespace name.
    pub fn namespace(&self, node: usize) -> String {
        format!("{}n{node}", self.id)
    }

    /// `node`'s address (in its namespace, reachable from the test through the bridge).
    pub fn host(&self, node: usize) -> String {
        format!("{}.{}", self.subnet, node + 1)
    }

    /// The namespace file `setns` takes for `node`.
    pub fn namespace_path(&self, node: usize) -> PathBuf {
        PathBuf::from("/run/netns").join(self.namespace(node))
    }

    /// Makes `cmd` run in `node`'s namespace (setns between fork and exec).
    pub fn enter(&self, node: usize, cmd: &mut Command) -> io::Result<()> {
        let file = File::open(self.namespace_path(node))?;
        // SAFETY: setns(2) is async-signal-safe; `file` stays open (moved into the closure)
        // until the closure is dropped with `cmd`, after the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(())
    }

    /// Drops every packet between `node` and the other nodes, both ways (clients still
    /// reach it).
    pub fn isolate(&mut self, node: usize) -> io::Result<()> {
        for other in (0..self.nodes).filter(|&o| o != node) {
            self.cut_one_way(node, other)?;
            self.cut_one_way(other, node)?;
        }
        Ok(())
    }

    /// Drops every packet between nodes `a` and `b`, both ways (each still reaches the
    /// others and the clients).
    pub fn cut(&mut self, a: usize, b: usize) -> io::Result<()> {
        self.cut_one_way(a, b)?;
        self.cut_one_way(b, a)
    }

    fn cut_one_way(&mut self, from: usize, to: usize) -> io::Result<()> {
        if self.cut.insert((from, to)) {
            ip(&[
                "-n",
                &self.namespace(from),
                "route",
                "add",
                "blackhole",
                &format!("{}/32", self.host(to)),
            ])?;
        }
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> io::Result<()> {
        for (from, to) in std::mem::take(&mut self.cut) {
            ip(&[
                "-n",
                &self.namespace(from),
                "route",
                "del",
                "blackhole",
                &format!("{}/32", self.host(to)),
            ])?;
        }
        Ok(())
    }

    /// Whether any cut is in place.
    pub fn is_cut(&self) -> bool {
        !self.cut.is_empty()
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for node in 0..self.nodes {
            let _ = ip(&["netns", "delete", &self.namespace(node)]);
        }
        let _ = ip(&["link", "delete", &self.bridge()]);
    }
}
