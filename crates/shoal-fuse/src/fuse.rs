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
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyStatfs,
    Request, SessionACL,
};

use crate::fs::{Attr, Blocks, FsError, MountFs, ROOT_INO};

/// FUSE threads serving the kernel. Reads run on tokio, so these threads
/// only parse requests and answer metadata; a few keep the queue short.
const FUSE_THREADS: usize = 4;
/// The mount root lists names that can change: short TTL.
const ROOT_TTL: Duration = Duration::from_secs(1);

struct Adapter<B> {
    fs: Arc<MountFs<B>>,
    rt: tokio::runtime::Handle,
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno)
}

impl<B: Blocks> Adapter<B> {
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
            kind: if a.is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if a.is_dir { 0o555 } else { 0o444 },
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
        match self.fs.getattr(ino.0) {
            // Content never changes: let the kernel keep its page cache.
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
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

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.getattr(ino.0) {
            Ok(a) if a.is_dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::from_i32(libc::ENOTDIR)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = match self.fs.readdir(ino.0) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        let parent = self.fs.parent(ino.0);
        let all = [(ino.0, ".".to_string(), true), (parent, "..".to_string(), true)]
            .into_iter()
            .chain(entries.into_iter().map(|e| (e.ino, e.name, e.is_dir)));
        for (i, (child, name, is_dir)) in all.enumerate().skip(offset as usize) {
            let kind = if is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
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
    let session = fuser::spawn_mount(Adapter { fs, rt }, dir, &cfg)?;
    Ok(MountHandle {
        dir: dir.to_path_buf(),
        session: Some(session),
    })
}
