//! The fuser adapter: translates kernel requests to [`MountFs`] calls.
//!
//! Metadata that is already in memory is answered on the FUSE thread;
//! anything that may wait on the network (first lookup of a dataset, every
//! read) moves the reply into a tokio task. Several FUSE threads (one
//! cloned /dev/fuse fd each) serve the kernel.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, Request, SessionACL,
};

use crate::fs::{Attr, Blocks, FsError, MountFs, ROOT_INO};

/// FUSE threads serving the kernel. Reads run on tokio, so these threads
/// only parse requests and answer metadata; a few keep the queue short.
const FUSE_THREADS: usize = 4;
/// The mount root lists names that can change: short TTL.
const ROOT_TTL: Duration = Duration::from_secs(1);
/// Largest read the kernel may send: one block, so a sequential reader
/// costs one request per block instead of eight.
const MAX_READ: u32 = 1 << 20;
/// Entries prepared per readdir(plus) call; the reply buffer takes what
/// fits and the kernel asks again from the next offset.
const DIR_PAGE: usize = 512;

struct Adapter<B> {
    fs: Arc<MountFs<B>>,
    rt: tokio::runtime::Handle,
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno)
}

impl<B: Blocks> Adapter<B> {
    /// One page of a directory from `offset`, with "." and ".." first:
    /// (next offset, entry, attributes). `count`: for readdirplus, each
    /// entry but the dots is a lookup reference.
    fn dir_page(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        count: bool,
    ) -> Result<Vec<(u64, crate::fs::DirEntry, Attr)>, FsError> {
        let mut out = Vec::new();
        let dots = [(ino, "."), (self.fs.parent(ino), "..")];
        for (i, (d, name)) in dots.iter().enumerate().skip(offset as usize) {
            let a = self.fs.getattr(*d)?;
            out.push((
                (i + 1) as u64,
                crate::fs::DirEntry {
                    ino: *d,
                    name: name.to_string(),
                    is_dir: true,
                    is_link: false,
                },
                a,
            ));
        }
        let skip = (offset as usize).saturating_sub(2);
        let page = if ino == ROOT_INO {
            self.fs
                .root_listing(fh)?
                .iter()
                .skip(skip)
                .take(DIR_PAGE)
                .map(|e| {
                    let a = Attr {
                        ino: e.ino,
                        size: 0,
                        is_dir: e.is_dir,
                        is_link: e.is_link,
                    };
                    (e.clone(), a)
                })
                .collect()
        } else {
            self.fs.readdir_page(ino, skip, DIR_PAGE, count)?
        };
        for (i, (e, a)) in page.into_iter().enumerate() {
            out.push(((skip + i + 3) as u64, e, a));
        }
        Ok(out)
    }

    fn file_attr(&self, a: Attr) -> FileAttr {
        let t = self.fs.started;
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: if a.is_link {
                FileType::Symlink
            } else if a.is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if a.is_link {
                0o777
            } else if a.is_dir {
                0o555
            } else {
                0o444
            },
            nlink: if a.is_dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 1 << 20,
            flags: 0,
        }
    }

    fn ttl(&self, ino: u64) -> Duration {
        if ino == ROOT_INO {
            ROOT_TTL
        } else {
            self.fs.options().ttl
        }
    }
}

