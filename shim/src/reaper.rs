//! The one place that calls waitpid. The shim is a child subreaper: container inits and
//! exec'd processes are reparented to it when the runtime exits, and it also runs short
//! runtime commands. If anything else waited (std's `Child::wait`, a second reaper
//! thread) one side would steal the other's exit status, so every exit comes through
//! here and is handed to whoever subscribed to that pid.
//!
//! An exit may be reaped before anyone subscribes (a container that exits before the
//! shim has read its pid file); such exits are kept, a bounded number, for `watch`.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::process::Command;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    pub pid: i32,
    /// The exit code, or 128 + signal number for a process killed by a signal.
    pub status: i32,
    pub at: SystemTime,
}

pub type Callback = Box<dyn FnOnce(Exit) + Send>;

enum Sub {
    Command(SyncSender<Exit>),
    Process(Callback),
}

/// Unclaimed exits kept for late subscribers; orphans the shim adopted but never knew
/// about also end up here, so the queue must be bounded.
const MAX_UNCLAIMED: usize = 64;

#[derive(Default)]
pub struct Reaper {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    subs: HashMap<i32, Sub>,
    unclaimed: VecDeque<Exit>,
}

impl Reaper {
    /// Spawns `cmd` and returns its pid and a receiver for its exit. The lock is held
    /// across the spawn so the child cannot be reaped before it is subscribed (and so
    /// std's own wait after a failed exec finds its child).
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(i32, Receiver<Exit>)> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        let (tx, rx) = sync_channel(1);
        g.subs.insert(pid, Sub::Command(tx));
        Ok((pid, rx))
    }

    /// Calls `f` when `pid` exits, or now if it already has.
    pub fn watch(&self, pid: i32, f: Callback) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = g.unclaimed.iter().position(|e| e.pid == pid) {
            let e = g.unclaimed.remove(i).expect("index is valid");
            drop(g);
            f(e);
            return;
        }
        g.subs.insert(pid, Sub::Process(f));
    }

    /// Reaps every child that has exited and delivers the exits. Subscribers run on the
    /// caller's thread, outside the lock.
    pub fn reap(&self) {
        let mut ready = Vec::new();
        {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let mut st = 0;
                let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                let status = if libc::WIFEXITED(st) {
                    libc::WEXITSTATUS(st)
                } else if libc::WIFSIGNALED(st) {
                    128 + libc::WTERMSIG(st)
                } else {
                    continue;
                };
                let exit = Exit {
                    pid,
                    status,
                    at: SystemTime::now(),
                };
                match g.subs.remove(&pid) {
                    Some(s) => ready.push((s, exit)),
                    None => {
                        if g.unclaimed.len() == MAX_UNCLAIMED {
                            g.unclaimed.pop_front();
                        }
                        g.unclaimed.push_back(exit);
                    }
                }
            }
        }
        for (s, e) in ready {
            match s {
                Sub::Command(tx) => {
                    let _ = tx.send(e);
                }
                Sub::Process(f) => f(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// Stands in for the daemon's main loop: reaps until told to stop.
    fn reaping(r: &Arc<Reaper>) -> Arc<std::sync::atomic::AtomicBool> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, s) = (r.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                r.reap();
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        stop
    }

    #[test]
    fn exits_reach_their_subscribers_also_when_reaped_first() {
        let r = Arc::new(Reaper::default());
        let stop = reaping(&r);
        let (_, rx) = r.spawn(Command::new("sh").args(["-c", "exit 3"])).unwrap();
        assert_eq!(rx.recv().unwrap().status, 3);
        let (_, rx) = r
            .spawn(Command::new("sh").args(["-c", "kill -9 $$"]))
            .unwrap();
        assert_eq!(rx.recv().unwrap().status, 137);

        // A process nobody subscribed to yet (a container init whose pid file we have
        // not read): its exit waits for `watch`.
        // Not waited for here on purpose: the reaper collects it.
        #[allow(clippy::zombie_processes)]
        let child = Command::new("sh").args(["-c", "exit 5"]).spawn().unwrap();
        let pid = child.id() as i32;
        std::thread::sleep(Duration::from_millis(200));
        let (tx, got) = sync_channel(1);
        r.watch(pid, Box::new(move |e| tx.send(e).unwrap()));
        let e = got.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!((e.pid, e.status), (pid, 5));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