impl<B: Blocks> Filesystem for Adapter<B> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Bigger requests (max_pages follows max_write/max_readahead).
        let _ = config.set_max_write(MAX_READ);
        if config.set_max_readahead(MAX_READ).is_err() {
            tracing::debug!("kernel caps readahead below 1 MiB");
        }
        for cap in [
            InitFlags::FUSE_MAX_PAGES,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_DO_READDIRPLUS,
        ] {
            if config.add_capabilities(cap).is_err() {
                tracing::debug!(?cap, "kernel lacks FUSE capability");
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        let ttl = self
            .ttl(parent.0)
            .max(self.fs.options().ttl.min(Duration::from_secs(60)));
        if let Some(r) = self.fs.lookup_cached(parent.0, name) {
            return match r {
                Ok(a) => reply.entry(&ttl, &self.file_attr(a), Generation(0)),
                Err(e) => reply.error(errno(&e)),
            };
        }
        let fs = self.fs.clone();
        let name = name.to_string();
        let this = Adapter {
            fs: self.fs.clone(),
            rt: self.rt.clone(),
        };
        self.rt.spawn(async move {
            match fs.lookup(parent.0, &name).await {
                Ok(a) => reply.entry(&ttl, &this.file_attr(a), Generation(0)),
                Err(e) => {
                    tracing::info!(name = %name, error = %e, "mount lookup failed");
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&self.ttl(ino.0), &self.file_attr(a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & (libc::O_WRONLY | libc::O_RDWR) != 0 {
            return reply.error(Errno::from_i32(libc::EROFS));
        }
        match self.fs.open(ino.0) {
            // Content never changes: let the kernel keep its page cache.
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // Blocks held here: answered on this thread (no hop through the
        // runtime and back). Anything else waits on a tokio task.
        if let Some(r) = self.fs.read_now(ino.0, offset, size) {
            return match r {
                Ok(data) => reply.data(&data),
                Err(e) => {
                    tracing::warn!(ino = ino.0, offset, error = %e, "mount read failed");
                    reply.error(errno(&e))
                }
            };
        }
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.read(ino.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => {
                    tracing::warn!(ino = ino.0, offset, error = %e, "mount read failed");
                    reply.error(errno(&e))
                }
            }
        });
    }

    /// Opening a directory lists it (its children built from the
    /// manifest pages under its prefix, possibly fetched from peers).
    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            if ino.0 == ROOT_INO {
                return match fs.open_root() {
                    Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                    Err(e) => reply.error(errno(&e)),
                };
            }
            match fs.list(ino.0).await {
                Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
                Err(e) => {
                    tracing::info!(ino = ino.0, error = %e, "mount opendir failed");
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn releasedir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        if ino.0 == ROOT_INO {
            self.fs.close_root(fh.0);
        }
        reply.ok();
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = match self.dir_page(ino.0, fh.0, offset, false) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        for (off, e, _) in entries {
            let kind = if e.is_link {
                FileType::Symlink
            } else if e.is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(INodeNo(e.ino), off, kind, &e.name) {
                break;
            }
        }
        reply.ok();
    }

    /// Entries with their attributes, so `ls -l` and tree walks need no
    /// lookup round trip per file.
    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        if ino.0 == ROOT_INO {
            // Root entries are datasets that may not be loaded yet: load
            // them (possibly over the network) off the FUSE thread.
            let this = Adapter {
                fs: self.fs.clone(),
                rt: self.rt.clone(),
            };
            self.rt.spawn(async move {
                let names = match this.fs.root_listing(fh.0) {
                    Ok(n) => n,
                    Err(e) => return reply.error(errno(&e)),
                };
                for (i, e) in names.iter().enumerate().skip(offset as usize) {
                    let (ino, attr) = match this.fs.lookup(ROOT_INO, &e.name).await {
                        Ok(a) => (a.ino, this.file_attr(a)),
                        // Unloadable: listed without attributes (nodeid 0).
                        Err(_) => (
                            0,
                            this.file_attr(Attr {
                                ino: 0,
                                size: 0,
                                is_dir: true,
                                is_link: false,
                            }),
                        ),
                    };
                    if reply.add(INodeNo(ino), (i + 1) as u64, &e.name, &ROOT_TTL, &attr, Generation(0)) {
                        // Not sent: the lookup's reference is not the kernel's.
                        this.fs.forget(ino, 1);
                        break;
                    }
                }
                reply.ok();
            });
            return;
        }
        let entries = match self.dir_page(ino.0, fh.0, offset, true) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        let ttl = self.fs.options().ttl;
        let mut unsent = entries.into_iter();
        for (off, e, a) in unsent.by_ref() {
            if reply.add(INodeNo(e.ino), off, &e.name, &ttl, &self.file_attr(a), Generation(0)) {
                // Not sent: its reference (and every later one) is not the kernel's.
                if e.name != "." && e.name != ".." {
                    self.fs.forget(e.ino, 1);
                }
                break;
            }
        }
        for (_, e, _) in unsent.filter(|(_, e, _)| e.name != "." && e.name != "..") {
            self.fs.forget(e.ino, 1);
        }
        reply.ok();
    }

    /// The kernel dropped `nlookup` references to `ino`: a dataset
    /// directory it no longer references gives its tables back.
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    /// A dataset name's target: its current root CID, read on every path
    /// walk through it (symlink targets are not cached), so the name
    /// follows new versions.
    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 1 << 20, 1024, 1 << 20);
    }
}

/// A live mount. Dropping it unmounts.
pub struct MountHandle {
    pub dir: PathBuf,
    session: Option<BackgroundSession>,
}

impl MountHandle {
    pub fn unmount(mut self) -> std::io::Result<()> {
        match self.session.take() {
            Some(s) => s.umount_and_join(),
            None => Ok(()),
        }
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if let Err(e) = s.umount_and_join() {
                tracing::warn!(dir = %self.dir.display(), error = %e, "unmount failed");
            }
        }
    }
}

/// The kernel keeps a FUSE mount's readahead at the default 128 KiB
/// whatever `max_readahead` the daemon offers (it only ever lowers it). At
/// 128 KiB a sequential reader costs eight requests per 1 MiB block, and
/// two threads answering neighbouring requests may both read and verify
/// the same block before either caches it (measured: 6,444 replies and
/// 1,200 block reads for 1,040 blocks; at 1 MiB, 3,625 and 1,026). Where
/// the daemon may (root), it raises this mount's readahead to [`MAX_READ`]
/// through sysfs; elsewhere the mount works as before.
fn raise_readahead(dir: &Path) {
    let Some(dev) = mount_device(dir) else {
        tracing::debug!(dir = %dir.display(), "mount not found in /proc/self/mountinfo");
        return;
    };
    let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&path, (MAX_READ / 1024).to_string()) {
        Ok(()) => tracing::debug!(%path, kib = MAX_READ / 1024, "mount readahead raised"),
        Err(e) => tracing::debug!(%path, error = %e, "mount readahead left at the kernel default"),
    }
}

/// The `major:minor` of the filesystem mounted last on `dir`, from
/// /proc/self/mountinfo (no stat through the mount itself).
fn mount_device(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .rev()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((*f.get(2)?, unescape_mount_path(f.get(4)?)))
        })
        .find(|(_, at)| Path::new(at) == dir)
        .map(|(dev, _)| dev.to_string())
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|o| b[i] == b'\\' && o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(o) => {
                out.push(o.iter().fold(0u8, |v, c| v.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts `fs` read-only on `dir` (created if missing).
pub fn mount<B: Blocks>(fs: Arc<MountFs<B>>, dir: &Path, rt: tokio::runtime::Handle) -> std::io::Result<MountHandle> {
    std::fs::create_dir_all(dir)?;
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("shoal".into()),
        MountOption::Subtype("shoal".into()),
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
    ];
    cfg.acl = SessionACL::All;
    cfg.n_threads = Some(FUSE_THREADS);
    cfg.clone_fd = true;
    let session = fuser::spawn_mount(Adapter { fs: fs.clone(), rt }, dir, &cfg)?;
    raise_readahead(dir);
    // Invalidations go to the kernel from one thread of their own (the
    // kernel may wait on a request we are answering); one batch waits at
    // most, later ones are dropped while it does (the next listing past
    // the budget asks again).
    let notifier = session.notifier();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(u64, String)>>(1);
    std::thread::Builder::new()
        .name("shoal-fuse-inval".into())
        .spawn(move || {
            for batch in rx {
                for (parent, name) in batch {
                    // ENOENT: the kernel had already dropped it.
                    let _ = notifier.inval_entry(INodeNo(parent), OsStr::new(&name));
                }
            }
        })?;
    fs.set_invalidate(Box::new(move |batch| {
        let _ = tx.try_send(batch);
    }));
    Ok(MountHandle {
        dir: dir.to_path_buf(),
        session: Some(session),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_unescape() {
        assert_eq!(unescape_mount_path("/mnt/a\\040b\\134c"), "/mnt/a b\\c");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        // A backslash not followed by three octal digits stays as it is.
        assert_eq!(unescape_mount_path("/x\\9y\\04"), "/x\\9y\\04");
    }

    #[test]
    fn the_device_of_a_mount_point_is_found() {
        let dev = mount_device(Path::new("/proc")).expect("/proc is a mount point");
        let (major, minor) = dev.split_once(':').expect("major:minor");
        assert!(major.parse::<u32>().is_ok() && minor.parse::<u32>().is_ok(), "{dev}");
        assert_eq!(mount_device(Path::new("/proc/self")), None, "not a mount point");
    }
}
